//! AdamW over tch tensors, with state that can be saved and restored exactly, and global
//! gradient-norm clipping.
//!
//! tch's own optimizer keeps its moments inside libtorch where they cannot be read out, so a
//! resumed run would restart Adam from zero moments and diverge from an uninterrupted one.
//! This one owns its moments as ordinary tensors, saved as safetensors with each checkpoint.
//!
//! The update is AdamW as in Loshchilov & Hutter, "Decoupled Weight Decay Regularization"
//! (arXiv:1711.05101), in the form of PyTorch's `torch.optim.AdamW` documentation: decay the
//! weights by `lr * weight_decay`, update the moments, bias-correct, step by
//! `lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`. A test checks it against
//! libtorch's AdamW. Moments are float32; for bf16/f16 parameters the optimizer also keeps
//! float32 master weights (mixed-precision training in the sense of Micikevicius et al.,
//! arXiv:1710.03740), because a 1e-6-sized update added to a bf16 weight is rounded away.
//!
//! Gradient clipping scales all gradients by `max_norm / (total_norm + 1e-6)` when the global
//! L2 norm exceeds `max_norm` (Pascanu et al., arXiv:1211.5063; the same formula as PyTorch's
//! `clip_grad_norm_`).

use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

/// Errors saving or restoring optimizer state.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("{path}: {message}")]
    State { path: String, message: String },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// AdamW hyper-parameters (the learning rate is passed per step, from the schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    /// float32 copy of a half-precision parameter; the optimizer updates this one.
    master: Option<Tensor>,
}

/// AdamW over a fixed set of named parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    steps: u64,
}

impl AdamW {
    /// Optimises the given parameters (names must be unique; they key the saved state).
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let zeros = || Tensor::zeros(param.size(), (Kind::Float, param.device()));
                let master =
                    (param.kind() != Kind::Float).then(|| param.detach().to_kind(Kind::Float));
                Slot {
                    m: zeros(),
                    v: zeros(),
                    master,
                    name,
                    param,
                }
            })
            .collect();
        AdamW {
            cfg,
            slots,
            steps: 0,
        }
    }

    /// Optimises every trainable variable of a var store, in name order (so the order, and
    /// with it every float sum over parameters, is the same in every run).
    pub fn for_var_store(vs: &nn::VarStore, cfg: AdamWConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new(vars, cfg)
    }

    /// Optimizer steps taken so far (Adam's t).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, in the optimizer's order.
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.param.zero_grad();
        }
    }

    /// Global L2 norm of all gradients; when it exceeds `max_norm` (> 0) the gradients are
    /// scaled down to it. Returns the norm before clipping (non-finite when a gradient is).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        clip_grad_norm(&self.params(), max_norm)
    }

    /// One AdamW step with learning rate `lr` on the accumulated gradients. Parameters
    /// without a gradient are left alone, as in PyTorch.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let step_size = lr / bias1;
        tch::no_grad(|| {
            for s in &mut self.slots {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let g = grad.to_kind(Kind::Float);
                let _ = s.m.lerp_(&g, 1.0 - beta1);
                let _ = s.v.g_mul_scalar_(beta2);
                let _ = s.v.g_add_(&(g.square() * (1.0 - beta2)));
                let denom = s.v.sqrt() / bias2_sqrt + eps;
                let update = &s.m / denom * step_size;
                let target = match &mut s.master {
                    Some(master) => master,
                    None => &mut s.param,
                };
                if weight_decay != 0.0 {
                    let _ = target.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = target.g_sub_(&update);
                if let Some(master) = &s.master {
                    s.param.copy_(master);
                }
            }
        });
    }

    /// Named state tensors (on the CPU): `m.<name>`, `v.<name>`, `master.<name>`, `step`.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from_slice(&[self.steps as i64]))];
        for s in &self.slots {
            out.push((format!("m.{}", s.name), s.m.to_device(Device::Cpu)));
            out.push((format!("v.{}", s.name), s.v.to_device(Device::Cpu)));
            if let Some(master) = &s.master {
                out.push((format!("master.{}", s.name), master.to_device(Device::Cpu)));
            }
        }
        out
    }

    /// Writes the state as one safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        Tensor::write_safetensors(&self.state_tensors(), path)?;
        Ok(())
    }

    /// Restores a state written by [`AdamW::save`] for the same parameters (names and shapes
    /// must match; the error names the tensor that does not).
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let err = |message: String| OptimError::State {
            path: path.display().to_string(),
            message,
        };
        let mut saved: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let step = saved
            .remove("step")
            .ok_or_else(|| err("no `step` tensor (not an optimizer state file)".into()))?;
        let steps = step.int64_value(&[0]);
        let mut take = |key: String, like: &Tensor| -> Result<Tensor, OptimError> {
            let t = saved
                .remove(&key)
                .ok_or_else(|| err(format!("missing tensor `{key}`")))?;
            if t.size() != like.size() {
                return Err(err(format!(
                    "tensor `{key}` has shape {:?}, the parameter has {:?}",
                    t.size(),
                    like.size()
                )));
            }
            Ok(t.to_kind(Kind::Float).to_device(like.device()))
        };
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let m = take(format!("m.{}", s.name), &s.param)?;
            let v = take(format!("v.{}", s.name), &s.param)?;
            let master = match &s.master {
                Some(_) => Some(take(format!("master.{}", s.name), &s.param)?),
                None => None,
            };
            restored.push((m, v, master));
        }
        if let Some(extra) = saved.keys().next() {
            return Err(err(format!(
                "tensor `{extra}` matches no parameter (state of a different model?)"
            )));
        }
        tch::no_grad(|| {
            for (s, (m, v, master)) in self.slots.iter_mut().zip(restored) {
                s.m.copy_(&m);
                s.v.copy_(&v);
                if let (Some(dst), Some(src)) = (&mut s.master, master) {
                    dst.copy_(&src);
                }
            }
        });
        self.steps =
            u64::try_from(steps).map_err(|_| err(format!("negative step count {steps}")))?;
        Ok(())
    }
}

/// Global L2 norm of the gradients of `params` (computed in float64 over float32 squares);
/// when `max_norm > 0` and the norm exceeds it, scales every gradient by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping. A non-finite norm leaves
/// the gradients as they are: the caller skips that step.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = tch::no_grad(|| {
        let squares: Vec<Tensor> = grads
            .iter()
            .map(|g| {
                g.to_kind(Kind::Float)
                    .square()
                    .sum(Kind::Double)
                    .to_device(Device::Cpu)
            })
            .collect();
        Tensor::stack(&squares, 0)
            .sum(Kind::Double)
            .sqrt()
            .double_value(&[])
    });
    if max_norm > 0.0 && total.is_finite() && total > max_norm {
        let coef = max_norm / (total + 1e-6);
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(coef);
            }
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    fn quadratic_loss(w: &Tensor, target: &Tensor) -> Tensor {
        (w - target).square().sum(Kind::Float) + w.sum(Kind::Float) * 0.1
    }

    fn make_param(seed: i64) -> (nn::VarStore, Tensor) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().randn("w", &[3, 4], 0.0, 1.0);
        (vs, w)
    }

    #[test]
    fn matches_libtorch_adamw() {
        let target = Tensor::from_slice(&[0.5f32; 12]).reshape([3, 4]);
        let (vs_a, wa) = make_param(3);
        let (vs_b, wb) = make_param(3);
        let cfg = AdamWConfig {
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let mut ours = AdamW::for_var_store(&vs_a, cfg);
        let mut theirs = nn::AdamW {
            beta1: 0.8,
            beta2: 0.95,
            wd: 0.1,
            eps: 1e-6,
            amsgrad: false,
        }
        .build(&vs_b, 0.05)
        .unwrap();
        for _ in 0..6 {
            ours.zero_grad();
            quadratic_loss(&wa, &target).backward();
            ours.step(0.05);
            theirs.zero_grad();
            quadratic_loss(&wb, &target).backward();
            theirs.step();
        }
        let diff = (&wa - &wb).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "max |ours - libtorch| = {diff}");
        let moved = (&wa - make_param(3).1).abs().max().double_value(&[]);
        assert!(
            moved > 0.1,
            "the parameters should have moved, moved {moved}"
        );
    }

    #[test]
    fn save_load_continues_bit_identically() {
        let target = Tensor::from_slice(&[-1.0f32; 12]).reshape([3, 4]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let run = |steps: usize, opt: &mut AdamW, w: &Tensor| {
            for _ in 0..steps {
                opt.zero_grad();
                quadratic_loss(w, &target).backward();
                opt.step(0.01);
            }
        };
        let (vs_a, wa) = make_param(5);
        let mut a = AdamW::for_var_store(&vs_a, AdamWConfig::default());
        run(3, &mut a, &wa);
        a.save(&path).unwrap();
        run(4, &mut a, &wa);

        let (vs_b, wb) = make_param(5);
        run(
            3,
            &mut AdamW::for_var_store(&vs_b, AdamWConfig::default()),
            &wb,
        );
        let mut b = AdamW::for_var_store(&vs_b, AdamWConfig::default());
        b.load(&path).unwrap();
        assert_eq!(b.steps(), 3);
        run(4, &mut b, &wb);
        assert!(wa.equal(&wb), "resumed optimizer diverged");

        let (vs_c, _) = make_param(5);
        let _ = vs_c.root().zeros("extra", &[2]);
        let err = AdamW::for_var_store(&vs_c, AdamWConfig::default())
            .load(&path)
            .unwrap_err();
        assert!(err.to_string().contains("m.extra"), "{err}");
    }

    #[test]
    fn half_precision_params_get_float32_master_weights() {
        let w = Tensor::ones([4], (Kind::BFloat16, Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        for _ in 0..10 {
            opt.zero_grad();
            w.to_kind(Kind::Float).sum(Kind::Float).backward();
            // 1e-4 per step is far below bf16's resolution at 1.0 (2^-7): only the master moves.
            opt.step(1e-4);
        }
        let master = &opt.slots[0].master.as_ref().unwrap();
        assert!((master.double_value(&[0]) - (1.0 - 1e-3)).abs() < 1e-5);
        assert_eq!(w.kind(), Kind::BFloat16);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_reports_the_original() {
        let (vs, w) = make_param(1);
        let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
        (&w * 10.0).sum(Kind::Float).backward();
        // 12 gradients of 10: norm sqrt(1200).
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 1200f64.sqrt()).abs() < 1e-4, "{norm}");
        let after = clip_grad_norm(&opt.params(), 0.0);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        opt.zero_grad();
        (&w * f64::NAN).sum(Kind::Float).backward();
        assert!(!opt.clip_grad_norm(1.0).is_finite());
    }
}
