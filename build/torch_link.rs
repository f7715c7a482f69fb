//! Shared build script of every crate that links libtorch (through `tch`).
//!
//! Two link-time fixes that `torch-sys` does not make for downstream binaries:
//! - an rpath to torch's `lib/` folder, so `tbrm` and test binaries run without
//!   `LD_LIBRARY_PATH`;
//! - `--no-as-needed` around `torch_cuda`: nothing in our code references a symbol of it, so
//!   the linker would drop it and CUDA would silently be unavailable (tch-rs issue 980).
//!
//! - for the `tbrm` binary, `mkl_serv_intel_cpu_true` exported from the executable, so that it
//!   interposes MKL's vendor check (crates/tbrm-cli/src/mkl.rs explains why).
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by `torch-sys` (its `links = "tch"`) to crates that
//! depend on it directly, which is why each such crate lists `torch-sys` as a dependency.

use std::path::Path;

fn main() {
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("tbrm-cli") {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=mkl_serv_intel_cpu_true");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
