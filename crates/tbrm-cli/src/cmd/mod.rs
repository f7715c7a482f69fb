//! One module per subcommand. Helpers shared by several subcommands live here.

pub mod bench;
pub mod eval;
pub mod generate;
pub mod report;
mod rollout_bench;
pub mod score;
pub mod sft;
pub mod train;
mod train_step_bench;
pub mod verify;

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `--device`: `auto` (CUDA device 0 when available, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> anyhow::Result<tch::Device> {
    let cuda = |i: usize| -> anyhow::Result<tch::Device> {
        if !tch::Cuda::is_available() {
            anyhow::bail!("--device {s}: CUDA is not available on this machine");
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            anyhow::bail!("--device {s}: only {n} CUDA device(s) present");
        }
        Ok(tch::Device::Cuda(i))
    };
    match s {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => anyhow::bail!("--device: expected auto, cpu, cuda or cuda:N, got {s:?}"),
        },
    }
}

/// `--dtype`: `f32`, `bf16`, `f16`, or `auto` (bf16 on CUDA, f32 on CPU).
pub fn parse_dtype(s: &str, device: tch::Device) -> anyhow::Result<tch::Kind> {
    match s {
        "auto" if device.is_cuda() => Ok(tch::Kind::BFloat16),
        "auto" | "f32" | "float32" => Ok(tch::Kind::Float),
        "bf16" | "bfloat16" => Ok(tch::Kind::BFloat16),
        "f16" | "float16" | "half" => Ok(tch::Kind::Half),
        _ => anyhow::bail!("--dtype: expected auto, f32, bf16 or f16, got {s:?}"),
    }
}

/// The tokenizer and model of an HF folder on the `--device`/`--dtype` given as flag strings,
/// with errors that name the folder.
pub fn load_model(
    dir: &std::path::Path,
    device: &str,
    dtype: &str,
) -> anyhow::Result<(tbrm_model::Tokenizer, tbrm_model::CausalLm)> {
    use anyhow::Context;
    let device = parse_device(device)?;
    let dtype = parse_dtype(dtype, device)?;
    let tok = tbrm_model::Tokenizer::load(dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let model = tbrm_model::CausalLm::load(dir, device, dtype)
        .with_context(|| format!("loading the model {}", dir.display()))?;
    Ok((tok, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_dtype_flags_parse_or_name_the_flag() {
        assert_eq!(parse_device("cpu").unwrap(), tch::Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("--device"));
        assert!(parse_device("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("--device"));
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), tch::Device::Cpu);
            assert!(parse_device("cuda:0")
                .unwrap_err()
                .to_string()
                .contains("not available"));
        }
        assert_eq!(
            parse_dtype("auto", tch::Device::Cpu).unwrap(),
            tch::Kind::Float
        );
        assert_eq!(
            parse_dtype("auto", tch::Device::Cuda(0)).unwrap(),
            tch::Kind::BFloat16
        );
        assert_eq!(
            parse_dtype("bf16", tch::Device::Cpu).unwrap(),
            tch::Kind::BFloat16
        );
        assert_eq!(
            parse_dtype("f16", tch::Device::Cpu).unwrap(),
            tch::Kind::Half
        );
        assert!(parse_dtype("int8", tch::Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("--dtype"));
    }
}
