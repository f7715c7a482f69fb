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
//!
//! Gradients are accumulated in float32, one accumulator per parameter owned by the optimizer:
//! callers add micro-batch gradients with [`AdamW::add_grad`] / [`AdamW::add_grad_at`], or
//! let `loss.backward()` fill the parameters' `.grad` as usual, which [`AdamW::clip_grad_norm`]
//! and [`AdamW::step`] move into the accumulators first ([`AdamW::absorb_param_grads`]). For
//! bf16 parameters this keeps a sum over many micro-batches from being rounded to bf16 at
//! every addition.
//!
//! With [`AdamW::with_offload`] the float32 master weights and both moments live in host
//! memory (the accumulators stay beside the parameters): the update runs on the CPU and the
//! new weights are copied back to the parameters.

use std::collections::HashMap;
use std::path::Path;

use tbrm_model::{save_tensors, ModelError, SafetensorsReader};
use tch::{nn, Device, Kind, Tensor};

/// Errors saving or restoring optimizer state, or adding a gradient.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("{path}: {message}")]
    State { path: String, message: String },
    /// A gradient for an unknown parameter, or of the wrong shape or kind.
    #[error("parameter `{name}`: {message}")]
    Param { name: String, message: String },
    /// An unreadable or unwritable state file (the error names the file).
    #[error(transparent)]
    File(#[from] ModelError),
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
    /// float32 weights the optimizer updates, copied to the parameter after each step: for
    /// half-precision parameters always, for float32 ones only when offloaded (host copy).
    master: Option<Tensor>,
    /// float32 gradient accumulator on the parameter's device, allocated on first use and
    /// kept across steps.
    acc: Option<Tensor>,
    /// Whether `acc` holds a gradient added since the last `zero_grad` (else it is stale).
    has_grad: bool,
}

impl Slot {
    fn add_grad(&mut self, grad: &Tensor) {
        tch::no_grad(|| {
            if self.has_grad {
                let acc = self
                    .acc
                    .as_mut()
                    .expect("accumulator of a slot with a gradient");
                if grad.device() == acc.device() {
                    let _ = acc.g_add_(grad);
                } else {
                    let _ = acc.g_add_(&grad.to_device(acc.device()));
                }
            } else {
                let (size, device) = (self.param.size(), self.param.device());
                let acc = self
                    .acc
                    .get_or_insert_with(|| Tensor::empty(size, (Kind::Float, device)));
                acc.copy_(grad);
                self.has_grad = true;
            }
        });
    }

    fn accumulated(&self) -> Option<&Tensor> {
        if self.has_grad {
            self.acc.as_ref()
        } else {
            None
        }
    }
}

/// A float32 copy of `t` in host memory (a new tensor even when `t` is a float32 CPU tensor).
fn host_f32_copy(t: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let mut out = Tensor::empty(t.size(), (Kind::Float, Device::Cpu));
        out.copy_(t);
        out
    })
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
    )
}

/// AdamW over a fixed set of named parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    steps: u64,
    offload: bool,
}

impl AdamW {
    /// Optimises the given parameters (names must be unique; they key the saved state).
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Self {
        let slots: Vec<Slot> = params
            .into_iter()
            .map(|(name, param)| {
                let zeros = || Tensor::zeros(param.size(), (Kind::Float, param.device()));
                let master =
                    (param.kind() != Kind::Float).then(|| param.detach().to_kind(Kind::Float));
                Slot {
                    m: zeros(),
                    v: zeros(),
                    master,
                    acc: None,
                    has_grad: false,
                    name,
                    param,
                }
            })
            .collect();
        let index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        AdamW {
            cfg,
            slots,
            index,
            steps: 0,
            offload: false,
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

    /// Keeps the float32 master weights and the Adam moments in host memory when `offload`
    /// (the gradient accumulators stay on the parameters' device); the update then runs on
    /// the CPU and the new weights are copied back to the parameters. Meant for a fresh
    /// optimizer, but converts one that has taken steps too (the state moves; float32
    /// parameters' host masters are taken from the parameters, which equal them).
    pub fn with_offload(mut self, offload: bool) -> Self {
        if offload == self.offload {
            return self;
        }
        tch::no_grad(|| {
            for s in &mut self.slots {
                if offload {
                    s.m = s.m.to_device(Device::Cpu);
                    s.v = s.v.to_device(Device::Cpu);
                    s.master = Some(match s.master.take() {
                        Some(master) => master.to_device(Device::Cpu),
                        None => host_f32_copy(&s.param),
                    });
                } else {
                    let device = s.param.device();
                    s.m = s.m.to_device(device);
                    s.v = s.v.to_device(device);
                    s.master = if s.param.kind() == Kind::Float {
                        None
                    } else {
                        s.master.take().map(|master| master.to_device(device))
                    };
                }
            }
        });
        self.offload = offload;
        self
    }

    /// Whether master weights and moments live in host memory ([`AdamW::with_offload`]).
    pub fn offloaded(&self) -> bool {
        self.offload
    }

    /// Optimizer steps taken so far (Adam's t).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, in the optimizer's order.
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// Position of parameter `name`, for [`AdamW::add_grad_at`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Adds `grad` (any float kind, the parameter's shape, any device) into parameter
    /// `name`'s float32 accumulator.
    pub fn add_grad(&mut self, name: &str, grad: &Tensor) -> Result<(), OptimError> {
        let err = |message: String| OptimError::Param {
            name: name.to_string(),
            message,
        };
        let i = self
            .index_of(name)
            .ok_or_else(|| err("no such parameter in this optimizer".into()))?;
        let kind = grad.f_kind()?;
        if !is_float(kind) {
            return Err(err(format!(
                "gradient of kind {kind:?}, expected a float kind"
            )));
        }
        let (want, got) = (self.slots[i].param.size(), grad.size());
        if want != got {
            return Err(err(format!(
                "gradient of shape {got:?}, the parameter has {want:?}"
            )));
        }
        self.slots[i].add_grad(grad);
        Ok(())
    }

    /// [`AdamW::add_grad`] by position ([`AdamW::index_of`]) for hot loops. Panics when `i`
    /// is out of range or the shape differs from the parameter's.
    pub fn add_grad_at(&mut self, i: usize, grad: &Tensor) {
        let s = &mut self.slots[i];
        assert_eq!(
            grad.size(),
            s.param.size(),
            "gradient for parameter `{}` has the wrong shape",
            s.name
        );
        s.add_grad(grad);
    }

    /// Moves the `.grad` of every parameter (filled by `loss.backward()`) into the float32
    /// accumulators and zeroes `.grad`. [`AdamW::clip_grad_norm`] and [`AdamW::step`] call it
    /// first, so callers that only use `backward()` need not.
    pub fn absorb_param_grads(&mut self) {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                s.add_grad(&g);
                tch::no_grad(|| {
                    let _ = g.zero_();
                });
            }
        }
    }

    /// A copy of the accumulated float32 gradient of `name`: None when it got none since
    /// [`AdamW::zero_grad`] (gradients still in `.grad`, not yet absorbed, are not included).
    pub fn grad(&self, name: &str) -> Option<Tensor> {
        let s = &self.slots[self.index_of(name)?];
        s.accumulated().map(|g| tch::no_grad(|| g.copy()))
    }

    /// Clears the accumulators (their buffers are kept for the next step) and zeroes every
    /// parameter's `.grad`.
    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            s.has_grad = false;
            s.param.zero_grad();
        }
    }

    /// Global L2 norm of all accumulated gradients; when it exceeds `max_norm` (> 0) the
    /// gradients are scaled down to it. Returns the norm before clipping (non-finite when a
    /// gradient is).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        self.absorb_param_grads();
        let grads: Vec<Tensor> = self
            .slots
            .iter()
            .filter_map(|s| s.accumulated().map(Tensor::shallow_clone))
            .collect();
        norm_and_clip(&grads, max_norm)
    }

    /// One AdamW step with learning rate `lr` on the accumulated gradients. Parameters that
    /// got no gradient since [`AdamW::zero_grad`] are left alone, as in PyTorch.
    pub fn step(&mut self, lr: f64) {
        self.absorb_param_grads();
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
        let offload = self.offload;
        tch::no_grad(|| {
            for s in &mut self.slots {
                let Some(acc) = s.accumulated() else {
                    continue;
                };
                let g = if offload {
                    acc.to_device(Device::Cpu)
                } else {
                    acc.shallow_clone()
                };
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

    /// Bytes of optimizer state (master weights, moments, allocated accumulators) in device
    /// memory and in host memory: `(device_bytes, host_bytes)`. A CPU model's state is all
    /// host memory.
    pub fn state_bytes(&self) -> (i64, i64) {
        let (mut device, mut host) = (0i64, 0i64);
        for s in &self.slots {
            let tensors = [Some(&s.m), Some(&s.v), s.master.as_ref(), s.acc.as_ref()];
            for t in tensors.into_iter().flatten() {
                let bytes = (t.numel() * t.kind().elt_size_in_bytes()) as i64;
                if t.device() == Device::Cpu {
                    host += bytes;
                } else {
                    device += bytes;
                }
            }
        }
        (device, host)
    }

    /// Whether the state file holds a master copy for this slot: half-precision parameters
    /// only (a float32 parameter equals its offloaded master, and is in the model file).
    fn saves_master(s: &Slot) -> bool {
        s.master.is_some() && s.param.kind() != Kind::Float
    }

    /// Writes the state as one safetensors file: `m.<name>`, `v.<name>`, `master.<name>`
    /// (half-precision parameters), `step`. Tensors are copied to host memory one at a time
    /// while being written; the file appears under its name only once complete.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let mut tensors = vec![("step".to_string(), Tensor::from_slice(&[self.steps as i64]))];
        for s in &self.slots {
            tensors.push((format!("m.{}", s.name), s.m.shallow_clone()));
            tensors.push((format!("v.{}", s.name), s.v.shallow_clone()));
            if let (true, Some(master)) = (Self::saves_master(s), &s.master) {
                tensors.push((format!("master.{}", s.name), master.shallow_clone()));
            }
        }
        save_tensors(&tensors, path)?;
        Ok(())
    }

    /// Restores a state written by [`AdamW::save`] (with or without offload) for the same
    /// parameters. Names, shapes and kinds are checked against the file's header before any
    /// state changes (the error names the file and the tensor); tensors are then read one at
    /// a time. An offloaded float32 parameter's host master is set from the parameter.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let err = |message: String| OptimError::State {
            path: path.display().to_string(),
            message,
        };
        let mut file = SafetensorsReader::open(path)?;
        let entries = file.entries();
        let step = entries
            .get("step")
            .ok_or_else(|| err("no `step` tensor (not an optimizer state file)".into()))?;
        if step.shape.iter().product::<i64>() != 1 {
            return Err(err(format!(
                "tensor `step` has shape {:?}, expected one value",
                step.shape
            )));
        }
        // File tensor name -> (slot, which state tensor: 0 = m, 1 = v, 2 = master).
        let mut wanted: HashMap<String, (usize, u8)> = HashMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            let mut keys = vec![(format!("m.{}", s.name), 0u8), (format!("v.{}", s.name), 1)];
            if Self::saves_master(s) {
                keys.push((format!("master.{}", s.name), 2));
            }
            for (key, which) in keys {
                let e = entries
                    .get(&key)
                    .ok_or_else(|| err(format!("missing tensor `{key}`")))?;
                if e.shape != s.param.size() {
                    return Err(err(format!(
                        "tensor `{key}` has shape {:?}, the parameter has {:?}",
                        e.shape,
                        s.param.size()
                    )));
                }
                if !is_float(e.kind) {
                    return Err(err(format!(
                        "tensor `{key}` has kind {:?}, expected a float kind",
                        e.kind
                    )));
                }
                wanted.insert(key, (i, which));
            }
        }
        if let Some(extra) = entries
            .keys()
            .find(|k| k.as_str() != "step" && !wanted.contains_key(*k))
        {
            return Err(err(format!(
                "tensor `{extra}` matches no parameter (state of a different model?)"
            )));
        }
        let steps = file.read("step")?.int64_value(&[0]);
        let steps =
            u64::try_from(steps).map_err(|_| err(format!("negative step count {steps}")))?;
        for name in file.names_in_file_order() {
            let Some(&(i, which)) = wanted.get(&name) else {
                continue;
            };
            let src = file.read(&name)?;
            let s = &mut self.slots[i];
            let dst = match which {
                0 => &mut s.m,
                1 => &mut s.v,
                _ => s.master.as_mut().expect("slot with a saved master"),
            };
            tch::no_grad(|| dst.f_copy_(&src))?;
        }
        tch::no_grad(|| {
            for s in &mut self.slots {
                if let (false, Some(master)) = (Self::saves_master(s), &mut s.master) {
                    master.copy_(&s.param);
                }
            }
        });
        self.steps = steps;
        Ok(())
    }
}

/// Global L2 norm of `grads` (computed in float64 over float32 squares); when
/// `max_norm > 0` and the norm exceeds it, scales every gradient in place by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping; a non-finite norm leaves the
/// gradients as they are.
fn norm_and_clip(grads: &[Tensor], max_norm: f64) -> f64 {
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
            for g in grads {
                let _ = g.shallow_clone().g_mul_scalar_(coef);
            }
        });
    }
    total
}

/// Global L2 norm of the `.grad` of `params` (computed in float64 over float32 squares);
/// when `max_norm > 0` and the norm exceeds it, scales every gradient by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping. A non-finite norm leaves
/// the gradients as they are: the caller skips that step. ([`AdamW::clip_grad_norm`] does
/// the same on the optimizer's float32 accumulators.)
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    norm_and_clip(&grads, max_norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
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
        let after = opt.clip_grad_norm(0.0);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        opt.zero_grad();
        (&w * f64::NAN).sum(Kind::Float).backward();
        assert!(!opt.clip_grad_norm(1.0).is_finite());
    }

    #[test]
    fn free_clip_grad_norm_works_on_param_grads() {
        let (_vs, w) = make_param(1);
        (&w * 10.0).sum(Kind::Float).backward();
        let norm = clip_grad_norm(&[w.shallow_clone()], 1.0);
        assert!((norm - 1200f64.sqrt()).abs() < 1e-4, "{norm}");
        let after = clip_grad_norm(&[w.shallow_clone()], 0.0);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
    }

    fn bf16_param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn bf16_gradients_accumulate_in_float32() {
        let w = bf16_param(&[1.0; 3]);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        // 1 + 1000 * 1e-3: each 1e-3 is below half of bf16's spacing at 1 (2^-7), so a bf16
        // sum would stay at 1.
        let tiny = Tensor::from_slice(&[1e-3f32; 3]).to_kind(Kind::BFloat16);
        let tiny_f32 = tiny.to_kind(Kind::Float).double_value(&[0]);
        let want = 1.0 + 1000.0 * tiny_f32;
        opt.add_grad("w", &Tensor::ones([3], (Kind::BFloat16, Device::Cpu)))
            .unwrap();
        for _ in 0..1000 {
            opt.add_grad("w", &tiny).unwrap();
        }
        let g = opt.grad("w").unwrap();
        assert_eq!(g.kind(), Kind::Float);
        assert!(max_abs_diff(&g, &Tensor::full([3], want, (Kind::Float, Device::Cpu))) < 1e-4);

        // The same through backward(): each bf16 `.grad` is absorbed into the float32 sum.
        opt.zero_grad();
        assert!(opt.grad("w").is_none());
        (&w * 1.0).sum(Kind::Float).backward();
        opt.absorb_param_grads();
        for _ in 0..1000 {
            (&w * tiny_f32).sum(Kind::Float).backward();
            opt.absorb_param_grads();
        }
        let g = opt.grad("w").unwrap();
        assert!(
            max_abs_diff(&g, &Tensor::full([3], want, (Kind::Float, Device::Cpu))) < 1e-4,
            "{g}"
        );
    }

    #[test]
    fn added_and_backward_gradients_sum() {
        let (vs, w) = make_param(2);
        let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
        let g1 = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let g2 = Tensor::randn([3, 4], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        (&w * &g1).sum(Kind::Float).backward();
        let i = opt.index_of("w").unwrap();
        opt.add_grad_at(i, &g2);
        // Not yet absorbed: only g2 is in the accumulator.
        assert!(opt.grad("w").unwrap().equal(&g2.to_kind(Kind::Float)));
        opt.absorb_param_grads();
        let want = &g1 + g2.to_kind(Kind::Float);
        assert!(max_abs_diff(&opt.grad("w").unwrap(), &want) < 1e-6);
        assert_eq!(w.grad().abs().max().double_value(&[]), 0.0, ".grad zeroed");
        // Absorbing again adds nothing; another backward adds g1 once more.
        opt.absorb_param_grads();
        (&w * &g1).sum(Kind::Float).backward();
        opt.absorb_param_grads();
        let want = want + &g1;
        assert!(max_abs_diff(&opt.grad("w").unwrap(), &want) < 1e-6);
        // zero_grad clears; the next add starts from zero with the same buffer.
        let buffer = opt.slots[i].acc.as_ref().unwrap().data_ptr();
        opt.zero_grad();
        assert!(opt.grad("w").is_none());
        opt.add_grad("w", &g1).unwrap();
        assert!(opt.grad("w").unwrap().equal(&g1));
        assert_eq!(opt.slots[i].acc.as_ref().unwrap().data_ptr(), buffer);
    }

    #[test]
    fn step_uses_accumulated_gradients_and_skips_params_without_one() {
        let a = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(
            vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            cfg,
        );
        opt.add_grad("a", &Tensor::ones([4], (Kind::Float, Device::Cpu)))
            .unwrap();
        opt.step(0.1);
        // First Adam step moves by lr * sign(g) (plus decay); b got no gradient.
        let moved = 1.0 - a.double_value(&[0]);
        assert!((moved - (0.1 + 0.01)).abs() < 1e-5, "{moved}");
        assert!(b.equal(&Tensor::ones([4], (Kind::Float, Device::Cpu))));
    }

    /// Runs `steps` AdamW steps on a quadratic loss from the same start, with or without
    /// offload; returns the parameter and the optimizer.
    fn run_quadratic(kind: Kind, offload: bool, steps: usize) -> (Tensor, AdamW) {
        let device = Device::cuda_if_available();
        tch::manual_seed(11);
        let w = Tensor::randn([5, 3], (Kind::Float, Device::Cpu))
            .to_kind(kind)
            .to_device(device)
            .set_requires_grad(true);
        let target = Tensor::full([5, 3], 0.25, (Kind::Float, device));
        let cfg = AdamWConfig {
            weight_decay: 0.05,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), w.shallow_clone())], cfg).with_offload(offload);
        for _ in 0..steps {
            opt.zero_grad();
            quadratic_loss(&w.to_kind(Kind::Float), &target).backward();
            opt.clip_grad_norm(1.0);
            opt.step(0.01);
        }
        (w, opt)
    }

    #[test]
    fn offload_gives_the_same_weights_with_state_on_the_host() {
        for kind in [Kind::Float, Kind::BFloat16] {
            let (w_dev, opt_dev) = run_quadratic(kind, false, 5);
            let (w_off, opt_off) = run_quadratic(kind, true, 5);
            assert!(!opt_dev.offloaded() && opt_off.offloaded());
            assert_eq!(w_off.kind(), kind);
            let start = run_quadratic(kind, false, 0).0;
            assert!(
                max_abs_diff(&w_dev, &start) > 1e-3,
                "{kind:?}: did not move"
            );
            if w_dev.device() == Device::Cpu {
                assert!(w_dev.equal(&w_off), "{kind:?}: offload changed the weights");
            } else {
                assert!(max_abs_diff(&w_dev, &w_off) < 1e-5, "{kind:?}");
            }
            let s = &opt_off.slots[0];
            let master = s.master.as_ref().expect("offloaded master");
            for t in [&s.m, &s.v, master] {
                assert_eq!(t.device(), Device::Cpu);
                assert_eq!(t.kind(), Kind::Float);
            }
            assert_eq!(s.acc.as_ref().unwrap().device(), w_off.device());
            assert!(max_abs_diff(master, &w_off) < 1e-2);
            // Device memory holds only the accumulator; the host holds m, v and the master.
            let n = 15 * 4;
            let (dev, host) = opt_off.state_bytes();
            if w_off.device() == Device::Cpu {
                assert_eq!((dev, host), (0, 4 * n), "{kind:?}");
            } else {
                assert_eq!((dev, host), (n, 3 * n), "{kind:?}");
            }
            let (dev, host) = opt_dev.state_bytes();
            // Without offload: m, v, accumulator, and the master for bf16 only.
            let want = if kind == Kind::Float { 3 * n } else { 4 * n };
            assert_eq!(dev + host, want, "{kind:?}");
        }
    }

    #[test]
    fn state_saved_with_offload_loads_without_and_back() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [Kind::Float, Kind::BFloat16] {
            for offload_first in [true, false] {
                let path = dir.path().join("opt.safetensors");
                // Uninterrupted: 6 steps.
                let (w_full, _) = run_quadratic(kind, offload_first, 6);
                // 3 steps, save, then a new optimizer of the other mode loads and does 3 more.
                let (w, opt) = run_quadratic(kind, offload_first, 3);
                opt.save(&path).unwrap();
                let names: Vec<String> = Tensor::read_safetensors(&path)
                    .unwrap()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                assert_eq!(
                    names.contains(&"master.w".to_string()),
                    kind != Kind::Float,
                    "{names:?}"
                );
                let mut resumed = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg)
                    .with_offload(!offload_first);
                resumed.load(&path).unwrap();
                assert_eq!(resumed.steps(), 3);
                let target = Tensor::full([5, 3], 0.25, (Kind::Float, w.device()));
                for _ in 0..3 {
                    resumed.zero_grad();
                    quadratic_loss(&w.to_kind(Kind::Float), &target).backward();
                    resumed.clip_grad_norm(1.0);
                    resumed.step(0.01);
                }
                if w.device() == Device::Cpu {
                    assert!(w.equal(&w_full), "{kind:?} offload first {offload_first}");
                } else {
                    assert!(max_abs_diff(&w, &w_full) < 1e-5);
                }
            }
        }
    }

    #[test]
    fn add_grad_errors_name_the_parameter() {
        let (vs, _w) = make_param(1);
        let mut opt = AdamW::for_var_store(&vs, AdamWConfig::default());
        let err = opt
            .add_grad("nope", &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`"), "{err}");
        let err = opt
            .add_grad("w", &Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`w`") && err.contains("[4, 3]"), "{err}");
        let err = opt
            .add_grad("w", &Tensor::zeros([3, 4], (Kind::Int64, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`w`") && err.contains("Int64"), "{err}");
        assert!(opt.grad("w").is_none());
        assert_eq!(opt.index_of("nope"), None);
    }

    #[test]
    fn clipping_scales_the_float32_accumulators() {
        let w = bf16_param(&[0.0; 12]);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig::default(),
        );
        // 10.001 is not a bf16 value: the norm must come from the float32 sum.
        opt.add_grad("w", &Tensor::full([12], 10.001, (Kind::Float, Device::Cpu)))
            .unwrap();
        let norm = opt.clip_grad_norm(1.0);
        let want = 10.001f32 as f64 * 12f64.sqrt();
        assert!((norm - want).abs() < 1e-5, "{norm} vs {want}");
        let g = opt.grad("w").unwrap();
        let after = g.square().sum(Kind::Double).sqrt().double_value(&[]);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        assert!((opt.clip_grad_norm(0.0) - after).abs() < 1e-12);
    }

    #[test]
    fn save_load_round_trips_state_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        for kind in [Kind::Float, Kind::BFloat16] {
            let (w, opt) = run_quadratic(kind, false, 4);
            opt.save(&path).unwrap();
            let mut back = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg);
            back.load(&path).unwrap();
            assert_eq!(back.steps(), 4);
            let (a, b) = (&opt.slots[0], &back.slots[0]);
            assert!(a.m.equal(&b.m) && a.v.equal(&b.v), "{kind:?}");
            assert_eq!(a.master.is_some(), b.master.is_some());
            if let (Some(x), Some(y)) = (&a.master, &b.master) {
                assert!(x.equal(y), "{kind:?} master");
            }
            // The file is ordinary safetensors: tch's reader sees the same tensors.
            let saved: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(saved["step"].int64_value(&[0]), 4);
            assert!(saved["m.w"].equal(&a.m.to_device(Device::Cpu)));
            assert!(saved["v.w"].equal(&a.v.to_device(Device::Cpu)));
        }
    }

    #[test]
    fn truncated_state_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let (w, opt) = run_quadratic(Kind::BFloat16, false, 2);
        opt.save(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut fresh = AdamW::new(vec![("w".into(), w.shallow_clone())], opt.cfg);
        let err = fresh.load(&path).unwrap_err().to_string();
        assert!(
            err.contains("optimizer.safetensors") && err.contains("truncated"),
            "{err}"
        );
        assert_eq!(fresh.steps(), 0);
    }
}
