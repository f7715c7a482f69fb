// C ABI between tbrm-dist (Rust) and libtorch's c10d. Shared by bridge.cpp and bridge_nccl.cpp;
// src/ffi.rs mirrors it by hand.
//
// Conventions (why: nothing may unwind across the FFI boundary, and Rust must own no C++
// object it cannot free):
//   - every fallible function returns NULL on success or a malloc'd, NUL-terminated error
//     message that the caller frees with tbrm_dist_free_string;
//   - tensors are the `at::Tensor*` behind torch-sys's `*mut C_tensor` (tch's Tensor::as_ptr);
//     the bridge never takes ownership of them;
//   - a process group is an opaque TbrmDistPg*, freed with tbrm_dist_pg_free.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
#include <chrono>

#include <c10/util/intrusive_ptr.h>

namespace c10d {
class Backend;
class Store;
} // namespace c10d

// Implemented in bridge_nccl.cpp when NCCL support is compiled in (TBRM_DIST_HAVE_NCCL);
// throws std::exception on failure.
c10::intrusive_ptr<c10d::Backend> tbrm_dist_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    int device_index,
    std::chrono::milliseconds timeout);

extern "C" {
#endif

typedef struct TbrmDistPg TbrmDistPg;

enum { TBRM_DIST_GLOO = 0, TBRM_DIST_NCCL = 1 };
enum { TBRM_DIST_SUM = 0, TBRM_DIST_MAX = 1 };

void tbrm_dist_free_string(char* s);
int tbrm_dist_nccl_compiled(void);

char* tbrm_dist_pg_new(
    int backend,
    int rank,
    int world_size,
    int device_index,
    const char* master_addr,
    uint16_t master_port,
    int64_t timeout_ms,
    TbrmDistPg** out);
void tbrm_dist_pg_free(TbrmDistPg* pg);

char* tbrm_dist_all_reduce(TbrmDistPg* pg, void* tensor, int op);
char* tbrm_dist_broadcast(TbrmDistPg* pg, void* tensor, int root);
char* tbrm_dist_all_gather_into(TbrmDistPg* pg, void* output, void* input);
char* tbrm_dist_reduce_scatter(TbrmDistPg* pg, void* output, void* input, int op);
char* tbrm_dist_barrier(TbrmDistPg* pg);

#ifdef __cplusplus
}
#endif
