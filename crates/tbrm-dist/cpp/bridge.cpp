// tbrm-dist bridge: libtorch c10d process groups (TCPStore + ProcessGroupGloo, optionally
// ProcessGroupNCCL from bridge_nccl.cpp) behind the C ABI of bridge.h.
//
// Every entry point catches all C++ exceptions and returns them as a malloc'd string, because
// unwinding through Rust frames is undefined behaviour. Every collective is waited on with the
// group's timeout, so a dead or hung peer turns into an error string instead of a hang.

// ProcessGroupGloo.hpp is empty unless this is defined (torch's own build defines it globally).
#define USE_C10D_GLOO 1

#include "bridge.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

struct TbrmDistPg {
  // Declared before `backend` so it is destroyed after it: the backend may still talk to the
  // store while shutting down.
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int backend_kind = TBRM_DIST_GLOO;
  int device_index = -1;
  std::chrono::milliseconds timeout{0};
};

namespace {

char* dup_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `f`, converting any exception into an owned error string. c10::Error's what() carries a
// C++ backtrace of the throw site that means nothing to a Rust caller, so the short form is
// used.
template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_string(e.what());
  } catch (...) {
    return dup_string("unknown C++ exception");
  }
}

at::Tensor& tensor_ref(void* ptr) {
  TORCH_CHECK(ptr != nullptr, "null tensor pointer");
  return *static_cast<at::Tensor*>(ptr);
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case TBRM_DIST_SUM:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case TBRM_DIST_MAX:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    default:
      TORCH_CHECK(false, "unknown reduce op ", op);
  }
}

// Blocks until `work` finishes or the group's timeout passes. Work::wait throws on timeout
// ("Operation timed out!") and rethrows the collective's own failure (e.g. Gloo's "Connection
// closed by peer"), which `guarded` turns into the error string.
void wait_for(const TbrmDistPg* pg, const c10::intrusive_ptr<c10d::Work>& work) {
  TORCH_CHECK(work, "backend returned no work handle");
  work->wait(pg->timeout);
}

TbrmDistPg* checked(TbrmDistPg* pg) {
  TORCH_CHECK(pg != nullptr, "null process group");
  return pg;
}

} // namespace

#ifndef TBRM_DIST_HAVE_NCCL
c10::intrusive_ptr<c10d::Backend> tbrm_dist_make_nccl(
    const c10::intrusive_ptr<c10d::Store>&,
    int,
    int,
    int,
    std::chrono::milliseconds) {
  TORCH_CHECK(
      false,
      "NCCL support was not compiled into tbrm-dist (the libtorch it was built against has no "
      "libtorch_cuda.so, or the CUDA/NCCL headers were not found; see crates/tbrm-dist/build.rs)");
}
#endif

extern "C" {

void tbrm_dist_free_string(char* s) {
  std::free(s);
}

int tbrm_dist_nccl_compiled(void) {
#ifdef TBRM_DIST_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

char* tbrm_dist_pg_new(
    int backend,
    int rank,
    int world_size,
    int device_index,
    const char* master_addr,
    uint16_t master_port,
    int64_t timeout_ms,
    TbrmDistPg** out) {
  return guarded([&] {
    TORCH_CHECK(out != nullptr, "null output pointer");
    *out = nullptr;
    TORCH_CHECK(master_addr != nullptr, "null master address");
    TORCH_CHECK(world_size > 0, "world_size must be positive, got ", world_size);
    TORCH_CHECK(
        rank >= 0 && rank < world_size,
        "rank ",
        rank,
        " out of range for world_size ",
        world_size);
    auto pg = std::make_unique<TbrmDistPg>();
    pg->backend_kind = backend;
    pg->device_index = device_index;
    pg->timeout = std::chrono::milliseconds(timeout_ms);

    // Rank 0 hosts the store; it waits (up to the timeout) until all world_size ranks have
    // connected, and every rank retries connecting until the timeout.
    c10d::TCPStoreOptions store_opts;
    store_opts.port = master_port;
    store_opts.isServer = rank == 0;
    store_opts.numWorkers = static_cast<size_t>(world_size);
    store_opts.waitWorkers = true;
    store_opts.timeout = pg->timeout;
    std::string host(master_addr);
    pg->store = c10::make_intrusive<c10d::TCPStore>(host, store_opts);

    switch (backend) {
      case TBRM_DIST_GLOO: {
        // A loopback master means a single-host job: bind Gloo to loopback directly rather than
        // to whatever this machine's hostname resolves to. Otherwise use torch's default
        // device selection (GLOO_SOCKET_IFNAME, then the hostname's address).
        c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_opts;
        if (host == "127.0.0.1" || host == "localhost" || host == "::1") {
          gloo_opts = c10d::ProcessGroupGloo::Options::create(pg->timeout);
          gloo_opts->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForHostname(host));
        } else {
          gloo_opts = c10d::ProcessGroupGloo::Options::create_default(pg->timeout);
        }
        pg->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
            pg->store, rank, world_size, gloo_opts);
        break;
      }
      case TBRM_DIST_NCCL:
        pg->backend =
            tbrm_dist_make_nccl(pg->store, rank, world_size, device_index, pg->timeout);
        break;
      default:
        TORCH_CHECK(false, "unknown backend ", backend);
    }
    *out = pg.release();
  });
}

void tbrm_dist_pg_free(TbrmDistPg* pg) {
  // Destructors are noexcept; a throwing one would terminate, so there is nothing to catch.
  delete pg;
}

char* tbrm_dist_all_reduce(TbrmDistPg* pg, void* tensor, int op) {
  return guarded([&] {
    checked(pg);
    std::vector<at::Tensor> tensors{tensor_ref(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = pg->timeout;
    wait_for(pg, pg->backend->allreduce(tensors, opts));
  });
}

char* tbrm_dist_broadcast(TbrmDistPg* pg, void* tensor, int root) {
  return guarded([&] {
    checked(pg);
    std::vector<at::Tensor> tensors{tensor_ref(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = pg->timeout;
    wait_for(pg, pg->backend->broadcast(tensors, opts));
  });
}

char* tbrm_dist_all_gather_into(TbrmDistPg* pg, void* output, void* input) {
  return guarded([&] {
    checked(pg);
    at::Tensor& out = tensor_ref(output);
    at::Tensor& in = tensor_ref(input);
    c10d::AllgatherOptions opts;
    opts.timeout = pg->timeout;
    wait_for(pg, pg->backend->_allgather_base(out, in, opts));
  });
}

char* tbrm_dist_reduce_scatter(TbrmDistPg* pg, void* output, void* input, int op) {
  return guarded([&] {
    checked(pg);
    at::Tensor& out = tensor_ref(output);
    at::Tensor& in = tensor_ref(input);
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = pg->timeout;
    wait_for(pg, pg->backend->_reduce_scatter_base(out, in, opts));
  });
}

char* tbrm_dist_barrier(TbrmDistPg* pg) {
  return guarded([&] {
    checked(pg);
    c10d::BarrierOptions opts;
    opts.timeout = pg->timeout;
    if (pg->backend_kind == TBRM_DIST_NCCL && pg->device_index >= 0) {
      // NCCL's barrier is an all-reduce on a device tensor; name the device so it does not
      // guess one from the rank.
      opts.device_ids = {pg->device_index};
    }
    wait_for(pg, pg->backend->barrier(opts));
  });
}

} // extern "C"
