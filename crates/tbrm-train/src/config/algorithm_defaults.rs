//! Per-algorithm settings in a config file: `[algorithm_defaults.<tbrm|grpo|ppo>]` tables
//! whose keys are ordinary config keys, applied over the rest of the file when that algorithm
//! is the one chosen (`algorithm.name`, `--algorithm` or `--set algorithm.name=...`).
//!
//! ```toml
//! [optim]
//! lr = 1e-4                 # TBRM's
//! [algorithm_defaults.grpo.rollout]
//! n = 4
//! [algorithm_defaults.grpo.optim]
//! lr = 5e-5                 # used instead when GRPO is chosen
//! ```
//!
//! Precedence, lowest first: the file's sections, the chosen algorithm's table, `--set`, the
//! named flags. So `tbrm train --algorithm grpo` on a file that carries a GRPO table gets
//! GRPO's own n, learning rate and schedule, and an explicit `--set optim.lr=...` still wins.
//! A file without tables is used as it is. The resolved values (no tables) are what a run
//! folder's `config.toml` records.
//!
//! Errors name the key: an unknown algorithm is `algorithm_defaults.dpo`, an unknown key
//! inside a table `algorithm_defaults.grpo.optim.lrr`.

use std::collections::BTreeMap;

use super::{Algorithm, ConfigError, TrainConfig};

/// The top-level key that holds the per-algorithm tables.
pub const TABLE: &str = "algorithm_defaults";

/// A config tree split into its sections and its per-algorithm tables.
#[derive(Debug, Clone, Default)]
pub struct LayeredConfig {
    base: toml::Table,
    tables: BTreeMap<Algorithm, toml::Table>,
}

/// Merges `from` into `into`: tables key by key, recursively; any other value replaces.
pub fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Dotted `key = value` pairs of the leaves of `t`, in key order.
fn leaves(prefix: &str, t: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => leaves(&key, inner, out),
            other => out.push((key, other.to_string())),
        }
    }
}

/// The algorithm a tree names in `algorithm.name` (`None`: absent or not a known name; the
/// deserialiser reports a bad one).
pub fn named_algorithm(tree: &toml::Table) -> Option<Algorithm> {
    tree.get("algorithm")?
        .get("name")?
        .as_str()?
        .parse::<Algorithm>()
        .ok()
}

impl LayeredConfig {
    /// Takes the `algorithm_defaults` table out of `tree`. Checks the algorithm names, that no
    /// table sets `algorithm.name`, and that every table's keys are config keys (merged over
    /// the sections, each must deserialise); errors name the key with its table.
    pub fn split(mut tree: toml::Table) -> Result<Self, ConfigError> {
        let raw =
            match tree.remove(TABLE) {
                None => toml::Table::new(),
                Some(toml::Value::Table(t)) => t,
                Some(_) => return Err(ConfigError::invalid(
                    TABLE,
                    "must be a table of per-algorithm tables, e.g. [algorithm_defaults.grpo.optim]",
                )),
            };
        let mut tables = BTreeMap::new();
        for (name, value) in raw {
            let key = format!("{TABLE}.{name}");
            let algo = name.parse::<Algorithm>().map_err(|_| {
                ConfigError::invalid(&key, "unknown algorithm (use tbrm, grpo or ppo)")
            })?;
            let toml::Value::Table(t) = value else {
                return Err(ConfigError::invalid(&key, "must be a table of config keys"));
            };
            if t.get("algorithm").and_then(|a| a.get("name")).is_some() {
                return Err(ConfigError::invalid(
                    &format!("{key}.algorithm.name"),
                    "a per-algorithm table cannot choose the algorithm",
                ));
            }
            tables.insert(algo, t);
        }
        let layered = LayeredConfig { base: tree, tables };
        TrainConfig::deserialize_tree(toml::Value::Table(layered.base.clone()))?;
        for (algo, t) in &layered.tables {
            let mut tree = layered.base.clone();
            merge(&mut tree, t);
            TrainConfig::deserialize_tree(toml::Value::Table(tree)).map_err(|e| match e {
                ConfigError::Key { key, message } => ConfigError::Key {
                    key: format!("{TABLE}.{}.{key}", algo.as_str()),
                    message,
                },
                other => other,
            })?;
        }
        Ok(layered)
    }

    /// The file's sections, without the tables.
    pub fn base(&self) -> &toml::Table {
        &self.base
    }

    /// The table of `algo`, if the file has one.
    pub fn table(&self, algo: Algorithm) -> Option<&toml::Table> {
        self.tables.get(&algo)
    }

    /// The sections with `algo`'s table merged over them.
    pub fn tree_for(&self, algo: Algorithm) -> toml::Table {
        let mut tree = self.base.clone();
        if let Some(t) = self.tables.get(&algo) {
            merge(&mut tree, t);
        }
        tree
    }

    /// `algo`'s table as dotted `key = value` pairs (empty without one).
    pub fn settings(&self, algo: Algorithm) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(t) = self.tables.get(&algo) {
            leaves("", t, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[algorithm]
name = "tbrm"
[optim]
lr = 1e-4
micro_batch = 8
[algorithm_defaults.grpo.rollout]
n = 4
[algorithm_defaults.grpo.optim]
lr = 5e-5
[algorithm_defaults.grpo.algorithm]
mini_batches = 4
"#;

    fn tree(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_chosen_algorithms_table_overrides_the_sections() {
        let l = LayeredConfig::split(tree(FILE)).unwrap();
        let tbrm =
            TrainConfig::from_toml_value(toml::Value::Table(l.tree_for(Algorithm::Tbrm))).unwrap();
        assert_eq!((tbrm.optim.lr, tbrm.rollout.n), (1e-4, 1));
        assert_eq!(tbrm.algorithm.mini_batches, 1);
        let grpo =
            TrainConfig::from_toml_value(toml::Value::Table(l.tree_for(Algorithm::Grpo))).unwrap();
        assert_eq!((grpo.optim.lr, grpo.rollout.n), (5e-5, 4));
        assert_eq!(grpo.algorithm.mini_batches, 4);
        assert_eq!(
            grpo.optim.micro_batch, 8,
            "keys the table does not set stay"
        );
        let s = l.settings(Algorithm::Grpo);
        assert!(s.contains(&("rollout.n".into(), "4".into())), "{s:?}");
        assert!(l.settings(Algorithm::Ppo).is_empty());
    }

    #[test]
    fn from_toml_value_applies_the_table_of_the_named_algorithm() {
        let text = FILE.replace("name = \"tbrm\"", "name = \"grpo\"");
        let cfg = TrainConfig::from_toml_str(&text).unwrap();
        assert_eq!((cfg.optim.lr, cfg.rollout.n), (5e-5, 4));
        let cfg = TrainConfig::from_toml_str(FILE).unwrap();
        assert_eq!((cfg.optim.lr, cfg.rollout.n), (1e-4, 1));
    }

    #[test]
    fn errors_name_the_table_and_key() {
        let err = |text: &str| LayeredConfig::split(tree(text)).unwrap_err().to_string();
        let e = err(&format!(
            "{FILE}\n[algorithm_defaults.ppo.optim]\nlrr = 1\n"
        ));
        assert!(e.contains("algorithm_defaults.ppo.optim.lrr"), "{e}");
        let e = err("[algorithm_defaults.dpo.optim]\nlr = 1\n");
        assert!(e.contains("algorithm_defaults.dpo"), "{e}");
        let e = err("[algorithm_defaults.grpo.algorithm]\nname = \"ppo\"\n");
        assert!(e.contains("algorithm_defaults.grpo.algorithm.name"), "{e}");
        let e = err("[algorithm_defaults.grpo.optim]\nlr = \"fast\"\n");
        assert!(e.contains("algorithm_defaults.grpo.optim.lr"), "{e}");
        let e = err("algorithm_defaults = 3\n");
        assert!(e.contains("algorithm_defaults"), "{e}");
    }
}
