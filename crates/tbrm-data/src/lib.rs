//! Data: datasets (JSONL, verl parquet), prompt templates, trajectories as data (replay buffer, offline files).
