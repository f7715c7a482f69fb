//! Prepacked weights for CPU decoding, through MKL's packed-GEMM API.
//!
//! A decode step multiplies a few rows by every weight of the model. MKL reorders ("packs") the
//! weight into its kernel's layout on every call; with a prepacked copy the kernel streams the
//! weight once (about 25-35% off a batch-16 decode step of the benchmark model, BENCHMARKS.md).
//! libtorch's x86_64 wheel links MKL statically and exports its Fortran-style entry points
//! (`SGEMM_PACK_GET_SIZE`, `SGEMM_PACK`, `SGEMM_COMPUTE`), which tch does not bind; they are
//! looked up at run time, so where they are missing (aarch64, other builds) nothing changes.
//!
//! Packing is scoped: [`DecodePacking`] turns it on for the current thread (generation holds
//! one), weights are packed on first use and the copies are dropped with the guard, so an
//! optimizer step between two generations can never leave a stale copy behind.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::rc::Rc;
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

type GetSize = unsafe extern "C" fn(*const c_char, *const i32, *const i32, *const i32) -> usize;
type Pack = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const i32,
    *const i32,
    *const i32,
    *const f32,
    *const f32,
    *const i32,
    *mut f32,
);
type Compute = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const i32,
    *const i32,
    *const i32,
    *const f32,
    *const i32,
    *const f32,
    *const i32,
    *const f32,
    *mut f32,
    *const i32,
);

struct Api {
    get_size: GetSize,
    pack: Pack,
    compute: Compute,
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        #[cfg(unix)]
        {
            let sym = |name: &std::ffi::CStr| {
                // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the loaded
                // libraries (libtorch_cpu is linked into every binary of the workspace).
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!p.is_null()).then_some(p)
            };
            let (g, p, c) = (
                sym(c"SGEMM_PACK_GET_SIZE")?,
                sym(c"SGEMM_PACK")?,
                sym(c"SGEMM_COMPUTE")?,
            );
            // SAFETY: these are MKL's LP64 entry points with exactly the signatures above
            // (mkl_blas.h: sgemm_pack_get_size, sgemm_pack, sgemm_compute; MKL_INT = int).
            unsafe {
                Some(Api {
                    get_size: std::mem::transmute::<*mut c_void, GetSize>(g),
                    pack: std::mem::transmute::<*mut c_void, Pack>(p),
                    compute: std::mem::transmute::<*mut c_void, Compute>(c),
                })
            }
        }
        #[cfg(not(unix))]
        None
    })
    .as_ref()
}

/// A weight (N, K) packed as MKL's `A` operand of `C^T = W x^T` (column-major view of the
/// row-major `x W^T`).
struct PackedWeight {
    buf: Tensor,
    n: i32,
    k: i32,
}

impl PackedWeight {
    fn new(api: &Api, w: &Tensor, rows: i32) -> Option<Self> {
        let (n, k) = (w.size()[0], w.size()[1]);
        let (n, k) = (i32::try_from(n).ok()?, i32::try_from(k).ok()?);
        let w = w.contiguous();
        // SAFETY: pointers to live i32s and NUL-terminated identifiers.
        let bytes = unsafe { (api.get_size)(c"A".as_ptr(), &n, &rows, &k) };
        // torch's CPU allocator aligns to 64 bytes, which MKL wants for packed buffers.
        let buf = Tensor::empty([bytes as i64 / 4 + 16], (Kind::Float, Device::Cpu));
        let one = 1.0f32;
        // SAFETY: `w` is a contiguous f32 (n, k) tensor = column-major (k, n) with ld k, read
        // as op(A) = A^T; `buf` holds at least `bytes` bytes as MKL asked.
        unsafe {
            (api.pack)(
                c"A".as_ptr(),
                c"T".as_ptr(),
                &n,
                &rows,
                &k,
                &one,
                w.data_ptr() as *const f32,
                &k,
                buf.data_ptr() as *mut f32,
            );
        }
        Some(PackedWeight { buf, n, k })
    }

    /// `x (rows, K) W^T + b` as a contiguous (rows, N) tensor.
    fn matmul(&self, api: &Api, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let x = x.contiguous();
        let rows = x.size()[0] as i32;
        // A fresh buffer: MKL writes into it, so it must never alias the bias (with one row,
        // `b.expand(..).contiguous()` would be `b` itself and the bias would be overwritten).
        let mut out = Tensor::empty([rows as i64, self.n as i64], (Kind::Float, Device::Cpu));
        if let Some(b) = bias {
            out.copy_(&b.unsqueeze(0).expand([rows as i64, self.n as i64], false));
        }
        let beta = if bias.is_some() { 1.0f32 } else { 0.0 };
        // SAFETY: `buf` was packed for an (n, k) A operand; `x` is contiguous f32 (rows, k) =
        // column-major (k, rows) with ld k; `out` is contiguous f32 (rows, n) = column-major
        // (n, rows) with ld n, initialised (bias) when beta is 1.
        unsafe {
            (api.compute)(
                c"P".as_ptr(),
                c"N".as_ptr(),
                &self.n,
                &rows,
                &self.k,
                self.buf.data_ptr() as *const f32,
                &self.k,
                x.data_ptr() as *const f32,
                &self.k,
                &beta,
                out.data_ptr() as *mut f32,
                &self.n,
            );
        }
        out
    }
}

/// Packed copies keyed by (weight address, rows, columns).
type PackedMap = HashMap<(usize, i64, i64), Rc<PackedWeight>>;

thread_local! {
    /// Packed copies by weight address, while a [`DecodePacking`] guard lives on this thread.
    static PACKED: RefCell<Option<PackedMap>> = const { RefCell::new(None) };
}

/// Turns on weight packing for CPU decoding on this thread until dropped. Hold it only under
/// `no_grad`: packed products carry no autograd graph.
pub(crate) struct DecodePacking {
    active: bool,
}

impl DecodePacking {
    /// Active only when MKL's packed API is present and the guard is not nested.
    pub(crate) fn new() -> Self {
        let active = api().is_some()
            && PACKED.with(|p| {
                let mut p = p.borrow_mut();
                let was_off = p.is_none();
                if was_off {
                    *p = Some(HashMap::new());
                }
                was_off
            });
        DecodePacking { active }
    }
}

impl Default for DecodePacking {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DecodePacking {
    fn drop(&mut self) {
        if self.active {
            PACKED.with(|p| *p.borrow_mut() = None);
        }
    }
}

/// `x (rows, K) W^T + b` with a packed copy of `w`, or `None` when packing is off on this
/// thread (no guard, no MKL) or the arguments are not f32 CPU tensors without autograd.
pub(crate) fn packed_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Option<Tensor> {
    let api = api()?;
    // The guard is only held under `no_grad` (generation); an input that carries a graph still
    // takes the autograd-aware path.
    if x.requires_grad() {
        return None;
    }
    if w.kind() != Kind::Float || w.device() != Device::Cpu || w.dim() != 2 {
        return None;
    }
    let rows = i32::try_from(x.size()[0]).ok()?;
    let packed = PACKED.with(|p| {
        let mut p = p.borrow_mut();
        let map = p.as_mut()?;
        let key = (w.data_ptr() as usize, w.size()[0], w.size()[1]);
        if let Some(found) = map.get(&key) {
            return Some(found.clone());
        }
        let packed = Rc::new(PackedWeight::new(api, w, rows)?);
        map.insert(key, packed.clone());
        Some(packed)
    })?;
    Some(packed.matmul(api, x, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_product_matches_linear_for_any_row_count_and_only_inside_the_guard() {
        let _g = tch::no_grad_guard();
        let w = Tensor::randn([300, 200], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([300], (Kind::Float, Device::Cpu));
        let b_before = b.copy();
        let x = Tensor::randn([16, 200], (Kind::Float, Device::Cpu));
        assert!(packed_linear(&x, &w, None).is_none(), "off without a guard");
        let guard = DecodePacking::new();
        if api().is_none() {
            return; // no MKL in this libtorch: nothing to compare
        }
        for rows in [16, 1, 5, 64] {
            let x = Tensor::randn([rows, 200], (Kind::Float, Device::Cpu));
            for bias in [None, Some(&b)] {
                let got = packed_linear(&x, &w, bias).expect("packing is on");
                let want = x.linear(&w, bias);
                assert_eq!(got.size(), [rows, 300]);
                let d = (got - want).abs().max().double_value(&[]);
                assert!(d < 1e-4, "rows {rows}: {d}");
            }
        }
        assert!(b.equal(&b_before), "the bias must not be written to");
        drop(guard);
        assert!(packed_linear(&x, &w, None).is_none(), "off after the guard");
    }
}
