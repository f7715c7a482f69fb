//! RL losses as tensor functions (TBRM, GRPO, PPO) behind one small trait. No I/O.
//!
//! The shape follows verl's `core_algos.py` registry: every loss is one file in [`loss`]
//! that opens with its formula, declares what it [`Needs`] so the trainer computes only
//! that, and returns the loss plus named metrics. The one `match` in [`loss::build`] is the
//! registry. Shared pieces: the aggregation helper ([`agg`]), GAE ([`gae()`]) and the
//! clipped policy-gradient / KL / value-clipping terms ([`pg`]).
//!
//! Tensors are `(B, L)` over the response tokens only (right-padded, 0/1 `response_mask`),
//! plus `(B,)` per-trajectory rewards. Half-precision inputs are upcast to f32 before any
//! sum (the TBRM target `r/beta` is 500 at beta = 0.002); f64 inputs stay f64.

pub mod agg;
pub mod error;
pub mod gae;
pub mod loss;
pub mod pg;

pub use agg::{agg_loss, masked_mean, masked_whiten, AggMode, BatchTotals};
pub use error::AlgoError;
pub use gae::gae;
pub use loss::{
    build, grpo::grpo_advantages, tbrm::tbrm_residual, AdvantageInputs, Advantages, GrpoConfig,
    LossConfig, LossInputs, LossKind, LossOutput, Needs, PolicyLoss, PpoConfig, TbrmConfig,
};
