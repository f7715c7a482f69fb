//! Evaluation: benchmark runs with the paper protocol (avg@k, greedy avg@1, pass@k), results tables and training-curve reports.

pub mod metrics;
pub mod report;
pub mod results;
pub mod runner;
