//! Data-parallel AdamW: gradient accumulators packed into flat float32 buckets that are
//! reduced across ranks with one collective each, and optionally ZeRO-1 sharding of the
//! moments and master weights (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
//! Trillion Parameter Models", arXiv:1910.02054, stage 1).
//!
//! Buckets: the parameters, in the optimizer's (name) order, are cut into consecutive groups
//! of about `bucket_bytes` of float32 gradient; each group's accumulators become views into
//! one flat buffer, so a bucket is reduced in place without copies (PyTorch DDP's gradient
//! buckets, Li et al., arXiv:2006.15704). Every rank builds the same layout from the same
//! parameters, which is what lets a flat buffer stand for the same elements everywhere.
//!
//! ZeRO-1: each bucket is padded to a multiple of the world size and rank r owns its r-th
//! chunk. Gradients are reduce-scattered (each rank receives only the sum of its chunk), the
//! global norm is the all-reduced sum of the chunks' squares, each rank runs AdamW on its
//! chunk (the same element-wise arithmetic as the replicated optimizer, `adam_update`), and the
//! updated chunks are all-gathered back into the bucket buffer and copied into the parameters.
//! Only the moments and master weights are sharded: every rank still holds the full
//! accumulators. Master weights exist where the replicated optimizer has them (half-precision
//! parameters, or offload); float32 parameters are updated in place through views.
//!
//! Saved state is always complete and in the replicated format ([`AdamW::state_for_save`]
//! gathers the shards to rank 0), so a run resumes with or without ZeRO-1 and with any world
//! size; a sharded optimizer loads its own chunk of each tensor from that file.

use std::path::Path;

use tbrm_dist::ProcessGroup;
use tch::{Device, Kind, Tensor};

use super::{adam_update, AdamW, OptimError, StepConsts};

/// One parameter's place in a bucket's flat buffer.
#[derive(Debug, Clone, Copy)]
struct Seg {
    slot: usize,
    offset: i64,
    numel: i64,
}

/// This rank's part of a bucket under ZeRO-1.
struct Shard {
    /// Reduce-scatter output: the summed gradient of the owned chunk (on the bucket's device).
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    /// float32 weights of the chunk, when the parameters are not float32 or state is offloaded.
    master: Option<Tensor>,
}

struct Bucket {
    /// The accumulators of `segs`, back to back; under ZeRO-1 zero-padded to `chunk * world`.
    flat: Tensor,
    segs: Vec<Seg>,
    /// Elements each rank owns (ZeRO-1).
    chunk: i64,
    shard: Option<Shard>,
}

/// The data-parallel layout of an [`AdamW`].
pub(crate) struct DpState {
    rank: usize,
    world: usize,
    buckets: Vec<Bucket>,
    /// The device small collectives (flags, norms) run on: the accumulators' device.
    comm_device: Device,
}

impl DpState {
    fn zero1(&self) -> bool {
        self.buckets.iter().any(|b| b.shard.is_some())
    }

    /// The shard tensors, with or without the gradient chunks (for memory accounting).
    pub(super) fn shard_tensors(&self, with_grad: bool) -> Vec<&Tensor> {
        let mut out = Vec::new();
        for s in self.buckets.iter().filter_map(|b| b.shard.as_ref()) {
            out.extend([&s.m, &s.v]);
            out.extend(s.master.as_ref());
            if with_grad {
                out.push(&s.grad);
            }
        }
        out
    }
}

/// The overlap of parameter segment `seg` with the owned flat range `[lo, lo + chunk)`:
/// `(offset in the chunk, offset in the parameter, length)`.
fn owned(seg: &Seg, lo: i64, chunk: i64) -> Option<(i64, i64, i64)> {
    let start = seg.offset.max(lo);
    let end = (seg.offset + seg.numel).min(lo + chunk);
    (start < end).then(|| (start - lo, start - seg.offset, end - start))
}

fn flat_param(t: &Tensor) -> Tensor {
    t.view([-1])
}

impl AdamW {
    /// Whether the moments are sharded across ranks (ZeRO-1).
    pub fn is_sharded(&self) -> bool {
        self.dp.as_ref().is_some_and(DpState::zero1)
    }

    /// Prepares this optimizer for data-parallel training as rank `rank` of `world`: the
    /// gradient accumulators become views into flat buckets of about `bucket_bytes`, and with
    /// `zero1` this rank keeps the moments and master weights only for its chunk of each
    /// bucket (state taken over from the replicated one, so conversion may follow a load).
    /// Call after [`AdamW::with_offload`], before the first gradient.
    pub fn enable_data_parallel(
        &mut self,
        rank: usize,
        world: usize,
        bucket_bytes: usize,
        zero1: bool,
    ) {
        let capacity = (bucket_bytes / 4).max(1) as i64;
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut filled = 0i64;
        for (i, s) in self.slots.iter().enumerate() {
            let n = s.param.numel() as i64;
            let same_device = groups
                .last()
                .and_then(|g| g.first())
                .is_some_and(|&j| self.slots[j].param.device() == s.param.device());
            if !same_device || filled + n > capacity {
                groups.push(Vec::new());
                filled = 0;
            }
            groups.last_mut().expect("a group").push(i);
            filled += n;
        }
        let w = world as i64;
        let mut buckets = Vec::with_capacity(groups.len());
        tch::no_grad(|| {
            for group in groups {
                let device = self.slots[group[0]].param.device();
                let total: i64 = group
                    .iter()
                    .map(|&i| self.slots[i].param.numel() as i64)
                    .sum();
                let chunk = if zero1 { (total + w - 1) / w } else { total };
                let len = if zero1 { chunk * w } else { total };
                let flat = Tensor::zeros([len], (Kind::Float, device));
                let mut segs = Vec::with_capacity(group.len());
                let mut offset = 0i64;
                for i in group {
                    let s = &mut self.slots[i];
                    let numel = s.param.numel() as i64;
                    s.acc = Some(
                        flat.narrow(0, offset, numel)
                            .view(s.param.size().as_slice()),
                    );
                    s.has_grad = false;
                    segs.push(Seg {
                        slot: i,
                        offset,
                        numel,
                    });
                    offset += numel;
                }
                let shard =
                    zero1.then(|| self.make_shard(&segs, rank as i64 * chunk, chunk, device));
                buckets.push(Bucket {
                    flat,
                    segs,
                    chunk,
                    shard,
                });
            }
        });
        if zero1 {
            for s in &mut self.slots {
                s.m = Tensor::zeros([0], (Kind::Float, Device::Cpu));
                s.v = Tensor::zeros([0], (Kind::Float, Device::Cpu));
                s.master = None;
            }
        }
        let comm_device = self.slots.first().map_or(Device::Cpu, |s| s.param.device());
        self.dp = Some(DpState {
            rank,
            world,
            buckets,
            comm_device,
        });
    }

    /// This rank's chunk `[lo, lo + chunk)` of a bucket, filled from the replicated state.
    fn make_shard(&self, segs: &[Seg], lo: i64, chunk: i64, device: Device) -> Shard {
        let state_device = if self.offload { Device::Cpu } else { device };
        let zeros = || Tensor::zeros([chunk], (Kind::Float, state_device));
        let (m, v) = (zeros(), zeros());
        let needs_master = self.offload
            || segs
                .iter()
                .any(|g| self.slots[g.slot].param.kind() != Kind::Float);
        let mut master = needs_master.then(zeros);
        for seg in segs {
            let Some((at, from, n)) = owned(seg, lo, chunk) else {
                continue;
            };
            let s = &self.slots[seg.slot];
            m.narrow(0, at, n)
                .copy_(&flat_param(&s.m).narrow(0, from, n));
            v.narrow(0, at, n)
                .copy_(&flat_param(&s.v).narrow(0, from, n));
            if let Some(master) = &mut master {
                let src = s.master.as_ref().unwrap_or(&s.param);
                master
                    .narrow(0, at, n)
                    .copy_(&flat_param(src).narrow(0, from, n));
            }
        }
        Shard {
            grad: Tensor::zeros([chunk], (Kind::Float, device)),
            m,
            v,
            master,
        }
    }

    fn dp_state(&self) -> &DpState {
        self.dp.as_ref().expect("enable_data_parallel() was called")
    }

    /// Sums the accumulated gradients over ranks (a collective: every rank calls it at the
    /// same point). A parameter counts as having a gradient when any rank gave it one.
    /// Replicated: every rank ends with the summed gradients. ZeRO-1: each rank receives the
    /// sum of its chunks only.
    pub fn reduce_gradients(&mut self, pg: &ProcessGroup) -> Result<(), OptimError> {
        self.absorb_param_grads();
        let dp = self.dp.as_ref().expect("enable_data_parallel() was called");
        let flags: Vec<f32> = self
            .slots
            .iter()
            .map(|s| f32::from(u8::from(s.has_grad)))
            .collect();
        let flags = Tensor::from_slice(&flags).to_device(dp.comm_device);
        pg.all_reduce_sum(&flags)?;
        let any = Vec::<f32>::try_from(flags.to_device(Device::Cpu))?;
        tch::no_grad(|| {
            for s in self.slots.iter_mut().filter(|s| !s.has_grad) {
                if let Some(acc) = &mut s.acc {
                    let _ = acc.zero_();
                }
            }
        });
        for b in &dp.buckets {
            match &b.shard {
                Some(shard) => pg.reduce_scatter_sum(&b.flat, &shard.grad)?,
                None => pg.all_reduce_sum(&b.flat)?,
            }
        }
        for (s, any) in self.slots.iter_mut().zip(any) {
            s.has_grad = any > 0.0;
        }
        Ok(())
    }

    /// [`AdamW::clip_grad_norm`] after [`AdamW::reduce_gradients`]: the global norm of the
    /// summed gradients (under ZeRO-1 a collective over the chunks' squares).
    pub fn clip_grad_norm_dp(
        &mut self,
        pg: &ProcessGroup,
        max_norm: f64,
    ) -> Result<f64, OptimError> {
        if !self.is_sharded() {
            return Ok(self.clip_grad_norm(max_norm));
        }
        let dp = self.dp_state();
        let local: f64 = tch::no_grad(|| {
            dp.buckets
                .iter()
                .filter_map(|b| b.shard.as_ref())
                .map(|s| s.grad.square().sum(Kind::Double).double_value(&[]))
                .sum()
        });
        let squares = Tensor::from_slice(&[local]).to_device(dp.comm_device);
        pg.all_reduce_sum(&squares)?;
        let total = squares.double_value(&[0]).sqrt();
        if max_norm > 0.0 && total.is_finite() && total > max_norm {
            let coef = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for s in dp.buckets.iter().filter_map(|b| b.shard.as_ref()) {
                    let _ = s.grad.shallow_clone().g_mul_scalar_(coef);
                }
            });
        }
        Ok(total)
    }

    /// [`AdamW::step`] after [`AdamW::reduce_gradients`]. Under ZeRO-1 a collective: each
    /// rank updates its chunks, then the chunks are all-gathered into every rank's parameters.
    pub fn step_dp(&mut self, pg: &ProcessGroup, lr: f64) -> Result<(), OptimError> {
        if !self.is_sharded() {
            self.step(lr);
            return Ok(());
        }
        self.steps += 1;
        let c = StepConsts::new(&self.cfg, lr, self.steps);
        let offload = self.offload;
        let dp = self.dp.as_mut().expect("enable_data_parallel() was called");
        let rank = dp.rank as i64;
        for b in &mut dp.buckets {
            let lo = rank * b.chunk;
            let shard = b.shard.as_mut().expect("a ZeRO-1 bucket has a shard");
            tch::no_grad(|| {
                for seg in &b.segs {
                    let s = &self.slots[seg.slot];
                    let Some((at, from, n)) = owned(seg, lo, b.chunk).filter(|_| s.has_grad) else {
                        continue;
                    };
                    let g = shard.grad.narrow(0, at, n);
                    let g = if offload { g.to_device(Device::Cpu) } else { g };
                    let mut target = match &shard.master {
                        Some(master) => master.narrow(0, at, n),
                        None => flat_param(&s.param).narrow(0, from, n),
                    };
                    let (mut m, mut v) = (shard.m.narrow(0, at, n), shard.v.narrow(0, at, n));
                    adam_update(&mut m, &mut v, &g, &mut target, &c);
                }
            });
            // The owned chunk as it now is, gathered into every rank's copy of the bucket.
            let mine = tch::no_grad(|| match &shard.master {
                Some(master) => master.to_device(b.flat.device()),
                None => {
                    let out = Tensor::zeros([b.chunk], (Kind::Float, b.flat.device()));
                    for seg in &b.segs {
                        if let Some((at, from, n)) = owned(seg, lo, b.chunk) {
                            let p = flat_param(&self.slots[seg.slot].param);
                            out.narrow(0, at, n).copy_(&p.narrow(0, from, n));
                        }
                    }
                    out
                }
            });
            pg.all_gather_into(&mine, &b.flat)?;
            tch::no_grad(|| {
                for seg in &b.segs {
                    let mut p = flat_param(&self.slots[seg.slot].param);
                    p.copy_(&b.flat.narrow(0, seg.offset, seg.numel));
                }
            });
        }
        Ok(())
    }

    /// The complete state in [`AdamW::save`]'s format (`step`, `m.*`, `v.*`, `master.*`),
    /// to be written by rank 0. Replicated: no communication, `Some` everywhere. ZeRO-1: a
    /// collective gathering every shard; `Some` (host tensors) on rank 0 only.
    pub fn state_for_save(
        &self,
        pg: &ProcessGroup,
    ) -> Result<Option<Vec<(String, Tensor)>>, OptimError> {
        if !self.is_sharded() {
            return Ok(Some(self.local_state()));
        }
        let dp = self.dp_state();
        let main = dp.rank == 0;
        // Per slot: m, v, master (half-precision parameters only).
        let mut parts: Vec<[Option<Tensor>; 3]> =
            (0..self.slots.len()).map(|_| [None, None, None]).collect();
        for b in &dp.buckets {
            let shard = b.shard.as_ref().expect("a ZeRO-1 bucket has a shard");
            let sources = [Some(&shard.m), Some(&shard.v), shard.master.as_ref()];
            for (which, src) in sources.into_iter().enumerate() {
                let Some(src) = src else { continue };
                let full =
                    Tensor::zeros([b.chunk * dp.world as i64], (Kind::Float, b.flat.device()));
                pg.all_gather_into(&src.to_device(b.flat.device()), &full)?;
                if !main {
                    continue;
                }
                for seg in &b.segs {
                    let s = &self.slots[seg.slot];
                    if which == 2 && !Self::saves_master(s) {
                        continue;
                    }
                    let t = full
                        .narrow(0, seg.offset, seg.numel)
                        .view(s.param.size().as_slice());
                    parts[seg.slot][which] = Some(t.to_device(Device::Cpu));
                }
            }
        }
        if !main {
            return Ok(None);
        }
        let mut out = vec![("step".to_string(), Tensor::from_slice(&[self.steps as i64]))];
        for (s, [m, v, master]) in self.slots.iter().zip(parts) {
            let missing = || OptimError::Param {
                name: s.name.clone(),
                message: "state missing from the gathered shards".into(),
            };
            out.push((format!("m.{}", s.name), m.ok_or_else(missing)?));
            out.push((format!("v.{}", s.name), v.ok_or_else(missing)?));
            if Self::saves_master(s) {
                out.push((format!("master.{}", s.name), master.ok_or_else(missing)?));
            }
        }
        Ok(Some(out))
    }

    /// Writes state from [`AdamW::state_for_save`] as one safetensors file.
    pub fn write_state(tensors: &[(String, Tensor)], path: &Path) -> Result<(), OptimError> {
        tbrm_model::save_tensors(tensors, path)?;
        Ok(())
    }

    /// [`AdamW::load`] for ZeRO-1: reads this rank's chunk of every tensor from a complete
    /// state file (any world size or none wrote it).
    pub(super) fn load_sharded(&mut self, path: &Path) -> Result<(), OptimError> {
        let (mut file, _, steps) = self.open_state(path)?;
        let dp = self.dp.as_mut().expect("enable_data_parallel() was called");
        for b in &mut dp.buckets {
            let lo = dp.rank as i64 * b.chunk;
            let shard = b.shard.as_mut().expect("a ZeRO-1 bucket has a shard");
            for seg in &b.segs {
                let Some((at, from, n)) = owned(seg, lo, b.chunk) else {
                    continue;
                };
                let s = &self.slots[seg.slot];
                let mut read = |key: String| -> Result<Tensor, OptimError> {
                    Ok(flat_param(&file.read(&key)?.contiguous()).narrow(0, from, n))
                };
                let m = read(format!("m.{}", s.name))?;
                let v = read(format!("v.{}", s.name))?;
                let master = match (&shard.master, Self::saves_master(s)) {
                    (Some(_), true) => Some(read(format!("master.{}", s.name))?),
                    (Some(_), false) => Some(flat_param(&s.param).narrow(0, from, n)),
                    (None, _) => None,
                };
                tch::no_grad(|| -> Result<(), OptimError> {
                    shard.m.narrow(0, at, n).f_copy_(&m)?;
                    shard.v.narrow(0, at, n).f_copy_(&v)?;
                    if let (Some(dst), Some(src)) = (&shard.master, master) {
                        dst.narrow(0, at, n).f_copy_(&src)?;
                    }
                    Ok(())
                })?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamWConfig;
    use std::time::Duration;
    use tbrm_dist::{Backend, Options};

    /// A one-rank Gloo group: the collectives are identities, the bookkeeping is real.
    fn solo_group() -> ProcessGroup {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ProcessGroup::new(Options {
            backend: Backend::Gloo,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            timeout: Duration::from_secs(30),
        })
        .unwrap()
    }

    fn params(kind: Kind) -> Vec<(String, Tensor)> {
        tch::manual_seed(5);
        [("a", vec![3, 4]), ("b", vec![7]), ("c", vec![2, 5])]
            .into_iter()
            .map(|(n, shape)| {
                let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
                    .to_kind(kind)
                    .set_requires_grad(true);
                (n.to_string(), t)
            })
            .collect()
    }

    /// Four steps on a quadratic; `dp`: (bucket bytes, zero1) through the data-parallel path.
    fn train(
        kind: Kind,
        offload: bool,
        dp: Option<(usize, bool)>,
        pg: &ProcessGroup,
    ) -> (Vec<Tensor>, AdamW) {
        let ps = params(kind);
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let shared = ps
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let mut opt = AdamW::new(shared, cfg).with_offload(offload);
        if let Some((bytes, zero1)) = dp {
            opt.enable_data_parallel(0, 1, bytes, zero1);
        }
        for _ in 0..4 {
            opt.zero_grad();
            // "b" gets no gradient: it must stay as it was in both paths.
            for (n, p) in &ps {
                if n != "b" {
                    (p.to_kind(Kind::Float) - 0.5)
                        .square()
                        .sum(Kind::Float)
                        .backward();
                }
            }
            match dp {
                None => {
                    opt.clip_grad_norm(1.0);
                    opt.step(0.05);
                }
                Some(_) => {
                    opt.reduce_gradients(pg).unwrap();
                    opt.clip_grad_norm_dp(pg, 1.0).unwrap();
                    opt.step_dp(pg, 0.05).unwrap();
                }
            }
        }
        (ps.into_iter().map(|(_, t)| t).collect(), opt)
    }

    #[test]
    fn bucketed_and_sharded_steps_equal_the_replicated_optimizer() {
        let pg = solo_group();
        for kind in [Kind::Float, Kind::BFloat16] {
            for offload in [false, true] {
                let (want, plain) = train(kind, offload, None, &pg);
                // 40-byte buckets: "a" (12 floats) alone, "b" + "c" split over buckets.
                for dp in [(40, false), (40, true), (1 << 20, true)] {
                    let (got, opt) = train(kind, offload, Some(dp), &pg);
                    for (w, g) in want.iter().zip(&got) {
                        assert!(w.equal(g), "{kind:?} offload {offload} {dp:?}");
                    }
                    let a = plain.state_for_save(&pg).unwrap().unwrap();
                    let b = opt.state_for_save(&pg).unwrap().unwrap();
                    assert_eq!(a.len(), b.len());
                    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
                        assert_eq!(na, nb);
                        assert!(ta.equal(tb), "{na}: {kind:?} offload {offload} {dp:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn sharded_state_loads_from_a_complete_file() {
        let pg = solo_group();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let (_, plain) = train(Kind::BFloat16, false, None, &pg);
        plain.save(&path).unwrap();
        let mut sharded = AdamW::new(params(Kind::BFloat16), plain.cfg);
        sharded.enable_data_parallel(0, 1, 40, true);
        assert!(sharded.is_sharded());
        assert!(
            sharded.save(&path.with_extension("x")).is_err(),
            "a shard alone is not a state file"
        );
        sharded.load(&path).unwrap();
        assert_eq!(sharded.steps(), 4);
        let (a, b) = (
            plain.local_state(),
            sharded.state_for_save(&pg).unwrap().unwrap(),
        );
        for ((na, ta), (_, tb)) in a.iter().zip(&b) {
            assert!(ta.equal(tb), "{na}");
        }
    }

    #[test]
    fn owned_ranges_tile_the_parameters() {
        // Two parameters of 5 and 4 elements, world 2: chunk 5 (one padding element).
        let segs = [
            Seg {
                slot: 0,
                offset: 0,
                numel: 5,
            },
            Seg {
                slot: 1,
                offset: 5,
                numel: 4,
            },
        ];
        let r0: Vec<_> = segs.iter().filter_map(|s| owned(s, 0, 5)).collect();
        let r1: Vec<_> = segs.iter().filter_map(|s| owned(s, 5, 5)).collect();
        assert_eq!(r0, vec![(0, 0, 5)]);
        assert_eq!(r1, vec![(0, 0, 4)]);
        let r1b: Vec<_> = segs.iter().filter_map(|s| owned(s, 3, 3)).collect();
        assert_eq!(r1b, vec![(0, 3, 2), (2, 0, 1)]);
    }
}
