//! Batch planning: how a step's trajectories are cut into forward passes, and the tensors the
//! losses read.
//!
//! A pass costs what its padded block costs (rows x longest row), and RL responses are very
//! uneven (most end early, a few run to the limit). Cutting micro-batches as fixed row counts in
//! rollout order pads every short row to the longest one that happens to share its slice.
//! [`BatchPlan`] sorts trajectories by length and packs them up to a token budget instead, so
//! rows of similar length share a pass; the budget, not the row count, bounds activation memory.
//! Losses are divided by the whole step's counts (tbrm-algo `BatchTotals`), so the accumulated
//! gradient does not depend on how the batch is cut (tested in `tests/batching.rs`).

use std::collections::HashMap;

use tbrm_algo::BatchTotals;
use tbrm_data::Trajectory;
use tbrm_model::{score_responses, CausalLm, PackedBatch};
use tch::{Device, Kind, Tensor};

use super::TrainError;

/// Limits of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// At most this many rows (0 = no limit).
    pub max_rows: usize,
    /// At most this many padded tokens, rows x longest row (0 = no limit). A trajectory
    /// longer than the budget gets a pass of its own.
    pub max_tokens: usize,
}

impl BatchPlan {
    /// Groups of indices into `lens` (tokens per trajectory, prompt + response), longest
    /// first, each within the limits. Deterministic: ties keep their input order.
    pub fn plan(&self, lens: &[usize]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut longest = 0usize;
        for i in order {
            let rows = current.len() + 1;
            let widest = longest.max(lens[i]);
            let over_rows = self.max_rows > 0 && rows > self.max_rows;
            let over_tokens = self.max_tokens > 0 && rows * widest > self.max_tokens;
            if !current.is_empty() && (over_rows || over_tokens) {
                groups.push(std::mem::take(&mut current));
                longest = 0;
            }
            longest = longest.max(lens[i]);
            current.push(i);
        }
        if !current.is_empty() {
            groups.push(current);
        }
        groups
    }

    /// [`BatchPlan::plan`] over trajectories (prompt + response tokens each).
    pub fn plan_trajectories(&self, batch: &[&Trajectory]) -> Vec<Vec<usize>> {
        let lens: Vec<usize> = batch
            .iter()
            .map(|t| t.prompt_ids.len() + t.response_ids.len())
            .collect();
        self.plan(&lens)
    }
}

/// The rows `idx` of `batch` as one [`PackedBatch`].
pub fn pack(
    batch: &[&Trajectory],
    idx: &[usize],
    pad_id: u32,
    device: Device,
) -> Result<PackedBatch, TrainError> {
    let pairs: Vec<(&[u32], &[u32])> = idx
        .iter()
        .map(|&i| {
            (
                batch[i].prompt_ids.as_slice(),
                batch[i].response_ids.as_slice(),
            )
        })
        .collect();
    PackedBatch::try_new(&pairs, pad_id, device).map_err(TrainError::Generation)
}

/// `idx` as an int64 index tensor on `device`.
pub fn index_tensor(idx: &[usize], device: Device) -> Tensor {
    Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device)
}

/// (B, L) float32 rows, zero-padded on the right.
pub fn pad_rows(rows: &[&[f32]], l: usize, device: Device) -> Tensor {
    let mut flat = vec![0f32; rows.len() * l];
    for (i, r) in rows.iter().enumerate() {
        flat[i * l..i * l + r.len()].copy_from_slice(r);
    }
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, l as i64])
        .to_device(device)
}

/// Trajectory and token counts of a (sub)batch.
pub fn totals_of(batch: &[&Trajectory]) -> BatchTotals {
    BatchTotals {
        trajectories: batch.iter().filter(|t| !t.response_ids.is_empty()).count() as f64,
        tokens: batch.iter().map(|t| t.response_ids.len()).sum::<usize>() as f64,
    }
}

/// Whole-batch tensors, rows in batch order, responses right-padded to the longest.
pub struct BatchTensors {
    /// (B,)
    pub rewards: Tensor,
    /// (B, L) 0/1
    pub mask: Tensor,
    /// (B, L) behaviour log-probs; the update replaces them with recomputed ones under
    /// `algorithm.old_logprobs = "recompute"` (GRPO/PPO's old log-probs).
    pub old: Tensor,
    /// (B, L) reference log-probs, when the loss needs them.
    pub reference: Option<Tensor>,
}

impl BatchTensors {
    pub fn new(batch: &[&Trajectory], ref_lp: Option<&[Vec<f32>]>, device: Device) -> Self {
        let l = batch
            .iter()
            .map(|t| t.response_ids.len())
            .max()
            .unwrap_or(0);
        let rewards: Vec<f32> = batch.iter().map(|t| t.reward).collect();
        let ones: Vec<Vec<f32>> = batch
            .iter()
            .map(|t| vec![1.0; t.response_ids.len()])
            .collect();
        fn slices(rows: &[Vec<f32>]) -> Vec<&[f32]> {
            rows.iter().map(|v| v.as_slice()).collect()
        }
        let behaviour: Vec<&[f32]> = batch
            .iter()
            .map(|t| t.behaviour_logprobs.as_slice())
            .collect();
        BatchTensors {
            rewards: Tensor::from_slice(&rewards).to_device(device),
            mask: pad_rows(&slices(&ones), l, device),
            old: pad_rows(&behaviour, l, device),
            reference: ref_lp.map(|r| pad_rows(&slices(r), l, device)),
        }
    }
}

/// GRPO group ids: rollouts of one prompt share an id, numbered in order of appearance.
pub fn group_ids(batch: &[&Trajectory]) -> Vec<usize> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    batch
        .iter()
        .map(|t| {
            let next = ids.len();
            *ids.entry(t.prompt_key.as_str()).or_insert(next)
        })
        .collect()
}

/// log pi_model per response token of every trajectory (no grad), in batch order, scored in
/// passes cut by `plan`.
pub fn score_logprobs(
    model: &CausalLm,
    batch: &[&Trajectory],
    plan: &BatchPlan,
    pad_id: u32,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); batch.len()];
    for idx in plan.plan_trajectories(batch) {
        let packed = pack(batch, &idx, pad_id, model.device())?;
        let lp = tch::no_grad(|| score_responses(model, &packed).token_logprobs)
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        for (row, &i) in idx.iter().enumerate() {
            let values: Vec<f32> = Vec::<f32>::try_from(lp.get(row as i64))?;
            out[i] = values[..batch[i].response_ids.len()].to_vec();
        }
    }
    Ok(out)
}

/// [`score_logprobs`] with a model that may live in host memory between scorings
/// (`model.reference_offload`): moved to `device` for the scoring and back to the CPU after,
/// so it takes no device memory during the update.
pub fn score_logprobs_offloaded(
    model: &mut CausalLm,
    device: Device,
    offload: bool,
    batch: &[&Trajectory],
    plan: &BatchPlan,
    pad_id: u32,
) -> Result<Vec<Vec<f32>>, TrainError> {
    if offload {
        model.set_device(device);
    }
    let out = score_logprobs(model, batch, plan, pad_id);
    if offload {
        model.set_device(Device::Cpu);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_packs_sorted_rows_within_the_budget() {
        let plan = BatchPlan {
            max_rows: 0,
            max_tokens: 100,
        };
        let lens = [10, 60, 30, 50, 5, 120, 30];
        let groups = plan.plan(&lens);
        // Longest first; 120 alone (over budget); 60 and 50 (2 x 60 > 100) apart; then 50 + 30
        // (2 x 50 = 100 fits), and the short rest share one pass.
        assert_eq!(groups, vec![vec![5], vec![1], vec![3, 2], vec![6, 0, 4]]);
        for g in &groups {
            let widest = g.iter().map(|&i| lens[i]).max().unwrap();
            assert!(g.len() == 1 || g.len() * widest <= 100, "{g:?}");
        }
        let mut all: Vec<usize> = groups.concat();
        all.sort();
        assert_eq!(all, (0..lens.len()).collect::<Vec<_>>());
    }

    #[test]
    fn plan_respects_the_row_limit_and_no_limit() {
        let rows = BatchPlan {
            max_rows: 2,
            max_tokens: 0,
        };
        assert_eq!(rows.plan(&[1, 1, 1, 1, 1]).len(), 3);
        let both = BatchPlan {
            max_rows: 3,
            max_tokens: 1000,
        };
        assert_eq!(
            both.plan(&[1; 7]),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
        assert!(both.plan(&[]).is_empty());
    }
}
