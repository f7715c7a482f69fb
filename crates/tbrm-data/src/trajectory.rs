//! Trajectories as data (docs/ARCHITECTURE.md): one sampled response with everything an update
//! needs, whatever produced it. TBRM's objective holds for trajectories from any behaviour policy
//! without importance weights (arXiv:2505.15311, Section 4), so on-policy rollouts, a replay
//! buffer, offline files and stale asynchronous rollouts all feed the same update; `source` only
//! records where a trajectory came from.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rand::seq::index::sample as sample_indices;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, RowRef};
use crate::jsonl::{for_each_line, read_json, write_json_atomic, JsonlWriter};

/// Where a trajectory came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrajectorySource {
    OnPolicy,
    Replay,
    Offline { file: String },
    Async,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Dataset row id; rollouts of one prompt share it (GRPO groups).
    pub prompt_key: String,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    /// log pi_behaviour(a_h | s_h), one per response token.
    pub behaviour_logprobs: Vec<f32>,
    pub reward: f32,
    /// Hit max_new_tokens without EOS.
    pub truncated: bool,
    pub source: TrajectorySource,
    /// Trainer step of the weights that sampled it.
    pub policy_step: u64,
}

impl Trajectory {
    /// Checks what every consumer relies on: one log-prob per response token, a non-empty
    /// response (TBRM's residual starts with the first action's logit), finite numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.response_ids.is_empty() {
            return Err("response_ids is empty".into());
        }
        if self.behaviour_logprobs.len() != self.response_ids.len() {
            return Err(format!(
                "behaviour_logprobs has {} entries but response_ids has {}",
                self.behaviour_logprobs.len(),
                self.response_ids.len()
            ));
        }
        if !self.reward.is_finite() {
            return Err(format!("reward is not finite ({})", self.reward));
        }
        if let Some(h) = self.behaviour_logprobs.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "behaviour_logprobs[{h}] is not finite ({})",
                self.behaviour_logprobs[h]
            ));
        }
        Ok(())
    }
}

/// Writes trajectories as JSONL (creating or truncating `path`), validating each first.
pub fn write_trajectories(path: &Path, trajectories: &[Trajectory]) -> Result<(), DataError> {
    let mut w = JsonlWriter::create(path)?;
    for (i, t) in trajectories.iter().enumerate() {
        t.validate().map_err(|m| {
            DataError::malformed(path, RowRef::Line(i + 1), format!("not written: {m}"))
        })?;
        w.write(t)?;
    }
    Ok(())
}

/// Reads a JSONL file of trajectories; a line that does not parse or fails
/// [`Trajectory::validate`] is an error naming the file and line.
pub fn read_trajectories(path: &Path) -> Result<Vec<Trajectory>, DataError> {
    let mut out = Vec::new();
    for_each_line(path, |line_no, line| {
        let at = RowRef::Line(line_no);
        let t: Trajectory = serde_json::from_str(line)
            .map_err(|e| DataError::malformed(path, at, e.to_string()))?;
        t.validate()
            .map_err(|m| DataError::malformed(path, at, m))?;
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

/// Reads an offline trajectory file for training: validated as in [`read_trajectories`], and
/// each trajectory's source set to `Offline { file }` so metrics can tell them apart. An empty
/// file is an error, since training from it would silently do nothing.
pub fn load_offline(path: &Path) -> Result<Vec<Trajectory>, DataError> {
    let mut ts = read_trajectories(path)?;
    if ts.is_empty() {
        return Err(DataError::InvalidArgument(format!(
            "{}: offline trajectory file has no trajectories",
            path.display()
        )));
    }
    let file = path.display().to_string();
    for t in &mut ts {
        t.source = TrajectorySource::Offline { file: file.clone() };
    }
    Ok(ts)
}

/// A bounded FIFO of past trajectories with seeded uniform sampling. Serializable as a whole
/// (contents and RNG position) so a resumed run samples exactly what an uninterrupted one would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayBuffer {
    capacity: usize,
    items: VecDeque<Trajectory>,
    seed: u64,
    /// ChaCha word position of the sampling RNG: the RNG is `seed` advanced to here.
    rng_word_pos: u128,
    /// Trajectories ever pushed, including evicted ones.
    total_pushed: u64,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, seed: u64) -> Result<Self, DataError> {
        if capacity == 0 {
            return Err(DataError::InvalidArgument(
                "replay buffer capacity must be at least 1".into(),
            ));
        }
        Ok(Self {
            capacity,
            items: VecDeque::with_capacity(capacity.min(1 << 16)),
            seed,
            rng_word_pos: 0,
            total_pushed: 0,
        })
    }

    /// Adds a trajectory, evicting the oldest when full.
    pub fn push(&mut self, t: Trajectory) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(t);
        self.total_pushed += 1;
    }

    pub fn extend(&mut self, ts: impl IntoIterator<Item = Trajectory>) {
        for t in ts {
            self.push(t);
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn total_pushed(&self) -> u64 {
        self.total_pushed
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Trajectory> {
        self.items.iter()
    }

    /// Up to `n` distinct trajectories drawn uniformly without replacement (all of them, in
    /// random order, when fewer are stored), marked `source = Replay`.
    pub fn sample(&mut self, n: usize) -> Vec<Trajectory> {
        let amount = n.min(self.items.len());
        if amount == 0 {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_word_pos(self.rng_word_pos);
        let picked = sample_indices(&mut rng, self.items.len(), amount);
        self.rng_word_pos = rng.get_word_pos();
        picked
            .into_iter()
            .map(|i| {
                let mut t = self.items[i].clone();
                t.source = TrajectorySource::Replay;
                t
            })
            .collect()
    }

    /// Saves the whole buffer atomically as JSON.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        write_json_atomic(path, self)
    }

    /// Loads a buffer saved by [`ReplayBuffer::save`], re-checking its invariants.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let b: Self = read_json(path)?;
        let bad = |m: String| {
            DataError::InvalidArgument(format!("{}: {m}", PathBuf::from(path).display()))
        };
        if b.capacity == 0 || b.items.len() > b.capacity {
            return Err(bad(format!(
                "{} items in a buffer of capacity {}",
                b.items.len(),
                b.capacity
            )));
        }
        for (i, t) in b.items.iter().enumerate() {
            t.validate().map_err(|m| bad(format!("item {i}: {m}")))?;
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn traj(key: &str, n: usize, reward: f32) -> Trajectory {
        Trajectory {
            prompt_key: key.into(),
            prompt_ids: vec![1, 2],
            response_ids: (0..n as u32).collect(),
            behaviour_logprobs: vec![-0.5; n],
            reward,
            truncated: false,
            source: TrajectorySource::OnPolicy,
            policy_step: 3,
        }
    }

    #[test]
    fn source_serializes_in_snake_case() {
        let t = Trajectory {
            source: TrajectorySource::Offline {
                file: "x.jsonl".into(),
            },
            ..traj("k", 1, 1.0)
        };
        let s = serde_json::to_string(&t).unwrap();
        assert!(
            s.contains(r#""source":{"offline":{"file":"x.jsonl"}}"#),
            "{s}"
        );
        assert!(serde_json::to_string(&traj("k", 1, 1.0))
            .unwrap()
            .contains(r#""source":"on_policy""#));
    }

    #[test]
    fn write_read_round_trip_and_offline_retag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        let ts = vec![traj("a", 2, 1.0), traj("b", 3, 0.0)];
        write_trajectories(&p, &ts).unwrap();
        assert_eq!(read_trajectories(&p).unwrap(), ts);
        let off = load_offline(&p).unwrap();
        assert!(off.iter().all(|t| t.source
            == TrajectorySource::Offline {
                file: p.display().to_string()
            }));
    }

    #[test]
    fn validation_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        let good = serde_json::to_string(&traj("a", 2, 1.0)).unwrap();
        let mut short = traj("b", 2, 1.0);
        short.behaviour_logprobs.pop();
        let short = serde_json::to_string(&short).unwrap();
        std::fs::write(&p, format!("{good}\n{short}\n")).unwrap();
        let err = read_trajectories(&p).unwrap_err().to_string();
        assert!(
            err.contains(
                "bad.jsonl: line 2: behaviour_logprobs has 1 entries but response_ids has 2"
            ),
            "{err}"
        );

        // NaN serializes as null, which is not an f32: a parse error on that line.
        let nan = serde_json::to_string(&traj("c", 1, f32::NAN)).unwrap();
        std::fs::write(&p, format!("{good}\n\n{nan}\n")).unwrap();
        let err = read_trajectories(&p).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl: line 3:"), "{err}");

        assert!(traj("d", 1, f32::INFINITY)
            .validate()
            .unwrap_err()
            .contains("reward"));
        assert!(write_trajectories(&p, &[traj("e", 0, 1.0)]).is_err());
    }

    #[test]
    fn replay_is_fifo_with_capacity() {
        let mut b = ReplayBuffer::new(2, 0).unwrap();
        b.extend([traj("a", 1, 0.0), traj("b", 1, 0.0), traj("c", 1, 0.0)]);
        let keys: Vec<_> = b.iter().map(|t| t.prompt_key.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(b.total_pushed(), 3);
        assert!(ReplayBuffer::new(0, 0).is_err());
    }

    #[test]
    fn replay_sampling_is_seeded_distinct_and_resumable() {
        let mut b = ReplayBuffer::new(100, 9).unwrap();
        b.extend((0..20).map(|i| traj(&i.to_string(), 1, 0.0)));
        let mut twin = b.clone();
        let first = b.sample(5);
        assert_eq!(first, twin.sample(5));
        let mut keys: Vec<_> = first.iter().map(|t| t.prompt_key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5, "sampled without replacement");
        assert!(first.iter().all(|t| t.source == TrajectorySource::Replay));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay.json");
        b.save(&p).unwrap();
        let mut restored = ReplayBuffer::load(&p).unwrap();
        assert_eq!(restored, b);
        let next = b.sample(5);
        assert_eq!(restored.sample(5), next);
        assert_ne!(next, first, "the RNG advances between draws");
        assert_eq!(b.sample(50).len(), 20);
    }

    #[test]
    fn replay_sampling_is_roughly_uniform() {
        let mut b = ReplayBuffer::new(10, 1).unwrap();
        b.extend((0..10).map(|i| traj(&i.to_string(), 1, 0.0)));
        let mut counts = [0usize; 10];
        for _ in 0..2000 {
            for t in b.sample(1) {
                counts[t.prompt_key.parse::<usize>().unwrap()] += 1;
            }
        }
        // Expected 200 each; a 5-sigma band (sigma ~ 13.4) catches a broken sampler.
        assert!(
            counts.iter().all(|&c| (133..=267).contains(&c)),
            "{counts:?}"
        );
    }
}
