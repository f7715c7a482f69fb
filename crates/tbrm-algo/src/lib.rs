//! RL losses as tensor functions (TBRM, GRPO, PPO) behind one small trait. No I/O.
