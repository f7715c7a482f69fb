//! Atomic checkpoint folders: `checkpoints/step-N/` plus a `latest` pointer.
//!
//! A checkpoint is first written in full into a hidden temporary folder, closed with a
//! `COMPLETE` marker and synced, and only then renamed to `step-N` (a rename within one
//! directory is atomic on POSIX file systems). The `latest` file is replaced the same way
//! (write `latest.tmp`, rename). A crash at any point therefore leaves either the old
//! checkpoint as `latest` or the new one, never a half-written folder that is trusted:
//! [`Checkpoints::latest`] only returns folders with the marker, and falls back to the newest
//! complete folder if the pointer names one that is missing. Only the newest `keep` folders are
//! kept, and the one `latest` names is never deleted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the marker file written last into every checkpoint folder.
pub const COMPLETE_MARKER: &str = "COMPLETE";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the checkpoint's contents failed; the previous checkpoint is untouched.
    #[error("writing checkpoint step {step} failed (the previous checkpoint is kept): {message}")]
    Write { step: u64, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The `checkpoints/` folder of a run.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
}

impl Checkpoints {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Checkpoints { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the folder for `step` (whether or not it exists).
    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step}"))
    }

    /// Writes checkpoint `step`: `fill` writes the contents into the folder it is given; the
    /// folder becomes `step-N` and `latest` only when `fill` succeeded. Then prunes to the
    /// newest `keep` checkpoints. Returns the checkpoint folder.
    pub fn save<E: std::fmt::Display>(
        &self,
        step: u64,
        keep: usize,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, CheckpointError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let tmp = self.root.join(format!(".tmp-step-{step}"));
        if tmp.exists() {
            // Left over from a crash during an earlier attempt.
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        if let Err(e) = fill(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(CheckpointError::Write {
                step,
                message: e.to_string(),
            });
        }
        let marker = tmp.join(COMPLETE_MARKER);
        fs::write(&marker, format!("step {step}\n")).map_err(io(&marker))?;
        sync_tree(&tmp)?;

        let dst = self.step_dir(step);
        if dst.exists() {
            // Re-saving a step (e.g. after resuming from it): move the old one aside first, so
            // a crash between the two renames still leaves a complete folder to fall back to.
            let old = self.root.join(format!(".old-step-{step}"));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io(&old))?;
            }
            fs::rename(&dst, &old).map_err(io(&dst))?;
            fs::rename(&tmp, &dst).map_err(io(&tmp))?;
            fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            fs::rename(&tmp, &dst).map_err(io(&tmp))?;
        }
        self.write_latest(step)?;
        sync_dir(&self.root)?;
        self.prune(keep, step)?;
        Ok(dst)
    }

    fn write_latest(&self, step: u64) -> Result<(), CheckpointError> {
        let tmp = self.root.join("latest.tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
            writeln!(f, "step-{step}").map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        let latest = self.root.join("latest");
        fs::rename(&tmp, &latest).map_err(io(&latest))
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name();
            let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if path.join(COMPLETE_MARKER).is_file() {
                out.push((step, path));
            }
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    /// The checkpoint to resume from: the one `latest` names if it is complete, else the
    /// newest complete one; `None` when there is none.
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
        let pointer = self.root.join("latest");
        if let Ok(text) = fs::read_to_string(&pointer) {
            let name = text.trim();
            let step = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(step) = step {
                let dir = self.step_dir(step);
                if dir.join(COMPLETE_MARKER).is_file() {
                    return Ok(Some((step, dir)));
                }
            }
        }
        Ok(self.list()?.pop())
    }

    /// Removes all but the newest `keep` complete checkpoints, never `protect`.
    fn prune(&self, keep: usize, protect: u64) -> Result<(), CheckpointError> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(keep.max(1));
        for (step, path) in all.into_iter().take(excess) {
            if step != protect {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

/// Syncs every file below `dir` and the folders themselves, so the data is on disk before
/// the rename makes the checkpoint visible.
fn sync_tree(dir: &Path) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    // Directory fsync makes renames durable on Linux; other platforms may refuse to open a
    // directory, which is not an error worth failing a checkpoint over.
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
    Ok(())
}

/// Copies the tokenizer and generation files of a model folder (whichever exist) into `dst`,
/// so a checkpoint folder is a complete Hugging Face model folder.
pub fn copy_tokenizer_files(src: &Path, dst: &Path) -> Result<(), CheckpointError> {
    const FILES: [&str; 6] = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "vocab.json",
        "merges.txt",
    ];
    for name in FILES {
        let from = src.join(name);
        if from.is_file() {
            let to = dst.join(name);
            fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_payload(dir: &Path, value: &str) -> Result<(), String> {
        fs::write(dir.join("payload.txt"), value).map_err(|e| e.to_string())
    }

    fn payload(dir: &Path) -> String {
        fs::read_to_string(dir.join("payload.txt")).unwrap()
    }

    #[test]
    fn save_sets_latest_and_prunes_to_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path().join("checkpoints"));
        assert!(c.latest().unwrap().is_none());
        for step in [1, 2, 3, 4] {
            c.save(step, 2, |d| write_payload(d, &format!("s{step}")))
                .unwrap();
        }
        let (step, dir) = c.latest().unwrap().unwrap();
        assert_eq!(step, 4);
        assert_eq!(payload(&dir), "s4");
        let steps: Vec<u64> = c.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [3, 4]);
    }

    #[test]
    fn failed_write_keeps_previous_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path());
        c.save(5, 3, |d| write_payload(d, "good")).unwrap();
        let err = c
            .save(6, 3, |d| {
                write_payload(d, "half")?;
                Err::<(), _>("disk full".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("disk full") && err.to_string().contains("step 6"),
            "{err}"
        );
        let (step, dir) = c.latest().unwrap().unwrap();
        assert_eq!((step, payload(&dir).as_str()), (5, "good"));
        assert!(!c.step_dir(6).exists());
    }

    #[test]
    fn crash_leftovers_are_never_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path());
        c.save(2, 3, |d| write_payload(d, "good")).unwrap();
        // A crash after the rename of an unmarked folder cannot happen through `save`, but a
        // folder copied by hand or cut short by a full disk looks like this:
        fs::create_dir_all(c.step_dir(9)).unwrap();
        write_payload(&c.step_dir(9), "partial").unwrap();
        // A crash mid-write leaves the temporary folder behind, and a stale pointer:
        fs::create_dir_all(tmp.path().join(".tmp-step-3")).unwrap();
        assert_eq!(c.latest().unwrap().unwrap().0, 2);
        fs::write(tmp.path().join("latest"), "step-7\n").unwrap();
        assert_eq!(
            c.latest().unwrap().unwrap().0,
            2,
            "falls back to the newest complete one"
        );
        // The next save of that step replaces the leftover.
        c.save(3, 3, |d| write_payload(d, "three")).unwrap();
        assert_eq!(payload(&c.latest().unwrap().unwrap().1), "three");
    }

    #[test]
    fn resaving_a_step_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path());
        c.save(4, 2, |d| write_payload(d, "first")).unwrap();
        c.save(4, 2, |d| write_payload(d, "second")).unwrap();
        assert_eq!(payload(&c.latest().unwrap().unwrap().1), "second");
        assert_eq!(c.list().unwrap().len(), 1);
    }
}
