//! Hand-written mirror of `cpp/bridge.h`. Every fallible function returns null on success or a
//! C-allocated error message that must be released with [`tbrm_dist_free_string`] (done by
//! [`take_error`]); tensors are the `at::Tensor*` behind tch's `Tensor::as_ptr`.

use std::ffi::{c_char, c_int, c_void, CStr};

/// Opaque C++ `TbrmDistPg` (store + backend + timeout).
#[repr(C)]
pub(crate) struct TbrmDistPg {
    _private: [u8; 0],
}

pub(crate) const GLOO: c_int = 0;
pub(crate) const NCCL: c_int = 1;
pub(crate) const SUM: c_int = 0;
pub(crate) const MAX: c_int = 1;

extern "C" {
    pub(crate) fn tbrm_dist_free_string(s: *mut c_char);
    pub(crate) fn tbrm_dist_nccl_compiled() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tbrm_dist_pg_new(
        backend: c_int,
        rank: c_int,
        world_size: c_int,
        device_index: c_int,
        master_addr: *const c_char,
        master_port: u16,
        timeout_ms: i64,
        out: *mut *mut TbrmDistPg,
    ) -> *mut c_char;
    pub(crate) fn tbrm_dist_pg_free(pg: *mut TbrmDistPg);
    pub(crate) fn tbrm_dist_all_reduce(
        pg: *mut TbrmDistPg,
        t: *mut c_void,
        op: c_int,
    ) -> *mut c_char;
    pub(crate) fn tbrm_dist_broadcast(
        pg: *mut TbrmDistPg,
        t: *mut c_void,
        root: c_int,
    ) -> *mut c_char;
    pub(crate) fn tbrm_dist_all_gather_into(
        pg: *mut TbrmDistPg,
        output: *mut c_void,
        input: *mut c_void,
    ) -> *mut c_char;
    pub(crate) fn tbrm_dist_reduce_scatter(
        pg: *mut TbrmDistPg,
        output: *mut c_void,
        input: *mut c_void,
        op: c_int,
    ) -> *mut c_char;
    pub(crate) fn tbrm_dist_barrier(pg: *mut TbrmDistPg) -> *mut c_char;
}

/// Converts a bridge return value into `None` (success) or the error message, freeing it.
///
/// # Safety
/// `err` must be null or a string returned by a bridge function and not yet freed.
pub(crate) unsafe fn take_error(err: *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    let msg = CStr::from_ptr(err).to_string_lossy().into_owned();
    tbrm_dist_free_string(err);
    Some(msg)
}
