//! The run folder: `config.toml` (the resolved config), `metrics.jsonl`, `samples.jsonl`,
//! `checkpoints/`, `summary.json`.
//!
//! A new run refuses a folder that already holds a run (it would mix two runs' metrics); a
//! resumed run opens the folder, reads its `config.toml`, and cuts `metrics.jsonl` and
//! `samples.jsonl` back to the checkpoint's step, so lines logged after the last checkpoint
//! (and redone after the resume) do not appear twice.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::checkpoint::Checkpoints;
use crate::config::{ConfigError, TrainConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run folder on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates a fresh run folder and writes `config.toml`. Refuses a folder that already
    /// holds a run's files.
    pub fn create(root: &Path, cfg: &TrainConfig) -> Result<Self, RunDirError> {
        let dir = RunDir {
            root: root.to_path_buf(),
        };
        for existing in [
            dir.metrics_path(),
            dir.config_path(),
            dir.checkpoints().root().to_path_buf(),
        ] {
            if existing.exists() {
                return Err(RunDirError::Invalid {
                    path: root.to_path_buf(),
                    message: format!(
                        "already holds a run ({} exists); use --resume {} to continue it or choose another --output",
                        existing.display(),
                        root.display()
                    ),
                });
            }
        }
        fs::create_dir_all(root).map_err(io(root))?;
        let cfg_path = dir.config_path();
        tbrm_data::write_atomic(&cfg_path, cfg.to_toml_string().as_bytes()).map_err(|e| {
            RunDirError::Invalid {
                path: cfg_path.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(dir)
    }

    /// The run folder at `root` without touching the disk: what data-parallel ranks other than
    /// rank 0 hold (they read checkpoints from it but write nothing).
    pub fn attach(root: &Path) -> Self {
        RunDir {
            root: root.to_path_buf(),
        }
    }

    /// Opens an existing run folder for `--resume`, returning it with its saved config.
    pub fn open(root: &Path) -> Result<(Self, TrainConfig), RunDirError> {
        let dir = RunDir {
            root: root.to_path_buf(),
        };
        let cfg_path = dir.config_path();
        if !cfg_path.is_file() {
            return Err(RunDirError::Invalid {
                path: root.to_path_buf(),
                message: "not a run folder (no config.toml)".into(),
            });
        }
        let text = fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let cfg = TrainConfig::from_toml_str(&text).map_err(|source| RunDirError::Config {
            path: cfg_path.clone(),
            source,
        })?;
        Ok((dir, cfg))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn samples_path(&self) -> PathBuf {
        self.root.join("samples.jsonl")
    }
    /// Sampled trajectories, when `train.save_rollouts` is on (tbrm-data trajectory lines).
    pub fn rollouts_path(&self) -> PathBuf {
        self.root.join("rollouts.jsonl")
    }
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(self.root.join("checkpoints"))
    }

    /// Rewrites the config (e.g. a resumed run given more `train.steps`).
    pub fn write_config(&self, cfg: &TrainConfig) -> Result<(), RunDirError> {
        let p = self.config_path();
        tbrm_data::write_atomic(&p, cfg.to_toml_string().as_bytes()).map_err(|e| {
            RunDirError::Invalid {
                path: p.clone(),
                message: e.to_string(),
            }
        })
    }

    /// Appends one JSON line.
    pub fn append_line<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), RunDirError> {
        self.append_lines(path, std::iter::once(value))
    }

    /// Appends one JSON line per value with a single open and write (a step's rollouts).
    pub fn append_lines<'a, T: Serialize + 'a>(
        &self,
        path: &Path,
        values: impl IntoIterator<Item = &'a T>,
    ) -> Result<(), RunDirError> {
        let mut text = String::new();
        for value in values {
            let line = serde_json::to_string(value).map_err(|e| RunDirError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            text.push_str(&line);
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        f.write_all(text.as_bytes()).map_err(io(path))
    }

    /// Keeps only the lines of `metrics.jsonl` and `samples.jsonl` whose `step` is at most
    /// `step` (a resumed run redoes the later ones). A torn last line (crash mid-write) is
    /// dropped too.
    pub fn truncate_logs(&self, step: u64) -> Result<(), RunDirError> {
        let field = |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_u64());
        for path in [self.metrics_path(), self.samples_path()] {
            keep_lines(&path, |v| field(v, "step").is_some_and(|s| s <= step))?;
        }
        // Rollouts sampled during steps 1..=step came from weights of at most step - 1 updates.
        keep_lines(&self.rollouts_path(), |v| {
            field(v, "policy_step").is_some_and(|s| s < step)
        })
    }
}

/// Rewrites a JSONL file (when it exists) keeping the lines that parse and satisfy `keep`.
fn keep_lines(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> Result<(), RunDirError> {
    if !path.is_file() {
        return Ok(());
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| keep(&v)))
        .map(|l| format!("{l}\n"))
        .collect();
    tbrm_data::write_atomic(path, kept.as_bytes()).map_err(|e| RunDirError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `runs/<UTC date>-<time>-<algorithm>`, the default `--output`.
pub fn default_run_dir(base: &Path, algorithm: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stem = format!("{}-{algorithm}", utc_stamp(secs));
    let mut candidate = base.join(&stem);
    let mut i = 1;
    while candidate.exists() {
        i += 1;
        candidate = base.join(format!("{stem}-{i}"));
    }
    candidate
}

/// `YYYYMMDD-HHMMSS` for Unix seconds, UTC. Days to civil date by Howard Hinnant's
/// `civil_from_days` algorithm (<http://howardhinnant.github.io/date_algorithms.html>).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2024-02-29 12:34:56 UTC (a leap day).
        assert_eq!(utc_stamp(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn create_refuses_an_existing_run_and_open_reads_config() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::default();
        cfg.train.steps = 7;
        let root = tmp.path().join("run");
        RunDir::create(&root, &cfg).unwrap();
        let err = RunDir::create(&root, &cfg).unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        let (_, back) = RunDir::open(&root).unwrap();
        assert_eq!(back, cfg);
        assert!(RunDir::open(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("not a run folder"));
    }

    #[test]
    fn truncate_keeps_lines_up_to_the_step() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(&tmp.path().join("r"), &TrainConfig::default()).unwrap();
        for step in 1..=5u64 {
            dir.append_line(&dir.metrics_path(), &serde_json::json!({ "step": step }))
                .unwrap();
        }
        fs::OpenOptions::new()
            .append(true)
            .open(dir.metrics_path())
            .unwrap()
            .write_all(b"{\"step\": 6, \"lo")
            .unwrap();
        dir.truncate_logs(3).unwrap();
        let text = fs::read_to_string(dir.metrics_path()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("{\"step\":3}\n"), "{text}");
    }
}
