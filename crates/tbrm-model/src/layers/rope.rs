//! Rotary position embeddings (Su et al. 2021, RoFormer) in the rotate-half layout of
//! transformers' `LlamaRotaryEmbedding` / `apply_rotary_pos_emb`: the first and second halves
//! of each head form the rotated pairs. Frequencies follow transformers'
//! `_compute_default_rope_parameters` and, for Llama 3.1+, `_compute_llama3_parameters`,
//! computed in float32 with the same operations so positions match transformers exactly.

use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::RopeScaling;
use crate::ModelConfig;

pub(crate) struct RotaryEmbedding {
    /// (hs/2,) float32
    inv_freq: Tensor,
}

impl RotaryEmbedding {
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        let dim = cfg.head_dim;
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / dim as f64;
        let mut inv_freq = Tensor::pow_scalar(cfg.rope_theta, &exponents).reciprocal();
        if let Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) = cfg.rope_scaling
        {
            let old_len = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_len / low_freq_factor;
            let high_freq_wavelen = old_len / high_freq_factor;
            let wavelen = inv_freq.reciprocal() * (2.0 * PI);
            // Long wavelengths (low frequencies) are slowed down by `factor`, short ones kept,
            // and the band in between interpolated smoothly.
            let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / factor));
            let smooth = (wavelen.reciprocal() * old_len - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed = (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
            let is_medium = wavelen
                .ge(high_freq_wavelen)
                .logical_and(&wavelen.le(low_freq_wavelen));
            inv_freq = smoothed.where_self(&is_medium, &scaled);
        }
        RotaryEmbedding { inv_freq }
    }

    pub fn set_device(&mut self, device: Device) {
        self.inv_freq = self.inv_freq.to_device(device);
    }

    /// position_ids (B, T) integer -> (cos, signed sin), each (B, 1, T, hs) in `kind`, ready
    /// to broadcast over heads. The sine's first half is negated (see [`apply_rotary`]).
    pub fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        // (B, T, 1) * (hs/2,) -> (B, T, hs/2): one product per entry, as transformers' outer
        // product by matmul computes it.
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let (cos, sin) = (freqs.cos(), freqs.sin());
        let cos = Tensor::cat(&[&cos, &cos], -1).unsqueeze(1);
        let sin = Tensor::cat(&[&sin.neg(), &sin], -1).unsqueeze(1);
        (cos.to_kind(kind), sin.to_kind(kind))
    }
}

/// x (B, nh, T, hs) rotated by (cos, signed sin) from [`RotaryEmbedding::cos_sin`].
///
/// transformers computes `x * cos + cat(-x2, x1) * sin`; swapping the halves with one `flip`
/// and folding the minus sign into the sine gives the same floats (negation is exact) with two
/// fewer tensor ops per call, which matters in a decode step made of small ops.
pub(crate) fn apply_rotary(x: &Tensor, cos: &Tensor, sin_signed: &Tensor) -> Tensor {
    let size = x.size();
    let half = size[3] / 2;
    let swapped = x
        .view([size[0], size[1], size[2], 2, half])
        .flip([3])
        .view(size.as_slice());
    x * cos + swapped * sin_signed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelType;

    #[test]
    fn default_frequencies_and_rotation() {
        let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
        cfg.head_dim = 4;
        cfg.rope_theta = 100.0;
        let rope = RotaryEmbedding::new(&cfg, Device::Cpu);
        // theta^(-0/4), theta^(-2/4)
        let f: Vec<f32> = Vec::try_from(&rope.inv_freq).unwrap();
        assert!(
            (f[0] - 1.0).abs() < 1e-7 && (f[1] - 0.1).abs() < 1e-7,
            "{f:?}"
        );
        let pos = Tensor::from_slice(&[0i64, 3]).view([1, 2]);
        let (cos, sin) = rope.cos_sin(&pos, Kind::Float);
        assert_eq!(cos.size(), [1, 1, 2, 4]);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]).view([1, 1, 2, 4]);
        let y = apply_rotary(&x, &cos, &sin);
        // Position 0 is the identity; position 3 rotates pair (x0, x2) by angle 3.
        let y0: Vec<f32> = Vec::try_from(y.get(0).get(0).get(0)).unwrap();
        assert_eq!(y0, vec![1.0, 2.0, 3.0, 4.0]);
        let (c, s) = (3f32.cos(), 3f32.sin());
        let y1: Vec<f32> = Vec::try_from(y.get(0).get(0).get(1)).unwrap();
        assert!((y1[0] - (1.0 * c - 3.0 * s)).abs() < 1e-6);
        assert!((y1[2] - (3.0 * c + 1.0 * s)).abs() < 1e-6);
        // Rotation keeps the norm.
        let n = |t: &Tensor| t.square().sum(Kind::Float).double_value(&[]);
        assert!((n(&x) - n(&y)).abs() < 1e-4);
    }

    #[test]
    fn llama3_scaling_bands() {
        let mut cfg = ModelConfig::tiny(ModelType::Llama);
        cfg.head_dim = 64;
        cfg.rope_theta = 500000.0;
        let plain: Vec<f32> =
            Vec::try_from(&RotaryEmbedding::new(&cfg, Device::Cpu).inv_freq).unwrap();
        cfg.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        let scaled: Vec<f32> =
            Vec::try_from(&RotaryEmbedding::new(&cfg, Device::Cpu).inv_freq).unwrap();
        for (p, s) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f32::consts::PI / p;
            if wavelen < 8192.0 / 4.0 {
                assert_eq!(p, s, "high frequencies are kept");
            } else if wavelen > 8192.0 {
                assert!(
                    (p / 8.0 - s).abs() <= 1e-6 * p.abs(),
                    "low frequencies / factor"
                );
            } else {
                assert!(*s < *p && *s > p / 8.0, "medium band in between");
            }
        }
    }
}
