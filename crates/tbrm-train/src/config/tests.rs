//! Unit tests of `TrainConfig` (parsing, key names in errors, validation, warnings).

use super::*;

#[test]
fn defaults_round_trip_through_toml() {
    let cfg = TrainConfig::default();
    let text = cfg.to_toml_string();
    let back = TrainConfig::from_toml_str(&text).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(cfg.algorithm.beta, 0.002);
    cfg.validate().unwrap();
}

#[test]
fn temperature_other_than_one_warns_for_ratio_methods_only() {
    let mut cfg = TrainConfig::default();
    assert!(cfg.warnings().is_empty());
    cfg.rollout.temperature = 0.7;
    assert!(cfg.warnings().is_empty(), "TBRM has no importance ratio");
    for algo in [Algorithm::Grpo, Algorithm::Ppo] {
        cfg.algorithm.name = algo;
        let w = cfg.warnings();
        assert_eq!(w.len(), 1, "{algo:?}");
        assert!(w[0].contains("rollout.temperature = 0.7"), "{}", w[0]);
    }
    cfg.rollout.temperature = 1.0;
    assert!(cfg.warnings().is_empty());
}

#[test]
fn unknown_key_is_named_with_its_section() {
    let err = TrainConfig::from_toml_str("[rollout]\nnn = 4\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollout.nn"), "{err}");
    let err = TrainConfig::from_toml_str("[optimiser]\nlr = 1.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimiser"), "{err}");
}

#[test]
fn wrong_type_and_bad_enum_are_named() {
    let err = TrainConfig::from_toml_str("[optim]\nlr = \"fast\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("optim.lr"), "{err}");
    let err = TrainConfig::from_toml_str("[algorithm]\nname = \"dpo\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("algorithm.name") && err.contains("dpo"),
        "{err}"
    );
    let err = TrainConfig::from_toml_str("[rollout]\ntruncated = \"cut\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollout.truncated"), "{err}");
}

#[test]
fn invalid_values_are_named() {
    let mut cfg = TrainConfig::default();
    cfg.algorithm.beta = 0.0;
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("algorithm.beta"));

    let mut cfg = TrainConfig::default();
    cfg.algorithm.name = Algorithm::Grpo;
    cfg.rollout.n = 1;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("rollout.n") && err.contains("GRPO"), "{err}");

    let mut cfg = TrainConfig::default();
    cfg.sources.replay_fraction = 0.5;
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("sources.replay_capacity"));

    let mut cfg = TrainConfig::default();
    cfg.optim.lr = f64::NAN;
    assert!(cfg.validate().unwrap_err().to_string().contains("optim.lr"));

    let mut cfg = TrainConfig::default();
    cfg.data.train = "builtin:chess".into();
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("data.train"));
}
