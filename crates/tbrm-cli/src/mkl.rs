//! MKL's CPU dispatch on non-Intel x86 CPUs.
//!
//! libtorch's CPU matmuls go through the MKL that the PyPI wheel links in statically. MKL picks
//! its kernels by asking `mkl_serv_intel_cpu_true()`; on AMD CPUs that answers 0 and MKL falls
//! back to its generic SSE2 code path (`mkl_serv_cpu_detect()` = 0 on the AMD EPYC where we
//! measured), even when the CPU has AVX2 and FMA. That path is why a batch-16 decode step spent
//! a quarter of its time in MKL's operand packing there (BENCHMARKS.md).
//!
//! MKL calls that function through the dynamic symbol table, so a definition exported from the
//! executable takes precedence (the build script exports it from the `tbrm` binary only). Ours
//! says "yes", after which MKL chooses among its kernels by the CPU's feature flags, exactly as
//! on an Intel CPU with the same flags. On Intel CPUs it changes nothing. Where libtorch has no
//! MKL (aarch64) nothing calls it.
//!
//! `TBRM_MKL_STOCK_DISPATCH=1` restores MKL's own answer (looked up behind ours with
//! `RTLD_NEXT`), for comparisons with stock PyTorch on the same machine.

use std::ffi::c_int;
use std::sync::OnceLock;

/// Name of the environment variable that turns the override off.
pub const STOCK_DISPATCH_ENV: &str = "TBRM_MKL_STOCK_DISPATCH";

fn stock_dispatch() -> bool {
    static STOCK: OnceLock<bool> = OnceLock::new();
    *STOCK
        .get_or_init(|| std::env::var(STOCK_DISPATCH_ENV).is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// MKL's own `mkl_serv_intel_cpu_true`, the next definition after ours.
fn stock_answer() -> c_int {
    type Probe = unsafe extern "C" fn() -> c_int;
    static STOCK_FN: OnceLock<Option<Probe>> = OnceLock::new();
    let f = STOCK_FN.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is MKL's function of
        // exactly this signature (`int mkl_serv_intel_cpu_true(void)`).
        unsafe {
            let p = libc::dlsym(libc::RTLD_NEXT, c"mkl_serv_intel_cpu_true".as_ptr());
            (!p.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, Probe>(p))
        }
    });
    // SAFETY: see above; the function takes no arguments and has no preconditions.
    f.map_or(0, |f| unsafe { f() })
}

/// Interposes MKL's vendor check (see the module docs).
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> c_int {
    if stock_dispatch() {
        stock_answer()
    } else {
        1
    }
}

/// MKL's code path for this process (0 = generic), or `None` without MKL; for `tbrm bench`.
pub fn mkl_code_path() -> Option<i32> {
    type Detect = unsafe extern "C" fn() -> c_int;
    // SAFETY: as in `stock_answer`; `mkl_serv_cpu_detect` is `int (void)`.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, c"mkl_serv_cpu_detect".as_ptr());
        if p.is_null() {
            return None;
        }
        let f = std::mem::transmute::<*mut libc::c_void, Detect>(p);
        Some(f())
    }
}
