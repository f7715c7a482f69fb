//! `nn.Linear` with Hugging Face's layout: `weight` is (out, in), `bias` optional.

use tch::{nn, Device, Kind, Tensor};

pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Zero-initialised; `CausalLm` fills weights from a checkpoint or a seeded init.
    pub fn new(p: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        Linear {
            weight: p.zeros("weight", &[out_dim, in_dim]),
            bias: bias.then(|| p.zeros("bias", &[out_dim])),
        }
    }

    /// (.., in) -> (.., out)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// At most this many input rows take the transposed product on CPU (see [`linear`]).
const SKINNY_ROWS: i64 = 64;

/// `x W^T + b` for x (.., in), W (out, in). On CPU in f32 with few rows (a decode step) it is
/// computed as `(W x^T)^T`: MKL's sgemm then streams the weight as the left operand instead of
/// packing all of it for a handful of rows, which measured 1.5-3x faster per call here for
/// 16 rows (the lm_head of a vocab-8192 model: 3.3 ms -> 1.2 ms). The result is a transposed
/// view; the values are the same sums in another order (float rounding aside). bf16/f16 keep
/// `linear`: CPU bf16 matmuls round differently on that path (checked against f32).
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (out_dim, in_dim) = (w.size()[0], w.size()[1]);
    let rows = x.numel() as i64 / in_dim.max(1);
    if x.device() != Device::Cpu || x.kind() != Kind::Float || rows > SKINNY_ROWS || rows == 0 {
        return x.linear(w, b);
    }
    let mut shape = x.size();
    *shape
        .last_mut()
        .expect("linear input has a feature dimension") = out_dim;
    let x2 = x.reshape([rows, in_dim]);
    if let Some(y) = super::packed::packed_linear(&x2, w, b) {
        return y.view(shape.as_slice());
    }
    let xt = x2.tr(); // (in, rows)
    let y = match b {
        Some(b) => b.unsqueeze(1).addmm(w, &xt),
        None => w.matmul(&xt),
    }; // (out, rows)
    y.tr().view(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skinny_product_matches_linear() {
        let w = Tensor::randn([48, 32], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([48], (Kind::Float, Device::Cpu));
        for rows in [1, 5, 64, 65] {
            let x = Tensor::randn([rows, 1, 32], (Kind::Float, Device::Cpu));
            let got = linear(&x, &w, Some(&b));
            assert_eq!(got.size(), [rows, 1, 48]);
            let want = x.linear(&w, Some(&b));
            let d = (got - want).abs().max().double_value(&[]);
            assert!(d < 1e-5, "rows {rows}: {d}");
        }
    }
}
