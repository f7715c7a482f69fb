//! Model configuration in two steps, as candle does it (`LlamaConfig` then `Config` in
//! `candle-transformers/src/models/llama.rs`): [`HfConfig`] is `config.json` with Hugging Face's
//! exact keys (both the transformers-4 `rope_theta`/`rope_scaling` and the transformers-5
//! `rope_parameters` spelling), and [`ModelConfig`] is the resolved, validated form the layers
//! read, with every default filled in once by the family (see `models/` and `auto.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::Kind;

use crate::ModelError;

/// `config.json` exactly as transformers writes it. Keys this crate does not read are kept in
/// `extra` and written back on save, so a loaded-then-saved model keeps e.g. its token ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfConfig {
    pub model_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// transformers 4 spelling; `null` in most Qwen configs.
    #[serde(default)]
    pub rope_scaling: Option<HfRopeParams>,
    /// transformers 5 spelling (`rope_type` and `rope_theta` inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<HfRopeParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `rope_scaling` / `rope_parameters` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HfRopeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// Older spelling of `rope_type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<i64>,
}

/// The supported families; `config.json` `model_type` picks one (see `auto.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Qwen2, Qwen2.5, Qwen2.5-Math: q/k/v bias.
    Qwen2,
    /// Llama 3 (3.1/3.2 with `llama3` RoPE scaling).
    Llama,
    /// Qwen3: per-head RMSNorm on q and k.
    Qwen3,
}

/// RoPE frequency scaling beyond plain `rope_theta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's piecewise frequency rescaling (transformers `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: i64,
    },
}

/// The resolved configuration: what the layers read. Built from [`HfConfig`] by
/// [`ModelConfig::from_hf`] or by hand (start from [`ModelConfig::tiny`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub model_type: ModelType,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub max_position_embeddings: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Bias on q_proj, k_proj, v_proj.
    pub qkv_bias: bool,
    /// Bias on o_proj.
    pub o_bias: bool,
    /// Bias on gate/up/down projections.
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm over each head of q and k, before RoPE.
    pub qk_norm: bool,
    /// Std of the normal init used by [`crate::CausalLm::from_config`].
    pub initializer_range: f64,
    /// Other `config.json` keys (token ids, `transformers_version`, ...), written back on save.
    pub extra: Map<String, Value>,
}

/// What a family fixes or defaults; each `models/<family>.rs` owns one of these.
pub(crate) struct FamilySpec {
    pub model_type: ModelType,
    /// `model_type` string in config.json.
    pub name: &'static str,
    /// `architectures[0]` in config.json.
    pub architecture: &'static str,
    /// Qwen2 always has q/k/v bias and never o_proj bias; Llama and Qwen3 read `attention_bias`
    /// for all four projections.
    pub fixed_qkv_o_bias: Option<(bool, bool)>,
    pub reads_mlp_bias: bool,
    pub qk_norm: bool,
    /// `head_dim` when config.json has none; `None` means hidden_size / num_attention_heads.
    pub default_head_dim: Option<i64>,
    pub default_max_position_embeddings: i64,
}

impl HfConfig {
    /// Reads and parses `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl ModelConfig {
    /// Reads `config.json` and resolves it; errors name the file and key.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        Self::from_hf(&HfConfig::from_file(path)?, path)
    }

    /// Resolves defaults and validates; `path` is only used in error messages.
    pub fn from_hf(hf: &HfConfig, path: &Path) -> Result<Self, ModelError> {
        let spec = crate::auto::family(&hf.model_type).ok_or_else(|| {
            ModelError::config(
                path,
                "model_type",
                format!(
                    "unsupported model type {:?} (supported: {})",
                    hf.model_type,
                    crate::auto::SUPPORTED.join(", ")
                ),
            )
        })?;
        if let Some(archs) = &hf.architectures {
            if let Some(bad) = archs.iter().find(|a| a.as_str() != spec.architecture) {
                return Err(ModelError::config(
                    path,
                    "architectures",
                    format!(
                        "unsupported architecture {bad:?} for model_type {:?} (expected {})",
                        hf.model_type, spec.architecture
                    ),
                ));
            }
        }
        let positive = |key: &str, v: i64| {
            if v > 0 {
                Ok(v)
            } else {
                Err(ModelError::config(
                    path,
                    key,
                    format!("must be > 0, got {v}"),
                ))
            }
        };
        let heads = positive("num_attention_heads", hf.num_attention_heads)?;
        let hidden = positive("hidden_size", hf.hidden_size)?;
        let kv_heads = positive(
            "num_key_value_heads",
            hf.num_key_value_heads.unwrap_or(heads),
        )?;
        if heads % kv_heads != 0 {
            return Err(ModelError::config(
                path,
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = match (hf.head_dim, spec.default_head_dim) {
            (Some(d), _) | (None, Some(d)) => positive("head_dim", d)?,
            (None, None) => {
                if hidden % heads != 0 {
                    return Err(ModelError::config(
                        path,
                        "hidden_size",
                        format!("{hidden} is not a multiple of num_attention_heads {heads}"),
                    ));
                }
                hidden / heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(ModelError::config(
                path,
                "head_dim",
                format!("RoPE needs an even head_dim, got {head_dim}"),
            ));
        }
        if let Some(act) = &hf.hidden_act {
            if act != "silu" {
                return Err(ModelError::config(
                    path,
                    "hidden_act",
                    format!("only \"silu\" is supported, got {act:?}"),
                ));
            }
        }
        if hf.extra.get("use_sliding_window") == Some(&Value::Bool(true)) {
            return Err(ModelError::config(
                path,
                "use_sliding_window",
                "sliding-window attention is not supported",
            ));
        }
        let (rope_theta, rope_scaling) = resolve_rope(hf, path)?;
        let (qkv_bias, o_bias) = spec.fixed_qkv_o_bias.unwrap_or_else(|| {
            let b = hf.attention_bias.unwrap_or(false);
            (b, b)
        });
        let mlp_bias = spec.reads_mlp_bias && hf.mlp_bias.unwrap_or(false);
        let rms_norm_eps = hf.rms_norm_eps.unwrap_or(1e-6);
        if rms_norm_eps.is_nan() || rms_norm_eps < 0.0 {
            return Err(ModelError::config(
                path,
                "rms_norm_eps",
                format!("must be >= 0, got {rms_norm_eps}"),
            ));
        }
        let mut extra = hf.extra.clone();
        // Written afresh on save from the dtype actually saved.
        extra.remove("torch_dtype");
        extra.remove("dtype");
        Ok(ModelConfig {
            model_type: spec.model_type,
            vocab_size: positive("vocab_size", hf.vocab_size)?,
            hidden_size: hidden,
            intermediate_size: positive("intermediate_size", hf.intermediate_size)?,
            num_hidden_layers: positive("num_hidden_layers", hf.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: hf
                .max_position_embeddings
                .unwrap_or(spec.default_max_position_embeddings),
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: spec.qk_norm,
            initializer_range: hf.initializer_range.unwrap_or(0.02),
            extra,
        })
    }

    /// The `config.json` to save next to weights of dtype `dtype`, in transformers-4 spelling
    /// (`rope_theta`, `rope_scaling`), which transformers 4 and 5 and vLLM all read.
    pub fn to_hf(&self, dtype: Kind) -> HfConfig {
        let spec = crate::auto::spec(self.model_type);
        let mut extra = self.extra.clone();
        let dtype_name = match dtype {
            Kind::BFloat16 => "bfloat16",
            Kind::Half => "float16",
            _ => "float32",
        };
        extra.insert("torch_dtype".into(), Value::String(dtype_name.into()));
        let default_head_dim = spec
            .default_head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        let writes_head_dim = spec.default_head_dim.is_some()
            || self.model_type == ModelType::Llama
            || self.head_dim != default_head_dim;
        HfConfig {
            model_type: spec.name.to_string(),
            architectures: Some(vec![spec.architecture.to_string()]),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: Some(self.num_key_value_heads),
            head_dim: writes_head_dim.then_some(self.head_dim),
            max_position_embeddings: Some(self.max_position_embeddings),
            rms_norm_eps: Some(self.rms_norm_eps),
            rope_theta: Some(self.rope_theta),
            rope_scaling: self.rope_scaling.map(|s| match s {
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                } => HfRopeParams {
                    rope_type: Some("llama3".into()),
                    factor: Some(factor),
                    low_freq_factor: Some(low_freq_factor),
                    high_freq_factor: Some(high_freq_factor),
                    original_max_position_embeddings: Some(original_max_position_embeddings),
                    ..Default::default()
                },
            }),
            rope_parameters: None,
            tie_word_embeddings: Some(self.tie_word_embeddings),
            attention_bias: spec.fixed_qkv_o_bias.is_none().then_some(self.qkv_bias),
            mlp_bias: spec.reads_mlp_bias.then_some(self.mlp_bias),
            hidden_act: Some("silu".into()),
            initializer_range: Some(self.initializer_range),
            extra,
        }
    }

    /// A tiny model of the given family (vocab 256, hidden 64, 2 layers, 4 heads, 2 KV heads)
    /// for tests and synthetic tasks; change the public fields to taste.
    pub fn tiny(model_type: ModelType) -> Self {
        let spec = crate::auto::spec(model_type);
        let (qkv_bias, o_bias) = spec.fixed_qkv_o_bias.unwrap_or((false, false));
        ModelConfig {
            model_type,
            vocab_size: 256,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: false,
            qkv_bias,
            o_bias,
            mlp_bias: false,
            qk_norm: spec.qk_norm,
            initializer_range: 0.02,
            extra: Map::new(),
        }
    }

    /// Checks the invariants the layers rely on (for configs built by hand).
    pub fn validate(&self) -> Result<(), ModelError> {
        let key_err = |key: &str, msg: String| Err(ModelError::config("<ModelConfig>", key, msg));
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v <= 0 {
                return key_err(key, format!("must be > 0, got {v}"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return key_err(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if self.head_dim % 2 != 0 {
            return key_err("head_dim", format!("must be even, got {}", self.head_dim));
        }
        Ok(())
    }
}

/// `rope_parameters` (transformers 5) wins over `rope_theta` + `rope_scaling` (transformers 4).
fn resolve_rope(hf: &HfConfig, path: &Path) -> Result<(f64, Option<RopeScaling>), ModelError> {
    let (key, params) = match (&hf.rope_parameters, &hf.rope_scaling) {
        (Some(p), _) => ("rope_parameters", Some(p)),
        (None, p) => ("rope_scaling", p.as_ref()),
    };
    let theta = params
        .and_then(|p| p.rope_theta)
        .or(hf.rope_theta)
        .unwrap_or(10000.0);
    // Written so that NaN fails too.
    if theta.is_nan() || theta <= 0.0 {
        return Err(ModelError::config(
            path,
            "rope_theta",
            format!("must be > 0, got {theta}"),
        ));
    }
    let Some(p) = params else {
        return Ok((theta, None));
    };
    let rope_type = p
        .rope_type
        .as_deref()
        .or(p.type_.as_deref())
        .unwrap_or("default");
    match rope_type {
        "default" => Ok((theta, None)),
        "llama3" => {
            let need = |name: &str, v: Option<f64>| {
                v.ok_or_else(|| ModelError::config(path, &format!("{key}.{name}"), "missing"))
            };
            let factor = need("factor", p.factor)?;
            let low = need("low_freq_factor", p.low_freq_factor)?;
            let high = need("high_freq_factor", p.high_freq_factor)?;
            let orig = p.original_max_position_embeddings.ok_or_else(|| {
                ModelError::config(
                    path,
                    &format!("{key}.original_max_position_embeddings"),
                    "missing",
                )
            })?;
            let ordered = high.partial_cmp(&low) == Some(std::cmp::Ordering::Greater);
            if !ordered || factor.is_nan() || factor <= 0.0 || orig <= 0 {
                return Err(ModelError::config(
                    path,
                    key,
                    "llama3 scaling needs factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings > 0",
                ));
            }
            Ok((
                theta,
                Some(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: orig,
                }),
            ))
        }
        other => Err(ModelError::config(
            path,
            &format!("{key}.rope_type"),
            format!("unsupported RoPE type {other:?} (supported: default, llama3)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig, ModelError> {
        let hf: HfConfig = serde_json::from_str(json).unwrap();
        ModelConfig::from_hf(&hf, Path::new("x/config.json"))
    }

    const QWEN25_05B: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
      "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
      "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
      "vocab_size": 151936, "rope_scaling": null}"#;

    #[test]
    fn qwen25_config_resolves() {
        let c = parse(QWEN25_05B).unwrap();
        assert_eq!(c.model_type, ModelType::Qwen2);
        assert_eq!((c.head_dim, c.num_key_value_heads), (64, 2));
        assert!(c.qkv_bias && !c.o_bias && !c.qk_norm && c.tie_word_embeddings);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.rope_scaling, None);
        assert_eq!(c.extra["bos_token_id"], 151643);
        assert!(!c.extra.contains_key("torch_dtype"));
    }

    #[test]
    fn llama3_rope_scaling_in_both_spellings() {
        let v4 = r#"{"model_type":"llama","vocab_size":10,"hidden_size":32,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,"rope_theta":500000.0,
          "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
          "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;
        let v5 = r#"{"model_type":"llama","vocab_size":10,"hidden_size":32,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":4,
          "rope_parameters":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
          "original_max_position_embeddings":8192,"rope_type":"llama3","rope_theta":500000.0}}"#;
        let (a, b) = (parse(v4).unwrap(), parse(v5).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 500000.0);
        assert!(matches!(
            a.rope_scaling,
            Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0
        ));
        assert_eq!((a.head_dim, a.num_key_value_heads), (8, 4));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = parse(&QWEN25_05B.replace("\"qwen2\"", "\"gpt2\"")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("x/config.json") && msg.contains("model_type"),
            "{msg}"
        );
        assert!(msg.contains("gpt2"), "{msg}");

        let err = parse(&QWEN25_05B.replace("Qwen2ForCausalLM", "Qwen2VLForConditionalGeneration"))
            .unwrap_err();
        assert!(err.to_string().contains("architectures"), "{err}");

        let err =
            parse(&QWEN25_05B.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"))
                .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");

        let err = parse(&QWEN25_05B.replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }

    #[test]
    fn to_hf_round_trips() {
        let c = parse(QWEN25_05B).unwrap();
        let json = serde_json::to_string(&c.to_hf(Kind::BFloat16)).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["torch_dtype"], "bfloat16");
        assert_eq!(v["architectures"][0], "Qwen2ForCausalLM");
        assert!(v.get("attention_bias").is_none());
        assert_eq!(parse(&json).unwrap(), c);
        for t in [ModelType::Qwen2, ModelType::Llama, ModelType::Qwen3] {
            let c = ModelConfig::tiny(t);
            c.validate().unwrap();
            let json = serde_json::to_string(&c.to_hf(Kind::Float)).unwrap();
            assert_eq!(parse(&json).unwrap(), c, "{t:?}");
        }
    }
}
