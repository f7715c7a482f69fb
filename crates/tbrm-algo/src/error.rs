//! The crate's error type: bad configuration values and bad loss inputs, never panics.

/// What can go wrong building a loss or feeding it tensors.
#[derive(Debug, thiserror::Error)]
pub enum AlgoError {
    #[error("unknown loss '{0}': expected one of tbrm, grpo, ppo")]
    UnknownLoss(String),
    #[error("invalid loss config: {key} = {value}: {reason}")]
    InvalidConfig {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{loss} needs input `{input}` but it was not provided")]
    MissingInput {
        loss: &'static str,
        input: &'static str,
    },
    #[error("input `{input}` has shape {got:?}, expected {expected:?}")]
    Shape {
        input: &'static str,
        got: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("response_mask must be 0/1 and right-padded (ones, then zeros) in every row")]
    BadMask,
    #[error(
        "{loss} needs at least {min} rollouts per prompt, got {got}{detail}: \
         with one rollout the group baseline equals the reward and every advantage is zero"
    )]
    GroupTooSmall {
        loss: &'static str,
        min: usize,
        got: usize,
        detail: String,
    },
    #[error("group_ids has {got} entries for a batch of {batch} trajectories")]
    GroupIdsLen { got: usize, batch: usize },
}
