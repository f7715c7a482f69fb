//! Data parallelism for tbrm: libtorch's c10d process groups, driven from Rust.
//!
//! # The bridge
//! tch exposes no `torch.distributed`, but the libtorch it links (here the PyPI torch wheel)
//! contains all of c10d. A small C++ file (`cpp/bridge.cpp`, compiled by `build.rs` with the
//! `cc` crate against the wheel's own headers, its `_GLIBCXX_USE_CXX11_ABI` and the libraries
//! torch-sys links) creates a `c10d::TCPStore` and a `c10d::ProcessGroupGloo` (CPU tensors) or
//! `c10d::ProcessGroupNCCL` (CUDA tensors; only when build.rs could compile it, see
//! [`nccl_build_status`]) and exposes a handful of collectives through a C ABI. Tensors cross
//! as the `at::Tensor*` that torch-sys's `*mut C_tensor` is, so no data is copied and results
//! land in the caller's tensors.
//!
//! Why this shape: the C++ side catches every exception and returns it as a string (unwinding
//! into Rust is undefined behaviour), and waits on every collective with the group's timeout, so
//! a peer that dies or hangs surfaces as a [`DistError`] naming the operation and this rank
//! within the timeout instead of a hang or an abort.
//!
//! # Ranks and torchrun
//! [`ProcessGroup::from_env`] reads what `torchrun --nproc-per-node N ...` exports to each
//! worker:
//!
//! | variable      | meaning                                   | used as                       |
//! |---------------|-------------------------------------------|-------------------------------|
//! | `RANK`        | global rank, `0..WORLD_SIZE`              | [`Options::rank`]             |
//! | `WORLD_SIZE`  | number of processes in the job            | [`Options::world_size`]       |
//! | `LOCAL_RANK`  | index of the process on its node          | [`Options::local_rank`]: CUDA device for NCCL |
//! | `MASTER_ADDR` | host of rank 0                            | TCPStore address              |
//! | `MASTER_PORT` | free port on that host                    | TCPStore port                 |
//!
//! Rank 0 runs the TCPStore server on `MASTER_ADDR:MASTER_PORT`; every rank (0 included)
//! connects to it, the backend exchanges its connection details through it, and the
//! constructor returns once all `WORLD_SIZE` ranks have joined (or fails at the timeout).
//!
//! # Rules of use
//! - Like c10d, every rank must issue the same collectives in the same order with matching
//!   tensor sizes and dtypes; collectives are blocking.
//! - After a collective fails the group is unusable (ranks may now disagree on which
//!   collective comes next), so every later call on it returns an error immediately. Dropping a
//!   failed group may block for up to the timeout while Gloo's worker threads give up.
//! - A [`ProcessGroup`] may move between threads but is not shared between them (`!Sync`),
//!   which keeps collectives on one rank in program order.

mod env;
mod error;
mod ffi;

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use tch::Tensor;

pub use error::DistError;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP: CPU tensors. Always available.
    Gloo,
    /// NCCL: CUDA tensors on the device given by [`Options::local_rank`]. Available only when
    /// the bridge was built with it ([`nccl_build_status`]) and a GPU is visible at run time.
    Nccl,
}

/// Everything needed to join a process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub backend: Backend,
    /// This process's rank, `0..world_size`. Rank 0 hosts the TCPStore.
    pub rank: usize,
    pub world_size: usize,
    /// Index on this node; the CUDA device for [`Backend::Nccl`], ignored by Gloo.
    pub local_rank: usize,
    /// Address of rank 0 (TCPStore server). A loopback address also binds Gloo to loopback.
    pub master_addr: String,
    pub master_port: u16,
    /// Bound on the rendezvous and on each collective; a dead or silent peer is reported as an
    /// error after at most this long.
    pub timeout: Duration,
}

impl Options {
    /// Reads torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`;
    /// the error names the first variable that is missing or malformed.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<Options, DistError> {
        env::options_from_lookup(backend, timeout, |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }
}

/// Whether NCCL support was compiled into the bridge: `Ok(())`, or `Err(reason)` with what
/// build.rs found missing (e.g. CUDA headers the torch wheel's dependencies do not ship).
pub fn nccl_build_status() -> Result<(), &'static str> {
    // SAFETY: no arguments, no side effects.
    if unsafe { ffi::tbrm_dist_nccl_compiled() } != 0 {
        Ok(())
    } else {
        Err(env!("TBRM_DIST_NCCL_STATUS"))
    }
}

/// A joined c10d process group (store + backend). Dropping it leaves the group.
pub struct ProcessGroup {
    raw: NonNull<ffi::TbrmDistPg>,
    opts: Options,
    /// First collective failure; once set, the group refuses further work (see module docs).
    failed: RefCell<Option<String>>,
}

// SAFETY: c10d backends and stores may be used from any thread; what they must not see is
// concurrent calls that race on collective order, which `!Sync` (the RefCell) rules out.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("backend", &self.opts.backend)
            .field("rank", &self.opts.rank)
            .field("world_size", &self.opts.world_size)
            .finish_non_exhaustive()
    }
}

fn to_c_int(v: usize, what: &str) -> Result<c_int, String> {
    c_int::try_from(v).map_err(|_| format!("{what} {v} does not fit a C int"))
}

impl ProcessGroup {
    /// Joins (rank 0: hosts) the group described by `opts`; blocks until all ranks have joined,
    /// at most `opts.timeout`.
    pub fn new(opts: Options) -> Result<ProcessGroup, DistError> {
        const OP: &str = "ProcessGroup::new";
        let fail = |message: String| DistError::Op {
            op: OP,
            rank: opts.rank,
            world_size: opts.world_size,
            message,
        };
        let backend = match opts.backend {
            Backend::Gloo => ffi::GLOO,
            Backend::Nccl => {
                nccl_build_status()
                    .map_err(|why| fail(format!("NCCL backend not compiled in: {why}")))?;
                ffi::NCCL
            }
        };
        let rank = to_c_int(opts.rank, "rank").map_err(fail)?;
        let world = to_c_int(opts.world_size, "world_size").map_err(fail)?;
        let device = to_c_int(opts.local_rank, "local_rank").map_err(fail)?;
        let addr = CString::new(opts.master_addr.as_str())
            .map_err(|_| fail("master_addr contains a NUL byte".into()))?;
        // c10d treats a zero timeout as "none"; keep at least 1 ms so a timeout always exists.
        let timeout_ms = i64::try_from(opts.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut raw = std::ptr::null_mut();
        // SAFETY: `addr` outlives the call; `raw` is a valid out-pointer.
        let err = unsafe {
            ffi::tbrm_dist_pg_new(
                backend,
                rank,
                world,
                device,
                addr.as_ptr(),
                opts.master_port,
                timeout_ms,
                &mut raw,
            )
        };
        // SAFETY: `err` comes straight from the bridge.
        if let Some(msg) = unsafe { ffi::take_error(err) } {
            return Err(fail(msg));
        }
        let raw = NonNull::new(raw).ok_or_else(|| fail("bridge returned no group".into()))?;
        Ok(ProcessGroup {
            raw,
            opts,
            failed: RefCell::new(None),
        })
    }

    /// [`Options::from_env`] then [`ProcessGroup::new`]: the usual entry point under torchrun.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<ProcessGroup, DistError> {
        ProcessGroup::new(Options::from_env(backend, timeout)?)
    }

    pub fn rank(&self) -> usize {
        self.opts.rank
    }

    pub fn world_size(&self) -> usize {
        self.opts.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.opts.local_rank
    }

    pub fn backend(&self) -> Backend {
        self.opts.backend
    }

    pub fn timeout(&self) -> Duration {
        self.opts.timeout
    }

    fn error(&self, op: &'static str, message: String) -> DistError {
        DistError::Op {
            op,
            rank: self.opts.rank,
            world_size: self.opts.world_size,
            message,
        }
    }

    /// Runs one bridge call: refuses if the group already failed, records the first failure.
    fn call(
        &self,
        op: &'static str,
        f: impl FnOnce(*mut ffi::TbrmDistPg) -> *mut std::ffi::c_char,
    ) -> Result<(), DistError> {
        if let Some(first) = self.failed.borrow().as_ref() {
            return Err(self.error(
                op,
                format!("group unusable after an earlier failure: {first}"),
            ));
        }
        let started = Instant::now();
        let err = f(self.raw.as_ptr());
        // SAFETY: `err` comes straight from the bridge.
        match unsafe { ffi::take_error(err) } {
            None => Ok(()),
            Some(msg) => {
                let msg = format!("{msg} (after {:.1?})", started.elapsed());
                let e = self.error(op, msg);
                *self.failed.borrow_mut() = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn check(
        &self,
        op: &'static str,
        ok: bool,
        msg: impl FnOnce() -> String,
    ) -> Result<(), DistError> {
        if ok {
            Ok(())
        } else {
            Err(self.error(op, msg()))
        }
    }

    fn ptr(t: &Tensor) -> *mut c_void {
        t.as_ptr() as *mut c_void
    }

    /// In place: every rank's `tensor` becomes the element-wise sum over ranks.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<(), DistError> {
        // SAFETY: the group and tensor pointers are live for the call.
        self.call("all_reduce_sum", |pg| unsafe {
            ffi::tbrm_dist_all_reduce(pg, Self::ptr(tensor), ffi::SUM)
        })
    }

    /// In place: every rank's `tensor` becomes the element-wise maximum over ranks.
    pub fn all_reduce_max(&self, tensor: &Tensor) -> Result<(), DistError> {
        // SAFETY: as above.
        self.call("all_reduce_max", |pg| unsafe {
            ffi::tbrm_dist_all_reduce(pg, Self::ptr(tensor), ffi::MAX)
        })
    }

    /// In place: every rank's `tensor` becomes rank `root`'s.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<(), DistError> {
        const OP: &str = "broadcast";
        self.check(OP, root < self.opts.world_size, || {
            format!(
                "root {root} out of range for world size {}",
                self.opts.world_size
            )
        })?;
        let root = root as c_int; // < world_size, which fitted a C int in `new`.
                                  // SAFETY: as above.
        self.call(OP, |pg| unsafe {
            ffi::tbrm_dist_broadcast(pg, Self::ptr(tensor), root)
        })
    }

    /// The shape contract of the flat collectives: `whole` has world_size times the elements
    /// of `part`, and `output` (one of the two) is contiguous.
    fn check_flat_pair(
        &self,
        op: &'static str,
        whole: (&str, &Tensor),
        part: (&str, &Tensor),
        output: &Tensor,
    ) -> Result<(), DistError> {
        let (n, world) = (part.1.numel(), self.opts.world_size);
        self.check(op, whole.1.numel() == n * world, || {
            format!(
                "{} has {} elements, expected world_size {world} x {} {n}",
                whole.0,
                whole.1.numel(),
                part.0
            )
        })?;
        self.check(op, output.is_contiguous(), || {
            "output must be contiguous".into()
        })
    }

    /// Gathers every rank's `input` into `output`, a contiguous tensor of any shape with
    /// `world_size * n` elements (`n = input.numel()`) of the same dtype and device; rank r's
    /// data lands at flat positions `[r * n, (r + 1) * n)`.
    pub fn all_gather_into(&self, input: &Tensor, output: &Tensor) -> Result<(), DistError> {
        const OP: &str = "all_gather";
        self.check_flat_pair(OP, ("output", output), ("input", input), output)?;
        // c10d's Gloo backend splits `output` into world_size chunks that must each have
        // `input`'s shape; passing both flat makes the layout contract just "element counts".
        let (input, output) = (input.reshape([-1]), output.view([-1]));
        // SAFETY: as above; the flat views live until the call returns.
        self.call(OP, |pg| unsafe {
            ffi::tbrm_dist_all_gather_into(pg, Self::ptr(&output), Self::ptr(&input))
        })
    }

    /// Gathers every rank's `input`; element r of the result is rank r's tensor (same shape).
    /// The results are views of one freshly allocated buffer.
    pub fn all_gather(&self, input: &Tensor) -> Result<Vec<Tensor>, DistError> {
        let world = self.opts.world_size as i64;
        let n = input.numel() as i64;
        let output = Tensor::empty([world * n], (input.kind(), input.device()));
        self.all_gather_into(input, &output)?;
        let shape = input.size();
        Ok((0..world)
            .map(|r| output.narrow(0, r * n, n).view(shape.as_slice()))
            .collect())
    }

    /// Sums `input` (`world_size * chunk` elements, read flat) over ranks and leaves flat chunk
    /// r of the sum in rank r's `output` (contiguous, `chunk` elements, same dtype). The
    /// building block of sharded gradient reduction.
    pub fn reduce_scatter_sum(&self, input: &Tensor, output: &Tensor) -> Result<(), DistError> {
        const OP: &str = "reduce_scatter_sum";
        self.check_flat_pair(OP, ("input", input), ("output", output), output)?;
        // Flat for the same reason as in all_gather_into.
        let (input, output) = (input.reshape([-1]), output.view([-1]));
        // SAFETY: as above; the flat views live until the call returns.
        self.call(OP, |pg| unsafe {
            ffi::tbrm_dist_reduce_scatter(pg, Self::ptr(&output), Self::ptr(&input), ffi::SUM)
        })
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: the group pointer is live for the call.
        self.call("barrier", |pg| unsafe { ffi::tbrm_dist_barrier(pg) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from tbrm_dist_pg_new and is freed exactly once.
        unsafe { ffi::tbrm_dist_pg_free(self.raw.as_ptr()) }
    }
}
