//! Data-parallel training: one process per GPU (or several CPU processes), joined by a
//! tbrm-dist process group (NCCL on GPUs, Gloo on the CPU), launched like any PyTorch job by
//! `torchrun --nproc-per-node N --no-python tbrm train ...`.
//!
//! What each rank does (details in `docs/distributed.md`):
//! - all ranks draw the same prompt list from the same seeded sampler; rank r generates,
//!   rewards and scores the r-th contiguous share of it ([`Dist::share`]), all `n` rollouts of a
//!   prompt on one rank so GRPO groups stay whole. Samples are keyed by (seed, step, prompt,
//!   occurrence, rollout index), never by rank, so the trajectories are those of one process;
//! - the loss totals are summed over ranks before the update, each rank's gradient is that of
//!   its local sum over the global totals, and the gradients are summed in flat buckets
//!   (`optim/dp.rs`), so the update equals the one-process update on the whole batch up to
//!   float summation order; clipping sees the global norm;
//! - step metrics are sums or batch-weighted means over ranks; held-out evaluation is sharded
//!   and the correct counts summed;
//! - rank 0 alone writes the run folder; a checkpoint is a collective (ZeRO-1 shards are
//!   gathered) that rank 0 writes, and every rank learns whether it succeeded;
//! - off-policy sources work: the replay buffer is kept whole on every rank (the consumed
//!   rollouts are all-gathered), replayed and offline draws are split like prompts, and stale
//!   rollouts stay on the rank that sampled them (the checkpoint holds the whole queue).
//!
//! Every collective waits at most `train.dist_timeout_s`: a rank that died or hangs makes the
//! others stop with an error naming the operation and the step, and the last complete
//! checkpoint stays as it was (checkpoints are written to a temporary folder and renamed).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tbrm_data::Trajectory;
use tbrm_dist::{Backend, DistError, ProcessGroup};
use tch::{Device, Kind, Tensor};

use super::TrainError;
use crate::config::{ConfigError, DeviceChoice, TrainConfig};
use crate::optim::OptimError;

/// Where this process sits in a data-parallel job: torchrun's `RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (the backend and timeout are chosen by the
/// trainer from the config). The library never reads the environment; the CLI does.
pub use tbrm_dist::Options as LaunchOptions;

/// A joined process group and the device its small collectives run on.
pub struct Dist {
    pg: ProcessGroup,
    /// CPU for Gloo, this rank's GPU for NCCL.
    device: Device,
}

/// The device rank `launch` trains on: `cuda:LOCAL_RANK` for `cuda`/`cuda:N`/`auto` with a GPU
/// (one GPU per process; the index in the config is replaced), the CPU otherwise.
pub(crate) fn rank_device(
    choice: DeviceChoice,
    launch: Option<&LaunchOptions>,
) -> Result<Device, TrainError> {
    let Some(l) = launch else {
        return Ok(choice.resolve());
    };
    let cuda = match choice {
        DeviceChoice::Cpu => false,
        DeviceChoice::Auto => tch::Cuda::is_available(),
        DeviceChoice::Cuda(_) => true,
    };
    if !cuda {
        return Ok(Device::Cpu);
    }
    let visible = tch::Cuda::device_count() as usize;
    if l.local_rank >= visible {
        return Err(TrainError::Launch(format!(
            "LOCAL_RANK {} needs cuda:{} but {visible} CUDA device(s) are visible; run at most \
             {visible} processes per node (--nproc-per-node) or set model.device = \"cpu\"",
            l.local_rank, l.local_rank
        )));
    }
    Ok(Device::Cuda(l.local_rank))
}

/// Settings that cannot work with `world` ranks; the error names the key.
pub(crate) fn validate_world(cfg: &TrainConfig, world: usize) -> Result<(), ConfigError> {
    let (on_policy, _, _) = super::sources::prompt_split(cfg);
    if on_policy > 0 && on_policy < world {
        return Err(ConfigError::invalid(
            "rollout.prompt_batch",
            format!(
                "{on_policy} on-policy prompts per step cannot be shared by {world} ranks \
                 (WORLD_SIZE); every rank needs at least one"
            ),
        ));
    }
    Ok(())
}

impl Dist {
    /// Joins the group described by `launch` (blocks until every rank has joined, at most
    /// `train.dist_timeout_s`): NCCL when this rank trains on a GPU, Gloo on the CPU.
    pub(crate) fn connect(
        mut launch: LaunchOptions,
        device: Device,
        timeout_s: u64,
    ) -> Result<Dist, TrainError> {
        launch.backend = if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        };
        launch.timeout = Duration::from_secs(timeout_s);
        let (addr, port) = (launch.master_addr.clone(), launch.master_port);
        let pg = ProcessGroup::new(launch).map_err(|error| TrainError::Dist {
            during: format!(
                "joining the process group at {addr}:{port} (train.dist_timeout_s = {timeout_s})"
            ),
            error,
            hint: String::new(),
        })?;
        Ok(Dist { pg, device })
    }

    pub fn rank(&self) -> usize {
        self.pg.rank()
    }

    pub fn world(&self) -> usize {
        self.pg.world_size()
    }

    /// Rank 0, the one that writes the run folder.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    pub(crate) fn pg(&self) -> &ProcessGroup {
        &self.pg
    }

    /// This rank's contiguous share of `n` items (sizes differ by at most one).
    pub fn share(&self, n: usize) -> Range<usize> {
        share_of(n, self.rank(), self.world())
    }

    /// A failed collective: some other rank crashed, exited or hangs (this one is fine, or it
    /// would not have reached the collective); the hint names the candidates.
    fn error(&self, during: &str, error: DistError) -> TrainError {
        let others: Vec<String> = (0..self.world())
            .filter(|&r| r != self.rank())
            .map(|r| r.to_string())
            .collect();
        let who = if others.len() == 1 {
            format!("rank {}", others[0])
        } else {
            format!("one of ranks {}", others.join(", "))
        };
        TrainError::Dist {
            during: during.to_string(),
            error,
            hint: format!(
                " -- {who} failed, exited or hung (train.dist_timeout_s = {} s); see its log",
                self.pg.timeout().as_secs()
            ),
        }
    }

    /// An optimizer error, with collective failures reported as such.
    pub(crate) fn optim_error(&self, during: &str, e: OptimError) -> TrainError {
        match e {
            OptimError::Dist(error) => self.error(during, error),
            other => TrainError::Optim(other),
        }
    }

    /// Sums `values` over ranks in place (float64).
    pub(crate) fn sum(&self, during: &str, values: &mut [f64]) -> Result<(), TrainError> {
        if values.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(values).to_device(self.device);
        self.pg
            .all_reduce_sum(&t)
            .map_err(|e| self.error(during, e))?;
        let back = Vec::<f64>::try_from(t.to_device(Device::Cpu))?;
        values.copy_from_slice(&back);
        Ok(())
    }

    /// Whether `flag` is set on any rank.
    pub(crate) fn any(&self, during: &str, flag: bool) -> Result<bool, TrainError> {
        let mut v = [f64::from(u8::from(flag))];
        self.sum(during, &mut v)?;
        Ok(v[0] > 0.0)
    }

    /// `(offset, total)`: where this rank's `n` rows start in the concatenation of all ranks'
    /// rows (rank order), and how many rows there are in all.
    pub(crate) fn offset_of(&self, n: usize) -> Result<(usize, usize), TrainError> {
        let mut counts = vec![0.0; self.world()];
        counts[self.rank()] = n as f64;
        self.sum("row counts", &mut counts)?;
        let offset = counts[..self.rank()].iter().sum::<f64>() as usize;
        Ok((offset, counts.iter().sum::<f64>() as usize))
    }

    /// Every rank's `value`, in rank order (JSON over an all-gather of bytes).
    pub(crate) fn all_gather_json<T: Serialize + DeserializeOwned>(
        &self,
        during: &str,
        value: &T,
    ) -> Result<Vec<T>, TrainError> {
        let bytes = serde_json::to_vec(value).map_err(|e| TrainError::Launch(e.to_string()))?;
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(self.device);
        let lens = self
            .pg
            .all_gather(&len)
            .map_err(|e| self.error(during, e))?;
        let lens: Vec<usize> = lens.iter().map(|t| t.int64_value(&[0]) as usize).collect();
        let longest = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes;
        padded.resize(longest, 0);
        let t = Tensor::from_slice(&padded).to_device(self.device);
        let all = self.pg.all_gather(&t).map_err(|e| self.error(during, e))?;
        all.iter()
            .zip(lens)
            .enumerate()
            .map(|(r, (t, n))| {
                let raw = Vec::<u8>::try_from(t.to_device(Device::Cpu))?;
                serde_json::from_slice(&raw[..n]).map_err(|e| {
                    TrainError::Launch(format!("{during}: rank {r} sent unreadable data: {e}"))
                })
            })
            .collect()
    }

    /// Setup agreement: every rank reports whether it set up and a fingerprint of its settings
    /// (config, step); fails on every rank when one failed or the fingerprints differ.
    pub(crate) fn agree(
        &self,
        during: &str,
        local: Result<(), String>,
        fingerprint: &str,
    ) -> Result<(), TrainError> {
        let all: Vec<(Option<String>, String)> =
            self.all_gather_json(during, &(local.err(), fingerprint.to_string()))?;
        if let Some((r, msg)) = all
            .iter()
            .enumerate()
            .find_map(|(r, (e, _))| e.as_ref().map(|m| (r, m)))
        {
            return Err(TrainError::Launch(format!(
                "{during}: rank {r} failed: {msg}"
            )));
        }
        let first = &all[0].1;
        if let Some((r, (_, other))) = all.iter().enumerate().find(|(_, (_, f))| f != first) {
            let (a, b) = first
                .lines()
                .zip(other.lines())
                .find(|(a, b)| a != b)
                .unwrap_or((first.as_str(), other.as_str()));
            return Err(TrainError::Launch(format!(
                "{during}: rank {r} runs with other settings than rank 0 (rank 0 `{a}`, rank \
                 {r} `{b}`); start every rank with the same command and files"
            )));
        }
        Ok(())
    }

    /// Sums the loss, KL sums and non-finite flags of this rank's update and the metrics.
    pub(crate) fn reduce_update_stats(
        &self,
        stats: &mut super::update::UpdateStats,
    ) -> Result<(), TrainError> {
        let mut v = [
            if stats.nonfinite { 0.0 } else { stats.loss },
            stats.kl_sum,
            stats.kl_tokens,
            f64::from(u8::from(stats.nonfinite)),
        ];
        self.sum("update statistics", &mut v)?;
        stats.loss = v[0];
        (stats.kl_sum, stats.kl_tokens) = (v[1], v[2]);
        stats.nonfinite = v[3] > 0.0;
        self.reduce_metrics(&mut stats.extra)
    }

    /// Sums each metric over ranks (ranks add their batch-weighted parts; a rank without the
    /// metric adds nothing). A non-finite value anywhere makes the sum NaN.
    pub(crate) fn reduce_metrics(
        &self,
        extra: &mut BTreeMap<String, f64>,
    ) -> Result<(), TrainError> {
        let local: Vec<(String, Option<f64>)> = extra
            .iter()
            .map(|(k, v)| (k.clone(), v.is_finite().then_some(*v)))
            .collect();
        let all = self.all_gather_json("metrics", &local)?;
        extra.clear();
        for (k, v) in all.into_iter().flatten() {
            *extra.entry(k).or_insert(0.0) += v.unwrap_or(f64::NAN);
        }
        Ok(())
    }

    /// `x` whitened over the masked positions of all ranks' rows, as tbrm-algo's
    /// `masked_whiten` does over one process's batch: `(x - mean) / sqrt(var + 1e-8)`,
    /// unbiased variance, 0 at padding.
    pub(crate) fn whiten(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor, TrainError> {
        let m = mask.to_kind(x.kind());
        let mut first = [
            (x * &m).sum(Kind::Double).double_value(&[]),
            m.sum(Kind::Double).double_value(&[]),
        ];
        self.sum("advantage whitening", &mut first)?;
        let n = first[1];
        let mean = first[0] / n.max(1.0);
        let centered = (x - mean) * &m;
        let mut second = [centered.square().sum(Kind::Double).double_value(&[])];
        self.sum("advantage whitening", &mut second)?;
        let var = second[0] / (n - 1.0).max(1.0);
        Ok(centered * (var + 1e-8).sqrt().recip())
    }

    /// The whole step's batches from every rank's shares: batch b is rank 0's part of it,
    /// then rank 1's, ... (the order one process would have).
    pub(crate) fn gather_batches(
        &self,
        during: &str,
        local: &[Vec<Trajectory>],
    ) -> Result<Vec<Vec<Trajectory>>, TrainError> {
        let all = self.all_gather_json(during, &local.to_vec())?;
        let mut out: Vec<Vec<Trajectory>> = vec![Vec::new(); local.len()];
        for rank_batches in all {
            for (b, part) in rank_batches.into_iter().enumerate() {
                if let Some(dst) = out.get_mut(b) {
                    dst.extend(part);
                }
            }
        }
        Ok(out)
    }

    /// This rank's share of a whole batch, cut between prompts: runs of trajectories with the
    /// same prompt stay together (a restored queue of stale rollouts).
    pub(crate) fn share_by_prompt(&self, batch: Vec<Trajectory>) -> Vec<Trajectory> {
        let mut groups: Vec<Vec<Trajectory>> = Vec::new();
        for t in batch {
            match groups.last_mut() {
                Some(g) if g[0].prompt_key == t.prompt_key => g.push(t),
                _ => groups.push(vec![t]),
            }
        }
        let range = self.share(groups.len());
        groups
            .into_iter()
            .skip(range.start)
            .take(range.len())
            .flatten()
            .collect()
    }
}

/// Rank `rank`'s contiguous share of `n` items among `world`.
pub(crate) fn share_of(n: usize, rank: usize, world: usize) -> Range<usize> {
    n * rank / world..n * (rank + 1) / world
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_tile_the_list() {
        for n in [0, 1, 5, 8, 9] {
            for world in [1, 2, 3] {
                let mut next = 0;
                for r in 0..world {
                    let s = share_of(n, r, world);
                    assert_eq!(s.start, next, "n {n} world {world}");
                    assert!(s.len() + 1 >= n / world && s.len() <= n.div_ceil(world));
                    next = s.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
