//! Checkpoints and resume: what a checkpoint holds besides the HF model folder
//! (`trainer_state/`: step, data position, optimizer moments, replay buffer, stale rollouts,
//! critic) and how a run is rebuilt from it.
//!
//! Data parallelism: saving is a collective (ZeRO-1 optimizer shards and every rank's stale
//! rollouts are gathered), rank 0 writes, and every rank learns whether the write succeeded.
//! On resume every rank reads the same checkpoint (the run folder must be visible to all
//! ranks); a ZeRO-1 optimizer reads only its shard, and stale rollouts are re-split by prompt.
//! Checkpoints always hold the complete state, so a run resumes with any world size and with
//! or without `optim.zero1`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tbrm_data::{ReplayBuffer, Sampler, Trajectory};
use tbrm_model::CausalLm;
use tch::Tensor;

use super::distributed::{Dist, LaunchOptions};
use super::{loss_config, read_json, TaskData, TrainError, Trainer};
use crate::builtin;
use crate::checkpoint::copy_tokenizer_files;
use crate::config::{Algorithm, TrainConfig};
use crate::critic::Critic;
use crate::optim::AdamW;
use crate::run_dir::RunDir;

/// What `trainer_state/state.json` holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    data_order: Option<tbrm_data::DataOrder>,
    nonfinite_skips: u64,
    eval_before: Option<f64>,
    seed: u64,
    algorithm: Algorithm,
    recent_rewards: Vec<f64>,
}

const STATE_DIR: &str = "trainer_state";

impl Trainer {
    /// Re-opens `run_dir` at its latest complete checkpoint. `adjust` may change the saved
    /// config before anything is built (the CLI lets `--steps` extend a run and `--device`
    /// move it); the changed config is written back.
    pub fn resume(
        run_dir: &Path,
        adjust: impl FnOnce(&mut TrainConfig),
        task: Option<TaskData>,
    ) -> Result<Self, TrainError> {
        Self::resume_launched(run_dir, adjust, task, None)
    }

    /// [`Trainer::resume`] as one rank of a data-parallel job (`None` or a world size of 1:
    /// one process). Every rank resumes the same folder; only rank 0 writes to it.
    pub fn resume_launched(
        run_dir: &Path,
        adjust: impl FnOnce(&mut TrainConfig),
        task: Option<TaskData>,
        launch: Option<LaunchOptions>,
    ) -> Result<Self, TrainError> {
        let (run, mut cfg) = RunDir::open(run_dir)?;
        adjust(&mut cfg);
        cfg.validate()?;
        let (device, dist) = Self::join(&cfg, launch)?;
        let setup = Self::build_resumed(run, cfg, task, device, dist.as_ref());
        Self::finish_setup(setup, dist, "resuming the run")
    }

    fn build_resumed(
        run: RunDir,
        cfg: TrainConfig,
        task: Option<TaskData>,
        device: tch::Device,
        dist: Option<&Dist>,
    ) -> Result<Self, TrainError> {
        let run_dir = run.root().to_path_buf();
        let (step, ckpt) = run
            .checkpoints()
            .latest()?
            .ok_or_else(|| TrainError::Resume {
                path: run_dir.clone(),
                message: "no complete checkpoint under checkpoints/ (nothing to resume from)"
                    .into(),
            })?;
        let state_dir = ckpt.join(STATE_DIR);
        let state: TrainerState = read_json(&state_dir.join("state.json"))?;
        if state.step != step {
            return Err(TrainError::Resume {
                path: ckpt.clone(),
                message: format!(
                    "trainer state says step {} but the folder is step-{step}",
                    state.step
                ),
            });
        }
        if state.algorithm != cfg.algorithm.name {
            return Err(TrainError::Resume {
                path: run_dir,
                message: format!(
                    "checkpoint was trained with {} but the config says {}",
                    state.algorithm.as_str(),
                    cfg.algorithm.name.as_str()
                ),
            });
        }
        let main = dist.is_none_or(Dist::is_main);
        if main {
            run.write_config(&cfg)?;
        }
        let task = match task {
            Some(t) => t,
            None => TaskData::from_config(&cfg)?,
        };
        let dtype = cfg.model.dtype.kind();
        let policy =
            CausalLm::load(&ckpt, device, dtype).map_err(|e| TrainError::model(&ckpt, e))?;
        let loss = tbrm_algo::build(&loss_config(&cfg))?;
        let needs = loss.needs();
        let reference = if needs.ref_logprobs {
            let p = builtin::resolve_path(cfg.model.reference.as_ref().unwrap_or(&cfg.model.path));
            Some(CausalLm::load(&p, device, dtype).map_err(|e| TrainError::model(&p, e))?)
        } else {
            None
        };
        let critic = if needs.values {
            Some(Critic::load(
                &state_dir.join("critic"),
                device,
                dtype,
                super::adamw_config(&cfg),
            )?)
        } else {
            None
        };
        let mut t = Self::assemble(
            cfg,
            run,
            ckpt.clone(),
            policy,
            reference,
            critic,
            loss,
            task,
            dist,
        )?;
        t.opt.load(&state_dir.join("optimizer.safetensors"))?;
        t.step = step;
        t.nonfinite_skips = state.nonfinite_skips;
        t.eval_before = state.eval_before;
        t.recent_rewards = state.recent_rewards.into_iter().collect();
        if let (Some(s), Some(order)) = (t.sampler.as_mut(), state.data_order) {
            *s = Sampler::resume(t.train_set.len(), s.batch_size(), true, order)?;
        }
        if t.replay.is_some() {
            let p = state_dir.join("replay.json");
            if p.is_file() {
                t.replay = Some(ReplayBuffer::load(&p)?);
            }
        }
        let pending = state_dir.join("async_queue.json");
        if pending.is_file() {
            t.pending = read_json::<Vec<Vec<Trajectory>>>(&pending)?
                .into_iter()
                .map(|b| match dist {
                    Some(d) => d.share_by_prompt(b),
                    None => b,
                })
                .collect();
        }
        t.last_checkpoint = Some((step, ckpt));
        if main {
            t.run.truncate_logs(step)?;
        }
        Ok(t)
    }

    /// Writes checkpoint `step-<current step>` atomically; returns its folder. With data
    /// parallelism every rank calls it; rank 0 writes.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let step = self.step;
        let (opt_state, queue) = match &self.dist {
            None => (None, None),
            Some(d) => {
                let during = format!("checkpoint step {step}: gathering the optimizer state");
                let state = self
                    .opt
                    .state_for_save(d.pg())
                    .map_err(|e| d.optim_error(&during, e))?;
                let queue = if self.cfg.sources.async_staleness > 0 {
                    let local: Vec<Vec<Trajectory>> = self.pending.iter().cloned().collect();
                    Some(d.gather_batches("gathering stale rollouts", &local)?)
                } else {
                    None
                };
                (state, queue)
            }
        };
        let checkpoints = self.run.checkpoints();
        let written = if self.is_main() {
            checkpoints
                .save(step, self.cfg.train.keep_checkpoints, |dir| {
                    self.write_checkpoint(dir, opt_state.as_deref(), queue.as_deref())
                })
                .map_err(TrainError::from)
        } else {
            Ok(checkpoints.step_dir(step))
        };
        if let Some(d) = &self.dist {
            let local = written.as_ref().map(|_| ()).map_err(|e| e.to_string());
            let agreed = d.agree(&format!("writing checkpoint step {step}"), local, "");
            let path = written?;
            agreed?;
            self.last_checkpoint = Some((step, path.clone()));
            return Ok(path);
        }
        let path = written?;
        self.last_checkpoint = Some((step, path.clone()));
        Ok(path)
    }

    /// The checkpoint's contents. `opt_state`: the gathered optimizer state (data
    /// parallelism); `queue`: every rank's stale rollouts, batch by batch.
    fn write_checkpoint(
        &self,
        dir: &Path,
        opt_state: Option<&[(String, Tensor)]>,
        queue: Option<&[Vec<Trajectory>]>,
    ) -> Result<(), TrainError> {
        self.policy
            .save(dir)
            .map_err(|e| TrainError::model(dir, e))?;
        copy_tokenizer_files(&self.tokenizer_dir, dir)?;
        let st = dir.join(STATE_DIR);
        std::fs::create_dir_all(&st).map_err(|e| TrainError::Io {
            path: st.clone(),
            message: e.to_string(),
        })?;
        let opt_path = st.join("optimizer.safetensors");
        match opt_state {
            Some(tensors) => AdamW::write_state(tensors, &opt_path)?,
            None => self.opt.save(&opt_path)?,
        }
        let state = TrainerState {
            step: self.step,
            data_order: self.sampler.as_ref().map(|s| s.position()),
            nonfinite_skips: self.nonfinite_skips,
            eval_before: self.eval_before,
            seed: self.cfg.train.seed,
            algorithm: self.cfg.algorithm.name,
            recent_rewards: self.recent_rewards.iter().copied().collect(),
        };
        tbrm_data::write_json_atomic(&st.join("state.json"), &state)?;
        if let Some(r) = &self.replay {
            r.save(&st.join("replay.json"))?;
        }
        let local: Vec<Vec<Trajectory>>;
        let queue = match queue {
            Some(q) => q,
            None => {
                local = self.pending.iter().cloned().collect();
                &local
            }
        };
        if !queue.is_empty() {
            tbrm_data::write_json_atomic(&st.join("async_queue.json"), &queue)?;
        }
        if let Some(c) = &self.critic {
            let cdir = st.join("critic");
            c.save(&cdir)?;
        }
        Ok(())
    }
}
