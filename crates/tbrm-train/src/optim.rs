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

mod dp;

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
    /// A collective of data-parallel training failed (a peer died or hung).
    #[error(transparent)]
    Dist(#[from] tbrm_dist::DistError),
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
    /// Data-parallel layout (bucketed accumulators, ZeRO-1 shards), see `optim/dp.rs`.
    dp: Option<dp::DpState>,
}

/// Bias corrections and hyper-parameters of one AdamW step.
#[derive(Debug, Clone, Copy)]
struct StepConsts {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    bias2_sqrt: f64,
    step_size: f64,
}

impl StepConsts {
    fn new(cfg: &AdamWConfig, lr: f64, t: u64) -> Self {
        let t = t as i32;
        StepConsts {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            bias2_sqrt: (1.0 - cfg.beta2.powi(t)).sqrt(),
            step_size: lr / (1.0 - cfg.beta1.powi(t)),
        }
    }
}

/// The element-wise AdamW update of `target` (float32 weights) with gradient `g`; one
/// function so the replicated and the sharded (ZeRO-1) optimizer compute the same numbers.
fn adam_update(m: &mut Tensor, v: &mut Tensor, g: &Tensor, target: &mut Tensor, c: &StepConsts) {
    let _ = m.lerp_(g, 1.0 - c.beta1);
    let _ = v.g_mul_scalar_(c.beta2);
    let _ = v.g_add_(&(g.square() * (1.0 - c.beta2)));
    let denom = v.sqrt() / c.bias2_sqrt + c.eps;
    let update = &*m / denom * c.step_size;
    if c.weight_decay != 0.0 {
        let _ = target.g_mul_scalar_(1.0 - c.lr * c.weight_decay);
    }
    let _ = target.g_sub_(&update);
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
            dp: None,
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
    /// got no gradient since [`AdamW::zero_grad`] are left alone, as in PyTorch. Panics on a
    /// ZeRO-1 optimizer, whose step is a collective ([`AdamW::step_dp`]).
    pub fn step(&mut self, lr: f64) {
        assert!(!self.is_sharded(), "a ZeRO-1 optimizer steps with step_dp");
        self.absorb_param_grads();
        self.steps += 1;
        let c = StepConsts::new(&self.cfg, lr, self.steps);
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
                let target = match &mut s.master {
                    Some(master) => master,
                    None => &mut s.param,
                };
                adam_update(&mut s.m, &mut s.v, &g, target, &c);
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
        let mut tensors: Vec<&Tensor> = Vec::new();
        for s in &self.slots {
            tensors.extend(
                [Some(&s.m), Some(&s.v), s.master.as_ref(), s.acc.as_ref()]
                    .into_iter()
                    .flatten(),
            );
        }
        if let Some(dp) = &self.dp {
            tensors.extend(dp.shard_tensors(true));
        }
        for t in tensors {
            let bytes = (t.numel() * t.kind().elt_size_in_bytes()) as i64;
            if t.device() == Device::Cpu {
                host += bytes;
            } else {
                device += bytes;
            }
        }
        (device, host)
    }

    /// Bytes of the moments and master weights this process keeps: the part ZeRO-1 shards
    /// (gradient accumulators not included).
    pub fn moment_bytes(&self) -> i64 {
        let mut tensors: Vec<&Tensor> = Vec::new();
        for s in &self.slots {
            tensors.extend(
                [Some(&s.m), Some(&s.v), s.master.as_ref()]
                    .into_iter()
                    .flatten(),
            );
        }
        if let Some(dp) = &self.dp {
            tensors.extend(dp.shard_tensors(false));
        }
        tensors
            .iter()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as i64)
            .sum()
    }

    /// Whether the state file holds a master copy for this slot: half-precision parameters
    /// only (a float32 parameter equals its offloaded master, and is in the model file).
    fn saves_master(s: &Slot) -> bool {
        s.param.kind() != Kind::Float
    }

    /// Writes the state as one safetensors file: `m.<name>`, `v.<name>`, `master.<name>`
    /// (half-precision parameters), `step`. Tensors are copied to host memory one at a time
    /// while being written; the file appears under its name only once complete. A ZeRO-1
    /// optimizer holds only its shard: save it with [`AdamW::state_for_save`] (a collective).
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        if self.is_sharded() {
            return Err(OptimError::State {
                path: path.display().to_string(),
                message: "a ZeRO-1 optimizer holds only its shard; gather it with state_for_save"
                    .into(),
            });
        }
        save_tensors(&self.local_state(), path)?;
        Ok(())
    }

    /// The state as [`AdamW::save`] writes it (tensors where they live; copied when written).
    fn local_state(&self) -> Vec<(String, Tensor)> {
        let mut tensors = vec![("step".to_string(), Tensor::from_slice(&[self.steps as i64]))];
        for s in &self.slots {
            tensors.push((format!("m.{}", s.name), s.m.shallow_clone()));
            tensors.push((format!("v.{}", s.name), s.v.shallow_clone()));
            if let (true, Some(master)) = (Self::saves_master(s), &s.master) {
                tensors.push((format!("master.{}", s.name), master.shallow_clone()));
            }
        }
        tensors
    }

    /// Restores a state written by [`AdamW::save`] (with or without offload) for the same
    /// parameters. Names, shapes and kinds are checked against the file's header before any
    /// state changes (the error names the file and the tensor); tensors are then read one at
    /// a time. An offloaded float32 parameter's host master is set from the parameter.
    /// A ZeRO-1 optimizer reads only its shard of every tensor.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        if self.is_sharded() {
            return self.load_sharded(path);
        }
        let (mut file, wanted, steps) = self.open_state(path)?;
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

    /// Opens a state file and checks it against the parameters before any state changes:
    /// returns the reader, file tensor name -> (slot, 0 = m / 1 = v / 2 = master), and the step.
    #[allow(clippy::type_complexity)]
    fn open_state(
        &self,
        path: &Path,
    ) -> Result<(SafetensorsReader, HashMap<String, (usize, u8)>, u64), OptimError> {
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
        Ok((file, wanted, steps))
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
mod tests;
