//! Settings for `tbrm train`: one precedence, resolved in one place (astral-sh/uv's
//! `settings.rs` shape): the config file (or the embedded default), then the file's
//! `[algorithm_defaults.<name>]` table for the chosen algorithm (`--algorithm`, else
//! `--set algorithm.name=...`, else the file's `algorithm.name`), then `--set key=value`
//! overrides applied to the TOML tree, then the named flags. The result is deserialised into
//! tbrm-train's `TrainConfig`, whose errors name the key; this file adds the file name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tbrm_train::config::algorithm_defaults::{named_algorithm, LayeredConfig};
use tbrm_train::config::{Algorithm, DeviceChoice};
use tbrm_train::TrainConfig;

/// The built-in default (`tbrm train` with no arguments).
pub const DEFAULT_TOML: &str = include_str!("../../../configs/default.toml");
/// The built-in Countdown task (`tbrm train --data builtin:countdown` without `--config`).
pub const COUNTDOWN_TOML: &str = include_str!("../../../configs/countdown.toml");
/// The paper's math settings (`tbrm train --model DIR --data FILE` without `--config`).
pub const MATH_TOML: &str = include_str!("../../../configs/math.toml");

/// The flags that map onto config keys.
#[derive(Debug, Default, Clone)]
pub struct TrainFlags {
    pub config: Option<PathBuf>,
    pub set: Vec<String>,
    pub algorithm: Option<String>,
    pub model: Option<PathBuf>,
    pub rollouts_per_prompt: Option<usize>,
    pub steps: Option<u64>,
    pub device: Option<String>,
    pub data: Option<String>,
    pub seed: Option<u64>,
    pub held_out: Option<String>,
}

/// Applies one `--set key.sub=value` to a TOML tree. The value is read as a TOML value
/// (`0.1`, `true`, `"text"`, `[1, 2]`); anything that is not one is taken as a string, so
/// `--set data.template=qwen_math` works without quotes.
pub fn apply_set(tree: &mut toml::Table, assignment: &str) -> anyhow::Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment:?}: expected KEY=VALUE, e.g. optim.lr=1e-5"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {assignment:?}: bad key {key:?}");
    }
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = tree;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!(
                "--set {assignment:?}: `{}` is a value, not a section",
                parts[..=i].join(".")
            ),
        };
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Reads the base config text: `--config FILE`, else the embedded math config when `--data`
/// names a file, the embedded Countdown config for `--data builtin:countdown`, else the
/// embedded built-in default. Returns (text, where it came from).
fn base_text(flags: &TrainFlags) -> anyhow::Result<(String, String)> {
    if let Some(path) = &flags.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        return Ok((text, path.display().to_string()));
    }
    match &flags.data {
        Some(d) if !d.starts_with("builtin:") => {
            Ok((MATH_TOML.to_string(), "configs/math.toml (built in)".into()))
        }
        Some(d) if d == "builtin:countdown" => Ok((
            COUNTDOWN_TOML.to_string(),
            "configs/countdown.toml (built in)".into(),
        )),
        _ => Ok((
            DEFAULT_TOML.to_string(),
            "configs/default.toml (built in)".into(),
        )),
    }
}

/// Resolves flags into a validated `TrainConfig`.
#[cfg(test)]
pub fn resolve(flags: &TrainFlags) -> anyhow::Result<TrainConfig> {
    Ok(resolve_noted(flags)?.0)
}

/// Resolves flags into a validated `TrainConfig`, plus a line saying which per-algorithm settings of the config file were
/// applied (`None` when the chosen algorithm has no table there).
pub fn resolve_noted(flags: &TrainFlags) -> anyhow::Result<(TrainConfig, Option<String>)> {
    let (text, origin) = base_text(flags)?;
    let tree: toml::Table =
        toml::from_str(&text).with_context(|| format!("{origin}: not valid TOML"))?;
    let layered = LayeredConfig::split(tree).with_context(|| origin.clone())?;
    // The chosen algorithm: --algorithm, else the name after --set, else the file's.
    let algorithm = match &flags.algorithm {
        Some(a) => Some(a.parse::<Algorithm>().context("--algorithm")?),
        None => {
            let mut probe = layered.base().clone();
            for s in &flags.set {
                apply_set(&mut probe, s)?;
            }
            named_algorithm(&probe)
        }
    }
    .unwrap_or(Algorithm::Tbrm);
    let mut tree = layered.tree_for(algorithm);
    for s in &flags.set {
        apply_set(&mut tree, s)?;
    }
    let note = applied_note(&layered, algorithm, &flags.set, &origin);
    let mut cfg = TrainConfig::from_toml_value(toml::Value::Table(tree)).with_context(|| {
        if flags.set.is_empty() {
            origin.clone()
        } else {
            format!("{origin} with --set overrides")
        }
    })?;
    apply_flags(&mut cfg, flags)?;
    for committed in [
        tbrm_train::builtin::DEFAULT_MODEL_DIR,
        tbrm_train::builtin::COUNTDOWN_MODEL_DIR,
    ] {
        let committed = Path::new(committed);
        if cfg.model.path == committed && !committed.is_dir() {
            // Run from outside the repository: use the checkout this binary was built from.
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(committed);
            if built_from.is_dir() {
                cfg.model.path = built_from;
            }
        }
    }
    if !cfg.data.train.starts_with("builtin:")
        && flags.model.is_none()
        && cfg
            .model
            .path
            .ends_with(tbrm_train::builtin::DEFAULT_MODEL_DIR)
    {
        bail!(
            "training on {} needs a model that can read it: pass --model DIR (a Hugging Face model folder)",
            cfg.data.train
        );
    }
    cfg.validate()
        .with_context(|| format!("invalid configuration (from {origin} and flags)"))?;
    Ok((cfg, note))
}

/// "algorithm_defaults.grpo of ORIGIN: rollout.n = 4, optim.lr = 5e-5" for the keys of the
/// chosen algorithm's table that no `--set` replaced.
fn applied_note(
    layered: &LayeredConfig,
    algorithm: Algorithm,
    sets: &[String],
    origin: &str,
) -> Option<String> {
    let set_keys: Vec<&str> = sets
        .iter()
        .filter_map(|s| s.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let kept: Vec<String> = layered
        .settings(algorithm)
        .into_iter()
        .filter(|(k, _)| !set_keys.contains(&k.as_str()))
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    (!kept.is_empty()).then(|| {
        format!(
            "{} settings from [algorithm_defaults.{}] of {origin}: {}",
            algorithm.as_str(),
            algorithm.as_str(),
            kept.join(", ")
        )
    })
}

/// The named flags, applied over the config.
pub fn apply_flags(cfg: &mut TrainConfig, flags: &TrainFlags) -> anyhow::Result<()> {
    if let Some(a) = &flags.algorithm {
        cfg.algorithm.name = a.parse::<Algorithm>().context("--algorithm")?;
    }
    if let Some(m) = &flags.model {
        cfg.model.path = m.clone();
    }
    if let Some(n) = flags.rollouts_per_prompt {
        cfg.rollout.n = n;
    }
    if let Some(s) = flags.steps {
        cfg.train.steps = s;
    }
    if let Some(d) = &flags.device {
        cfg.model.device = d
            .parse::<DeviceChoice>()
            .map_err(anyhow::Error::msg)
            .context("--device")?;
    }
    if let Some(d) = &flags.data {
        cfg.data.train = d.clone();
    }
    if let Some(s) = flags.seed {
        cfg.train.seed = s;
    }
    if let Some(h) = &flags.held_out {
        cfg.data.held_out = Some(h.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_configs_are_valid() {
        let cfg = resolve(&TrainFlags::default()).unwrap();
        assert_eq!(cfg.data.train, "builtin:arith");
        let countdown = resolve(&TrainFlags {
            data: Some("builtin:countdown".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(countdown.data.train, "builtin:countdown");
        assert!(countdown
            .model
            .path
            .ends_with(tbrm_train::builtin::COUNTDOWN_MODEL_DIR));
        let math = TrainConfig::from_toml_str(MATH_TOML).unwrap();
        assert_eq!(math.algorithm.beta, 0.002);
        assert_eq!(math.optim.lr, 2.5e-6);
    }

    #[test]
    fn set_overrides_then_flags_win() {
        let flags = TrainFlags {
            set: vec![
                "optim.lr=0.5".into(),
                "rollout.n=3".into(),
                "data.template=chat".into(),
            ],
            rollouts_per_prompt: Some(2),
            algorithm: Some("grpo".into()),
            ..Default::default()
        };
        let cfg = resolve(&flags).unwrap();
        assert_eq!(cfg.optim.lr, 0.5);
        assert_eq!(cfg.rollout.n, 2);
        assert_eq!(cfg.algorithm.name, Algorithm::Grpo);
        assert_eq!(String::from(cfg.data.template.clone()), "chat");
    }

    /// Checks that every key of `algo`'s table in `text` has the table's value in `cfg`.
    fn has_table_values(cfg: &TrainConfig, text: &str, algo: Algorithm) {
        let l = LayeredConfig::split(toml::from_str(text).unwrap()).unwrap();
        let resolved: toml::Table = toml::from_str(&cfg.to_toml_string()).unwrap();
        let table = l
            .table(algo)
            .expect("the file has a table for the algorithm");
        let mut checked = 0;
        for (section, keys) in table {
            for (k, want) in keys.as_table().unwrap() {
                assert_eq!(&resolved[section][k], want, "{section}.{k} of {algo:?}");
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn algorithm_switch_picks_up_that_algorithms_defaults_and_set_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.toml");
        std::fs::write(
            &file,
            "[optim]\nlr = 1e-4\n[algorithm_defaults.ppo.optim]\nlr = 3e-5\n\
             [algorithm_defaults.ppo.algorithm]\ncritic_lr = 1e-3\nepochs = 2\nmini_batches = 4\n",
        )
        .unwrap();
        let flags = |algorithm: Option<&str>, set: &[&str]| TrainFlags {
            config: Some(file.clone()),
            algorithm: algorithm.map(str::to_string),
            set: set.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let (tbrm, note) = resolve_noted(&flags(None, &[])).unwrap();
        assert_eq!((tbrm.optim.lr, tbrm.algorithm.critic_lr), (1e-4, 1e-5));
        assert_eq!((tbrm.algorithm.epochs, tbrm.algorithm.mini_batches), (1, 1));
        assert!(note.is_none());
        let (ppo, note) = resolve_noted(&flags(Some("ppo"), &[])).unwrap();
        assert_eq!(ppo.algorithm.name, Algorithm::Ppo);
        assert_eq!((ppo.optim.lr, ppo.algorithm.critic_lr), (3e-5, 1e-3));
        assert_eq!((ppo.algorithm.epochs, ppo.algorithm.mini_batches), (2, 4));
        let note = note.expect("the applied table is reported");
        assert!(
            note.contains("optim.lr = ") && note.contains("algorithm_defaults.ppo"),
            "{note}"
        );
        // An explicit --set wins over the table (and the note leaves it out); the table's
        // other keys stay. `--set algorithm.name` chooses the table as --algorithm does.
        let (ppo, note) = resolve_noted(&flags(
            Some("ppo"),
            &["optim.lr=3e-6", "algorithm.epochs=3"],
        ))
        .unwrap();
        assert_eq!((ppo.optim.lr, ppo.algorithm.epochs), (3e-6, 3));
        assert_eq!(
            (ppo.algorithm.critic_lr, ppo.algorithm.mini_batches),
            (1e-3, 4)
        );
        assert!(!note.unwrap().contains("optim.lr"));
        let by_name = resolve(&flags(None, &["algorithm.name=ppo"])).unwrap();
        assert_eq!(by_name, resolve(&flags(Some("ppo"), &[])).unwrap());

        // The embedded default: each baseline gets its whole table; TBRM keeps one optimizer
        // step per training step.
        let builtin = |algorithm: &str| {
            resolve(&TrainFlags {
                algorithm: Some(algorithm.into()),
                ..Default::default()
            })
            .unwrap()
        };
        has_table_values(&builtin("ppo"), DEFAULT_TOML, Algorithm::Ppo);
        let grpo = builtin("grpo");
        has_table_values(&grpo, DEFAULT_TOML, Algorithm::Grpo);
        assert_eq!(grpo.rollout.n, 4);
        let tbrm = builtin("tbrm");
        assert_eq!((tbrm.algorithm.epochs, tbrm.algorithm.mini_batches), (1, 1));
        assert_eq!(tbrm.rollout.n, 1);

        // The math config: the paper's baselines.
        let math = |algorithm: &str| {
            resolve(&TrainFlags {
                algorithm: Some(algorithm.into()),
                data: Some("problems.jsonl".into()),
                model: Some("some/model".into()),
                ..Default::default()
            })
            .unwrap()
        };
        let ppo = math("ppo");
        assert_eq!((ppo.optim.lr, ppo.algorithm.critic_lr), (1e-6, 1e-5));
        assert_eq!(
            (ppo.algorithm.kl_coef, ppo.algorithm.entropy_coef),
            (0.001, 0.001)
        );
        assert_eq!(ppo.algorithm.clip, 0.2);
        let grpo = math("grpo");
        assert_eq!((grpo.rollout.n, grpo.algorithm.kl_coef), (4, 0.001));
        assert_eq!(math("tbrm").optim.lr, 2.5e-6);
    }

    #[test]
    fn unknown_keys_in_algorithm_tables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.toml");
        std::fs::write(
            &file,
            "[algorithm_defaults.ppo.optim]
lrr = 1e-5
",
        )
        .unwrap();
        let flags = TrainFlags {
            config: Some(file),
            ..Default::default()
        };
        let err = format!("{:#}", resolve(&flags).unwrap_err());
        assert!(
            err.contains("algorithm_defaults.ppo.optim.lrr") && err.contains("my.toml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_name_key_and_origin() {
        let flags = TrainFlags {
            set: vec!["optim.learning_rate=1".into()],
            ..Default::default()
        };
        let err = format!("{:#}", resolve(&flags).unwrap_err());
        assert!(
            err.contains("optim.learning_rate") && err.contains("configs/default.toml"),
            "{err}"
        );
        let flags = TrainFlags {
            data: Some("builtin:countdown".into()),
            set: vec!["countdown.max_numbrs=5".into()],
            ..Default::default()
        };
        let err = format!("{:#}", resolve(&flags).unwrap_err());
        assert!(
            err.contains("countdown.max_numbrs") && err.contains("configs/countdown.toml"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.toml");
        std::fs::write(&file, "[rollout]\nn = 4\ntemprature = 0.5\n").unwrap();
        let flags = TrainFlags {
            config: Some(file.clone()),
            ..Default::default()
        };
        let err = format!("{:#}", resolve(&flags).unwrap_err());
        assert!(
            err.contains("rollout.temprature") && err.contains("my.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_and_bad_set_syntax_are_errors() {
        let bad = |s: &str| {
            let flags = TrainFlags {
                set: vec![s.into()],
                ..Default::default()
            };
            format!("{:#}", resolve(&flags).unwrap_err())
        };
        assert!(bad("algorithm.beta=-1").contains("algorithm.beta"));
        assert!(bad("optim.lr=fast").contains("optim.lr"));
        assert!(bad("no_equals_sign").contains("KEY=VALUE"));
        assert!(bad("model.path.x=1").contains("not a section"));
        let flags = TrainFlags {
            algorithm: Some("dpo".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", resolve(&flags).unwrap_err()).contains("dpo"));
        let flags = TrainFlags {
            data: Some("problems.jsonl".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", resolve(&flags).unwrap_err()).contains("--model"));
    }
}
