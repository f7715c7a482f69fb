//! RMSNorm (Zhang & Sennrich 2019) in transformers' `LlamaRMSNorm` / `Qwen2RMSNorm` order:
//! normalise in float32, cast back to the input dtype, then scale by the weight. For bf16 the
//! weight multiply after the cast matters for matching transformers bit for bit.

use tch::{nn, Kind, Tensor};

pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
    dim: i64,
}

impl RmsNorm {
    pub fn new(p: nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm {
            weight: p.ones("weight", &[dim]),
            eps,
            dim,
        }
    }

    /// Normalises over the last dimension: (.., dim) -> (.., dim).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        if kind == Kind::Float {
            // One fused call with the weight: same arithmetic as the float32 path below.
            x.rms_norm([self.dim], Some(&self.weight), self.eps)
        } else {
            let normed = x
                .to_kind(Kind::Float)
                .rms_norm([self.dim], None::<Tensor>, self.eps)
                .to_kind(kind);
            normed * &self.weight
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let norm = RmsNorm::new(vs.root(), 4, 1e-6);
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([1, 4]);
        let y = norm.forward(&x);
        let rms = ((1.0f64 + 4.0 + 9.0 + 0.25) / 4.0 + 1e-6).sqrt();
        let expected = [1.0 / rms, -2.0 / rms, 3.0 / rms, 0.5 / rms];
        for (i, e) in expected.iter().enumerate() {
            assert!((y.double_value(&[0, i as i64]) - e).abs() < 1e-6);
        }
        let mut vs_b = nn::VarStore::new(tch::Device::Cpu);
        vs_b.set_kind(Kind::BFloat16);
        let norm_b = RmsNorm::new(vs_b.root(), 4, 1e-6);
        let yb = norm_b.forward(&x.to_kind(Kind::BFloat16));
        assert_eq!(yb.kind(), Kind::BFloat16);
        assert!((yb.to_kind(Kind::Float) - y).abs().max().double_value(&[]) < 1e-2);
    }
}
