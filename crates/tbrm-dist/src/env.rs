//! Reading the rank layout that torchrun (torch.distributed.run) exports to each worker.
//!
//! torchrun sets `RANK` (global rank), `WORLD_SIZE`, `LOCAL_RANK` (index on this node, used as
//! the CUDA device for NCCL), `MASTER_ADDR` and `MASTER_PORT` (where rank 0's TCPStore
//! listens). Parsing goes through a lookup closure so tests need not mutate the process
//! environment, which other test threads share.

use std::time::Duration;

use crate::{Backend, DistError, Options};

fn var(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, DistError> {
    match lookup(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Some(_) => Err(DistError::Env {
            var: name,
            reason: "is empty".into(),
        }),
        None => Err(DistError::Env {
            var: name,
            reason: "is not set (launch with torchrun, or set RANK, WORLD_SIZE, LOCAL_RANK, \
                     MASTER_ADDR and MASTER_PORT)"
                .into(),
        }),
    }
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    what: &str,
) -> Result<T, DistError> {
    let raw = var(lookup, name)?;
    raw.parse().map_err(|_| DistError::Env {
        var: name,
        reason: format!("expected {what}, got {raw:?}"),
    })
}

/// Builds [`Options`] from torchrun-style variables looked up through `lookup`.
pub(crate) fn options_from_lookup(
    backend: Backend,
    timeout: Duration,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Options, DistError> {
    let rank: usize = parse(&lookup, "RANK", "a non-negative integer")?;
    let world_size: usize = parse(&lookup, "WORLD_SIZE", "a positive integer")?;
    if world_size == 0 {
        return Err(DistError::Env {
            var: "WORLD_SIZE",
            reason: "must be at least 1".into(),
        });
    }
    if rank >= world_size {
        return Err(DistError::Env {
            var: "RANK",
            reason: format!("{rank} is not below WORLD_SIZE {world_size}"),
        });
    }
    let local_rank: usize = parse(&lookup, "LOCAL_RANK", "a non-negative integer")?;
    let master_addr = var(&lookup, "MASTER_ADDR")?;
    let master_port: u16 = parse(&lookup, "MASTER_PORT", "a TCP port (1-65535)")?;
    if master_port == 0 {
        return Err(DistError::Env {
            var: "MASTER_PORT",
            reason: "must not be 0".into(),
        });
    }
    Ok(Options {
        backend,
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 5] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    fn err_of(pairs: &[(&str, &str)]) -> String {
        options_from_lookup(Backend::Gloo, Duration::from_secs(1), env(pairs))
            .unwrap_err()
            .to_string()
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        FULL.iter().copied().filter(|(k, _)| *k != name).collect()
    }

    fn with(name: &str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        FULL.iter()
            .map(|&(k, v)| if k == name { (k, value) } else { (k, v) })
            .collect()
    }

    #[test]
    fn full_env_parses() {
        let o = options_from_lookup(Backend::Nccl, Duration::from_secs(3), env(&FULL)).unwrap();
        assert_eq!((o.rank, o.world_size, o.local_rank), (1, 4, 1));
        assert_eq!((o.master_addr.as_str(), o.master_port), ("10.0.0.1", 29500));
        assert_eq!(o.backend, Backend::Nccl);
        assert_eq!(o.timeout, Duration::from_secs(3));
    }

    #[test]
    fn missing_variables_are_named() {
        for name in [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
        ] {
            let msg = err_of(&without(name));
            assert!(
                msg.starts_with(&format!("environment variable {name}:")),
                "{msg}"
            );
            assert!(msg.contains("is not set"), "{msg}");
        }
    }

    #[test]
    fn malformed_variables_are_named() {
        let cases = [
            ("RANK", "-1", "non-negative integer"),
            ("WORLD_SIZE", "two", "positive integer"),
            ("WORLD_SIZE", "0", "at least 1"),
            ("RANK", "4", "not below WORLD_SIZE 4"),
            ("LOCAL_RANK", "x", "non-negative integer"),
            ("MASTER_ADDR", " ", "is empty"),
            ("MASTER_PORT", "70000", "TCP port"),
            ("MASTER_PORT", "0", "must not be 0"),
        ];
        for (name, value, expect) in cases {
            let msg = err_of(&with(name, value));
            assert!(
                msg.starts_with(&format!("environment variable {name}:")),
                "{msg}"
            );
            assert!(msg.contains(expect), "{name}={value}: {msg}");
        }
    }
}
