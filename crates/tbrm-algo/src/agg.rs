//! Aggregation of per-token losses into one scalar, in one place (verl `agg_loss`), and the
//! masked statistics the losses share.
//!
//! Micro-batching: a training step may be split into micro-batches whose gradients are
//! accumulated. For the accumulated gradient to equal the full-batch gradient, each
//! micro-batch must divide its *sum* by the *whole step's* count of tokens or trajectories,
//! not by its own. [`BatchTotals`] carries those counts; `None` means "this tensor is the
//! whole batch".

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How a `(B, L)` loss matrix becomes a scalar (names as verl's `loss_agg_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggMode {
    /// Sum over all response tokens / number of response tokens in the batch.
    #[default]
    TokenMean,
    /// Per trajectory the token sum, then the mean over trajectories.
    SeqMeanTokenSum,
    /// Per trajectory the token mean, then the mean over trajectories.
    SeqMeanTokenMean,
}

/// Counts of the whole training step, the denominators of every mean a loss takes.
///
/// A trajectory counts when it has at least one response token (an empty response has no
/// action, hence no residual or ratio; see `loss/tbrm.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchTotals {
    pub trajectories: f64,
    pub tokens: f64,
}

impl BatchTotals {
    /// Counts of a `(B, L)` 0/1 response mask (one device sync).
    pub fn from_mask(response_mask: &Tensor) -> Self {
        let m = response_mask.to_kind(Kind::Double);
        let tokens = m.sum(Kind::Double).double_value(&[]);
        let trajectories = m
            .sum_dim_intlist(-1, false, Kind::Double)
            .gt(0.0)
            .sum(Kind::Double)
            .double_value(&[]);
        BatchTotals {
            trajectories,
            tokens,
        }
    }
}

impl std::ops::Add for BatchTotals {
    type Output = BatchTotals;
    fn add(self, o: BatchTotals) -> BatchTotals {
        BatchTotals {
            trajectories: self.trajectories + o.trajectories,
            tokens: self.tokens + o.tokens,
        }
    }
}

/// Reduce a `(B, L)` loss matrix over the masked tokens to a scalar according to `mode`,
/// dividing by the step's `totals` (or this batch's own counts when `None`).
/// Padding entries of `loss_mat` are ignored even when they are not zero.
pub fn agg_loss(
    loss_mat: &Tensor,
    response_mask: &Tensor,
    mode: AggMode,
    totals: Option<BatchTotals>,
) -> Tensor {
    let totals = totals.unwrap_or_else(|| BatchTotals::from_mask(response_mask));
    let mask = response_mask.to_kind(loss_mat.kind());
    // where() rather than a product, so a NaN/inf at a padded position cannot leak in.
    let masked = loss_mat.where_self(&mask.gt(0.0), &loss_mat.zeros_like());
    match mode {
        AggMode::TokenMean => masked.sum(loss_mat.kind()) / totals.tokens.max(1.0),
        AggMode::SeqMeanTokenSum => masked.sum(loss_mat.kind()) / totals.trajectories.max(1.0),
        AggMode::SeqMeanTokenMean => {
            let len = mask
                .sum_dim_intlist(-1, false, loss_mat.kind())
                .clamp_min(1.0);
            let per_seq = masked.sum_dim_intlist(-1, false, loss_mat.kind()) / len;
            per_seq.sum(loss_mat.kind()) / totals.trajectories.max(1.0)
        }
    }
}

/// Mean of `x` over the positions where `mask` is 1 (0 when the mask is empty).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(x.kind());
    let masked = x.where_self(&m.gt(0.0), &x.zeros_like());
    masked.sum(x.kind()) / m.sum(x.kind()).clamp_min(1.0)
}

/// Whiten `x` over the masked positions of the whole tensor: `(x - mean) / sqrt(var + 1e-8)`,
/// unbiased variance, mean shifted (verl `masked_whiten`). Padded positions come out 0.
pub fn masked_whiten(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(x.kind());
    let n = m.sum(x.kind());
    let mean = masked_mean(x, &m);
    let centered = (x - &mean) * &m;
    // Bessel's correction as torch.var(unbiased=True); a single token has centered = 0, so
    // clamping n - 1 to 1 only avoids 0/0.
    let var = centered.square().sum(x.kind()) / (n - 1.0).clamp_min(1.0);
    centered * (var + 1e-8).rsqrt()
}

/// Half-precision inputs are summed in f32 (TBRM's `r/beta` is 500); f32/f64 stay as they are.
pub(crate) fn upcast(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Float | Kind::Double => t.shallow_clone(),
        _ => t.to_kind(Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(v: &[[f64; 3]; 2]) -> Tensor {
        Tensor::from_slice2(v)
    }

    #[test]
    fn agg_modes_by_hand() {
        // Row 0 has 3 tokens, row 1 has 1 token; 99 sits in padding and must be ignored.
        let loss = t2(&[[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]]);
        let mask = t2(&[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]);
        let v = |m| agg_loss(&loss, &mask, m, None).double_value(&[]);
        assert!((v(AggMode::TokenMean) - 10.0 / 4.0).abs() < 1e-12);
        assert!((v(AggMode::SeqMeanTokenSum) - 10.0 / 2.0).abs() < 1e-12);
        assert!((v(AggMode::SeqMeanTokenMean) - (2.0 + 4.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn micro_batches_sum_to_the_full_batch() {
        let loss = t2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]);
        let mask = t2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let totals = BatchTotals::from_mask(&mask);
        assert_eq!(totals.trajectories, 2.0);
        assert_eq!(totals.tokens, 5.0);
        for mode in [
            AggMode::TokenMean,
            AggMode::SeqMeanTokenSum,
            AggMode::SeqMeanTokenMean,
        ] {
            let full = agg_loss(&loss, &mask, mode, None).double_value(&[]);
            let parts: f64 = (0..2)
                .map(|i| {
                    agg_loss(
                        &loss.narrow(0, i, 1),
                        &mask.narrow(0, i, 1),
                        mode,
                        Some(totals),
                    )
                    .double_value(&[])
                })
                .sum();
            assert!((full - parts).abs() < 1e-12, "{mode:?}: {full} vs {parts}");
        }
    }

    #[test]
    fn whiten_matches_unbiased_formula() {
        let x = t2(&[[1.0, 2.0, 7.0], [3.0, 0.0, 0.0]]);
        let mask = t2(&[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
        // Masked values 1, 2, 3: mean 2, unbiased var 1.
        let w = masked_whiten(&x, &mask);
        let want = [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]];
        for (i, row) in want.iter().enumerate() {
            for (j, &e) in row.iter().enumerate() {
                let g = w.double_value(&[i as i64, j as i64]);
                assert!(
                    (g - e / (1.0f64 + 1e-8).sqrt()).abs() < 1e-9,
                    "{i},{j}: {g}"
                );
            }
        }
    }
}
