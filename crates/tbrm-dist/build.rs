//! Build script of tbrm-dist: compiles the C++ bridge (cpp/) against the *same* libtorch that
//! `torch-sys` links, and links it.
//!
//! Finding libtorch mirrors torch-sys 0.26's build script, so headers, ABI and libraries can
//! never disagree with what tch uses:
//! - `LIBTORCH_USE_PYTORCH` set: ask the Python interpreter (`python` inside a virtualenv, else
//!   `python3`) for `torch._C._GLIBCXX_USE_CXX11_ABI` and `torch.utils.cpp_extension`'s include
//!   and library paths (for the PyPI wheel: `torch/include`,
//!   `torch/include/torch/csrc/api/include`, `torch/lib`);
//! - otherwise `LIBTORCH` (or `/usr` when `/usr/lib/libtorch.so` exists) with
//!   `LIBTORCH_INCLUDE` / `LIBTORCH_LIB` overrides and `LIBTORCH_CXX11_ABI` (default 1).
//!
//! Gloo: the wheel ships `ProcessGroupGloo.hpp` but not the Gloo headers it includes, so
//! `cpp/gloo_shim/` stands in for them (see `cpp/gloo_shim/gloo/tbrm_gloo_shim.h` for why that
//! is sound). `USE_C10D_GLOO` is defined in `bridge.cpp` itself.
//!
//! NCCL: `bridge_nccl.cpp` is compiled only when libtorch has `libtorch_cuda.so` and the CUDA
//! runtime, CUDA C runtime (`crt/`), CCCL (`nv/target`) and NCCL headers are all found. The
//! CUDA wheel's pip dependencies bring `cuda_runtime_api.h` and `nccl.h` but not `crt/` or
//! `nv/target` (those are the separate `nvidia-cuda-crt` / `nvidia-cuda-cccl` packages), so by
//! default NCCL is left out and `Backend::Nccl` returns an error naming what was missing.
//! Headers are searched in `TBRM_DIST_CUDA_INCLUDE` (`:`-separated), the wheel's sibling
//! `nvidia/*/include` folders, `$CUDA_HOME/include`, `$CUDA_PATH/include` and
//! `/usr/local/cuda/include`. `TBRM_DIST_NCCL=0` turns NCCL off, `=1` makes a missing header a
//! build error.
//!
//! Link-time fixes copied from the workspace's shared `build/torch_link.rs` (an rpath to
//! torch's `lib/`, `--no-as-needed` around `torch_cuda`) so this crate's test and example
//! binaries run, with CUDA visible, without `LD_LIBRARY_PATH`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYTHON_PRINT_PYTORCH_DETAILS: &str = r"
import torch
from torch.utils import cpp_extension
print('LIBTORCH_CXX11:', torch._C._GLIBCXX_USE_CXX11_ABI)
for include_path in cpp_extension.include_paths():
  print('LIBTORCH_INCLUDE:', include_path)
for library_path in cpp_extension.library_paths():
  print('LIBTORCH_LIB:', library_path)
";

struct Libtorch {
    cxx11_abi: String,
    include_dirs: Vec<PathBuf>,
    lib_dir: PathBuf,
}

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}

fn find_libtorch() -> Libtorch {
    if env_rerun("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if env_rerun("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let output = Command::new(python)
            .arg("-c")
            .arg(PYTHON_PRINT_PYTORCH_DETAILS)
            .output()
            .unwrap_or_else(|e| panic!("tbrm-dist: cannot run {python}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut cxx11_abi = None;
        let mut include_dirs = vec![];
        let mut lib_dir = None;
        for line in stdout.lines() {
            match line.strip_prefix("LIBTORCH_CXX11: ") {
                Some("True") => cxx11_abi = Some("1".to_owned()),
                Some("False") => cxx11_abi = Some("0".to_owned()),
                _ => {}
            }
            if let Some(p) = line.strip_prefix("LIBTORCH_INCLUDE: ") {
                include_dirs.push(PathBuf::from(p));
            }
            if let Some(p) = line.strip_prefix("LIBTORCH_LIB: ") {
                lib_dir = Some(PathBuf::from(p));
            }
        }
        let (Some(cxx11_abi), Some(lib_dir)) = (cxx11_abi, lib_dir) else {
            panic!(
                "tbrm-dist: {python} did not report torch's ABI and library path: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        Libtorch {
            cxx11_abi,
            include_dirs,
            lib_dir,
        }
    } else {
        let root = env_rerun("LIBTORCH").map(PathBuf::from).unwrap_or_else(|| {
            if Path::new("/usr/lib/libtorch.so").exists() {
                PathBuf::from("/usr")
            } else {
                panic!("tbrm-dist: set LIBTORCH_USE_PYTORCH=1 (source scripts/env.sh) or LIBTORCH")
            }
        });
        let includes = env_rerun("LIBTORCH_INCLUDE")
            .map(PathBuf::from)
            .unwrap_or(root.clone());
        let lib = env_rerun("LIBTORCH_LIB").map(PathBuf::from).unwrap_or(root);
        Libtorch {
            cxx11_abi: env_rerun("LIBTORCH_CXX11_ABI").unwrap_or_else(|| "1".to_owned()),
            include_dirs: vec![
                includes.join("include"),
                includes.join("include/torch/csrc/api/include"),
            ],
            lib_dir: lib.join("lib"),
        }
    }
}

/// Include folders that may hold CUDA / NCCL headers, most specific first.
fn cuda_include_candidates(torch: &Libtorch) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env_rerun("TBRM_DIST_CUDA_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    // The wheel's headers are at site-packages/torch/include; the nvidia-* pip packages that the
    // CUDA wheel depends on sit beside it at site-packages/nvidia/<pkg>/include.
    for inc in &torch.include_dirs {
        if inc.ends_with("torch/include") {
            if let Some(site) = inc.parent().and_then(Path::parent) {
                if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
                    let mut pkgs: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path().join("include"))
                        .collect();
                    pkgs.sort();
                    for p in pkgs {
                        dirs.push(p.join("cccl"));
                        dirs.push(p);
                    }
                }
            }
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = env_rerun(var) {
            dirs.push(PathBuf::from(v).join("include"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.retain(|d| d.is_dir());
    dirs.dedup();
    dirs
}

/// Decides whether NCCL support can be compiled: Ok(include dirs) or Err(reason).
fn nccl_plan(torch: &Libtorch) -> Result<Vec<PathBuf>, String> {
    if !torch.lib_dir.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "libtorch at {} has no libtorch_cuda.so (CPU-only build)",
            torch.lib_dir.display()
        ));
    }
    let pg_nccl = "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp";
    if !torch.include_dirs.iter().any(|d| d.join(pg_nccl).exists()) {
        return Err(format!("libtorch headers lack {pg_nccl}"));
    }
    let candidates = cuda_include_candidates(torch);
    let mut missing = vec![];
    for header in [
        "cuda_runtime_api.h",
        "crt/host_defines.h",
        "nv/target",
        "nccl.h",
    ] {
        if !candidates.iter().any(|d| d.join(header).exists()) {
            missing.push(header);
        }
    }
    if missing.is_empty() {
        Ok(candidates)
    } else {
        Err(format!(
            "CUDA/NCCL header(s) {} not found in {:?}; install nvidia-cuda-crt and \
             nvidia-cuda-cccl matching the wheel's CUDA, or point TBRM_DIST_CUDA_INCLUDE at a \
             CUDA toolkit's include folder",
            missing.join(", "),
            candidates
        ))
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn main() {
    for f in [
        "cpp/bridge.h",
        "cpp/bridge.cpp",
        "cpp/bridge_nccl.cpp",
        "cpp/gloo_shim",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let torch = find_libtorch();
    // torch-sys (a direct dependency, `links = "tch"`) reports the lib folder it linked; a
    // different one here would mean two libtorch builds in one binary.
    if let Some(tch_lib) = env_rerun("DEP_TCH_LIBTORCH_LIB") {
        assert!(
            same_dir(Path::new(&tch_lib), &torch.lib_dir),
            "tbrm-dist: torch-sys links libtorch from {tch_lib} but tbrm-dist found {}",
            torch.lib_dir.display()
        );
    }
    let pg_gloo = "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp";
    assert!(
        torch.include_dirs.iter().any(|d| d.join(pg_gloo).exists()),
        "tbrm-dist: libtorch headers {:?} lack {pg_gloo} (libtorch built without distributed?)",
        torch.include_dirs
    );

    let nccl_mode = env_rerun("TBRM_DIST_NCCL");
    let nccl = match nccl_mode.as_deref() {
        Some("0") => Err("disabled by TBRM_DIST_NCCL=0 at build time".to_owned()),
        _ => nccl_plan(&torch),
    };
    if let (Some("1"), Err(reason)) = (nccl_mode.as_deref(), &nccl) {
        panic!("tbrm-dist: TBRM_DIST_NCCL=1 but NCCL support cannot be built: {reason}");
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(true)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", torch.cxx11_abi))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .include("cpp")
        .include("cpp/gloo_shim")
        .file("cpp/bridge.cpp");
    // -isystem: torch's (and CUDA's) headers are not ours to warn about.
    for dir in &torch.include_dirs {
        build.flag("-isystem").flag(dir.to_string_lossy().as_ref());
    }
    match &nccl {
        Ok(cuda_includes) => {
            for dir in cuda_includes {
                build.flag("-isystem").flag(dir.to_string_lossy().as_ref());
            }
            build
                .define("TBRM_DIST_HAVE_NCCL", None)
                .file("cpp/bridge_nccl.cpp");
            println!("cargo:rustc-env=TBRM_DIST_NCCL_STATUS=compiled");
        }
        Err(reason) => {
            println!("cargo:rustc-env=TBRM_DIST_NCCL_STATUS={reason}");
        }
    }
    build.compile("tbrm_dist_bridge");

    let lib = torch.lib_dir.display();
    println!("cargo:rustc-link-search=native={lib}");
    if nccl.is_ok() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");

    // Same as build/torch_link.rs, for this crate's tests and examples.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if torch.lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
