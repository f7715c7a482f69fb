//! Trainer: rollout, reward, reference log-probs, update; checkpoints, resume, metrics; the built-in synthetic task and SFT warm start.
