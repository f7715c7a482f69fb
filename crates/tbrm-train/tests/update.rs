//! The trainer's update (token-budget micro-batches through the memory-lean pass, f32
//! gradient accumulation) against plain autograd on the whole batch at once: the same
//! gradients for TBRM and GRPO, and for PPO the same weights after an update whatever the
//! micro-batching and recomputation.

use tbrm_algo::{AdvantageInputs, LossConfig, LossInputs, LossKind, PolicyLoss};
use tbrm_data::{Trajectory, TrajectorySource};
use tbrm_model::{score_responses, CausalLm, LeanOptions, ModelConfig, ModelType, PackedBatch};
use tbrm_train::config::OldLogprobs;
use tbrm_train::critic::Critic;
use tbrm_train::optim::{AdamW, AdamWConfig};
use tbrm_train::trainer::batching::{group_ids, BatchPlan, BatchTensors};
use tbrm_train::trainer::update::{UpdateSchedule, Updater};
use tch::{Device, Kind, Tensor};

fn model() -> CausalLm {
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = 61;
    cfg.num_hidden_layers = 3;
    cfg.initializer_range = 0.1;
    CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 3).unwrap()
}

/// Eight trajectories of uneven lengths, two per prompt (GRPO groups), rewards 0/1.
fn trajectories() -> Vec<Trajectory> {
    (0..8)
        .map(|i| {
            let prompt_len = 2 + i % 3;
            let response_len = [1, 7, 3, 12, 5, 2, 9, 4][i];
            Trajectory {
                prompt_key: format!("p{}", i / 2),
                prompt_ids: (0..prompt_len)
                    .map(|j| (3 + 5 * i + j) as u32 % 61)
                    .collect(),
                response_ids: (0..response_len)
                    .map(|j| (7 + 11 * i + 3 * j) as u32 % 61)
                    .collect(),
                behaviour_logprobs: (0..response_len).map(|j| -1.0 - 0.1 * j as f32).collect(),
                reward: (i % 3 == 0) as u8 as f32,
                truncated: false,
                source: TrajectorySource::OnPolicy,
                policy_step: 0,
            }
        })
        .collect()
}

fn loss(kind: LossKind) -> Box<dyn PolicyLoss> {
    let mut lc = LossConfig {
        kind,
        ..LossConfig::default()
    };
    lc.tbrm.beta = 0.5;
    tbrm_algo::build(&lc).unwrap()
}

/// Reference log-probs from a fixed, different model.
fn ref_lp(batch: &[&Trajectory]) -> Vec<Vec<f32>> {
    batch
        .iter()
        .map(|t| {
            (0..t.response_ids.len())
                .map(|j| -2.0 + 0.05 * j as f32)
                .collect()
        })
        .collect()
}

/// Plain autograd: the whole batch in one pass with grad, `.grad` read back.
fn plain_grads(kind: LossKind, batch: &[&Trajectory], refs: &[Vec<f32>]) -> Vec<(String, Tensor)> {
    let lm = model();
    let loss = loss(kind);
    let t = BatchTensors::new(batch, Some(refs), Device::Cpu);
    let pairs: Vec<(&[u32], &[u32])> = batch
        .iter()
        .map(|t| (t.prompt_ids.as_slice(), t.response_ids.as_slice()))
        .collect();
    let packed = PackedBatch::new(&pairs, 0, Device::Cpu);
    let groups = group_ids(batch);
    let mut ai = AdvantageInputs::new(&t.rewards, &t.mask);
    ai.group_ids = Some(&groups);
    ai.old_logprobs = Some(&t.old);
    ai.ref_logprobs = t.reference.as_ref();
    let adv = loss.advantages(&ai).unwrap();
    let s = score_responses(&lm, &packed);
    let mut x = LossInputs::new(&s.token_logprobs, &packed.response_mask, &t.rewards);
    x.first_logit = Some(&s.first_logit);
    x.ref_logprobs = t.reference.as_ref();
    x.old_logprobs = Some(&t.old);
    let adv_t = adv.as_ref().map(|a| a.advantages.shallow_clone());
    x.advantages = adv_t.as_ref();
    loss.loss(&x).unwrap().loss.backward();
    let mut out: Vec<(String, Tensor)> = lm
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, v)| (n, v.grad().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn micro_batched_lean_gradients_equal_one_plain_pass() {
    let owned = trajectories();
    let batch: Vec<&Trajectory> = owned.iter().collect();
    let refs = ref_lp(&batch);
    for kind in [LossKind::Tbrm, LossKind::Grpo] {
        let want = plain_grads(kind, &batch, &refs);
        for (recompute, micro) in [
            (
                true,
                BatchPlan {
                    max_rows: 0,
                    max_tokens: 24,
                },
            ),
            (
                false,
                BatchPlan {
                    max_rows: 3,
                    max_tokens: 0,
                },
            ),
            (
                true,
                BatchPlan {
                    max_rows: 0,
                    max_tokens: 0,
                },
            ),
        ] {
            let lm = model();
            let mut opt = AdamW::for_var_store(lm.var_store(), AdamWConfig::default());
            let l = loss(kind);
            let mut up = Updater {
                policy: &lm,
                opt: &mut opt,
                critic: None,
                loss: l.as_ref(),
                micro,
                score: micro,
                lean: LeanOptions {
                    recompute,
                    chunk_bytes: 4 * 8 * 61 * 2,
                    entropy: false,
                },
                pad_id: 0,
                grad_clip: 0.0,
                dist: None,
                old_logprobs: OldLogprobs::Behaviour,
            };
            let stats = up.gradients(&batch, Some(&refs)).unwrap();
            let what = format!("{kind:?} recompute={recompute} {micro:?}");
            assert!(!stats.nonfinite, "{what}");
            if micro.max_tokens == 24 {
                assert!(
                    stats.passes >= 3,
                    "{what}: the budget must cut the batch ({})",
                    stats.passes
                );
            }
            for (name, w) in &want {
                let g = opt
                    .grad(name)
                    .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
                let d = (&g - w).abs().max().double_value(&[]);
                let scale = w.abs().max().double_value(&[]);
                assert!(scale > 0.0, "{what}: {name} has a zero gradient");
                assert!(
                    d <= 1e-5 * scale.max(1.0),
                    "{what}: {name} differs by {d} (scale {scale})"
                );
            }
        }
    }
}

fn ppo_weights(recompute: bool, micro: BatchPlan) -> Vec<(String, Tensor)> {
    let owned = trajectories();
    let batch: Vec<&Trajectory> = owned.iter().collect();
    let refs = ref_lp(&batch);
    let lm = model();
    let mut opt = AdamW::for_var_store(lm.var_store(), AdamWConfig::default());
    let mut critic = Critic::from_policy(&lm, AdamWConfig::default()).unwrap();
    let l = loss(LossKind::Ppo);
    let mut up = Updater {
        policy: &lm,
        opt: &mut opt,
        critic: Some(&mut critic),
        loss: l.as_ref(),
        micro,
        score: micro,
        lean: LeanOptions {
            recompute,
            ..LeanOptions::default()
        },
        pad_id: 0,
        grad_clip: 1.0,
        dist: None,
        old_logprobs: OldLogprobs::Behaviour,
    };
    let sched = UpdateSchedule {
        epochs: 2,
        mini_batches: 2,
        seed: 5,
        step: 0,
        critic_lr: 1e-3,
    };
    let stats = up.update_epochs(&batch, Some(&refs), 1e-3, sched).unwrap();
    assert!(!stats.nonfinite && stats.loss.is_finite());
    assert!(
        stats.extra.contains_key("actor/entropy"),
        "{:?}",
        stats.extra.keys()
    );
    let mut out: Vec<(String, Tensor)> = lm
        .var_store()
        .variables()
        .into_iter()
        .chain(
            critic
                .backbone
                .var_store()
                .variables()
                .into_iter()
                .map(|(n, v)| (format!("critic.{n}"), v)),
        )
        .map(|(n, v)| (n, v.detach().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn ppo_update_does_not_depend_on_micro_batching_or_recomputation() {
    let a = ppo_weights(
        false,
        BatchPlan {
            max_rows: 0,
            max_tokens: 0,
        },
    );
    let b = ppo_weights(
        true,
        BatchPlan {
            max_rows: 0,
            max_tokens: 20,
        },
    );
    let initial = model();
    let init = initial.var_store().variables();
    let mut moved = 0;
    for ((na, wa), (nb, wb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        // Four Adam steps of lr 1e-3 move a weight by up to 4e-3; Adam's normalisation turns
        // float-rounding differences of near-zero gradients into ~1e-5 weight differences.
        let d = (wa - wb).abs().max().double_value(&[]);
        assert!(d < 1e-4, "{na} differs by {d}");
        if let Some(w0) = init.get(na) {
            if (wa - w0).abs().max().double_value(&[]) > 1e-6 {
                moved += 1;
            }
        }
    }
    assert!(
        moved > 10,
        "the update must move the policy ({moved} tensors moved)"
    );
}

/// GRPO's first step with old log-probs far from the policy's (the fixtures' stored ones):
/// `recompute` replaces them with the policy's own, so the first ratio is exactly 1;
/// `behaviour` keeps them. With `mini_batches = 4` the update makes four optimizer steps.
#[test]
fn recomputed_old_logprobs_make_the_first_ratio_one() {
    let owned = trajectories();
    let batch: Vec<&Trajectory> = owned.iter().collect();
    let refs = ref_lp(&batch);
    let micro = BatchPlan {
        max_rows: 3,
        max_tokens: 0,
    };
    let run = |old_logprobs: OldLogprobs, mini_batches: usize| {
        let lm = model();
        let mut opt = AdamW::for_var_store(lm.var_store(), AdamWConfig::default());
        let l = loss(LossKind::Grpo);
        let mut up = Updater {
            policy: &lm,
            opt: &mut opt,
            critic: None,
            loss: l.as_ref(),
            micro,
            score: micro,
            lean: LeanOptions::default(),
            pad_id: 0,
            grad_clip: 1.0,
            dist: None,
            old_logprobs,
        };
        let sched = UpdateSchedule {
            mini_batches,
            ..UpdateSchedule::single(3, 0)
        };
        let stats = up.update(&batch, Some(&refs), 1e-3, sched).unwrap();
        assert!(!stats.nonfinite && stats.loss.is_finite());
        let init = model().var_store().variables();
        let moved = lm
            .var_store()
            .variables()
            .iter()
            .filter(|(n, w)| (*w - &init[n.as_str()]).abs().max().double_value(&[]) > 1e-6)
            .count();
        assert!(
            moved > 10,
            "the update must move the policy ({moved} tensors moved)"
        );
        stats
    };
    let s = run(OldLogprobs::Recompute, 1);
    assert_eq!(s.optimizer_steps, 1);
    assert_eq!(s.first_ratio_dev, 0.0, "same passes, same operations");
    let diff = s.extra["old_logprobs/behaviour_abs_diff_max"];
    assert!(diff > 0.5, "the fixtures' stored log-probs are off: {diff}");
    let s = run(OldLogprobs::Recompute, 4);
    assert_eq!(s.optimizer_steps, 4);
    assert_eq!(
        s.first_ratio_dev, 0.0,
        "scored in the first mini-batch's own passes"
    );
    let s = run(OldLogprobs::Behaviour, 4);
    assert_eq!(s.optimizer_steps, 4);
    assert!(s.first_ratio_dev > 0.1, "{}", s.first_ratio_dev);
    assert!(!s.extra.contains_key("old_logprobs/behaviour_abs_diff_max"));
}
