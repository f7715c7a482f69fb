//! Data: datasets (JSONL, verl parquet), prompt templates, trajectories as data (replay buffer,
//! offline files), and small JSON/JSONL file helpers. No tch: this crate builds and tests in
//! seconds.

mod arrow_json;
pub mod dataset;
pub mod error;
pub mod jsonl;
pub mod template;
pub mod trajectory;

pub use dataset::{
    detect_format, epoch_permutation, known_benchmarks, load_benchmark, load_dataset,
    resolve_benchmark, DataOrder, Dataset, FieldMap, Format, LoadOptions, LoadReport, Problem,
    PromptInput, Sampler, SkippedRow, BENCHMARKS, BENCHMARK_EXTENSIONS,
};
pub use error::{DataError, RowRef};
pub use jsonl::{read_json, read_jsonl, write_atomic, write_json_atomic, JsonlWriter};
pub use template::{ChatMessage, PromptTemplate, RenderedPrompt, QWEN_MATH_SYSTEM, R1_TEMPLATE};
pub use trajectory::{
    load_offline, read_trajectories, write_trajectories, ReplayBuffer, Trajectory, TrajectorySource,
};
