//! The causal language model: decoder plus `lm_head`, owning the `VarStore` (psyche's
//! `causal_language_model.rs` shape). Loads and saves Hugging Face model folders
//! (`config.json` + safetensors) and builds seeded random models for tests and synthetic tasks.

use std::path::Path;

use rand::{Rng, SeedableRng};
use tch::{nn, Device, Kind, Tensor};

use crate::kv_cache::{KvCache, SlotCache};
use crate::load::{self, WeightFiles};
use crate::models::decoder::Decoder;
use crate::{ModelConfig, ModelError};

/// A decoder-only transformer with its output head. Weights are named exactly as in Hugging
/// Face checkpoints (`model.layers.0.self_attn.q_proj.weight`, ..., `lm_head.weight`); with
/// tied embeddings `lm_head` reuses `model.embed_tokens.weight` and has no variable of its own.
pub struct CausalLm {
    vs: nn::VarStore,
    cfg: ModelConfig,
    dtype: Kind,
    model: Decoder,
    /// (V, C); shares storage with the embedding when tied.
    lm_head: Tensor,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("model_type", &self.cfg.model_type)
            .field("dtype", &self.dtype)
            .field("device", &self.vs.device())
            .finish_non_exhaustive()
    }
}

impl CausalLm {
    /// Variables created (zero / one initialised) with the names of a checkpoint.
    fn skeleton(cfg: ModelConfig, device: Device, dtype: Kind) -> Result<Self, ModelError> {
        cfg.validate()?;
        if !matches!(dtype, Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(ModelError::config(
                "<dtype>",
                "dtype",
                format!("unsupported model dtype {dtype:?} (use f32, bf16 or f16)"),
            ));
        }
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(dtype);
        let root = vs.root();
        let model = Decoder::new(&root / "model", &cfg);
        let lm_head = if cfg.tie_word_embeddings {
            model.embed_tokens.shallow_clone()
        } else {
            (&root / "lm_head").zeros("weight", &[cfg.vocab_size, cfg.hidden_size])
        };
        Ok(CausalLm {
            vs,
            cfg,
            dtype,
            model,
            lm_head,
        })
    }

    /// A randomly initialised model as transformers' `_init_weights` does it: linear and
    /// embedding weights ~ N(0, initializer_range), biases 0, norm weights 1. The normal draws
    /// come from a ChaCha8 stream seeded by `seed` (not torch's global generator), so the same
    /// seed gives the same weights whatever else runs in the process.
    pub fn from_config(
        cfg: ModelConfig,
        device: Device,
        dtype: Kind,
        seed: i64,
    ) -> Result<Self, ModelError> {
        let lm = Self::skeleton(cfg, device, dtype)?;
        let std = lm.cfg.initializer_range;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64);
        let mut vars: Vec<(String, Tensor)> = lm.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut var) in vars {
            if name.ends_with("norm.weight") || name.ends_with(".bias") {
                continue;
            }
            let values = normal_f32(&mut rng, var.numel(), std);
            let src = Tensor::from_slice(&values).view(var.size().as_slice());
            tch::no_grad(|| var.f_copy_(&src))?;
        }
        Ok(lm)
    }

    /// Loads a Hugging Face model folder: `config.json` plus `model.safetensors` or a sharded
    /// `model.safetensors.index.json`. Weights are converted to `dtype` on `device`.
    pub fn load(dir: &Path, device: Device, dtype: Kind) -> Result<Self, ModelError> {
        let mut cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = WeightFiles::find(dir)?;
        if !cfg.tie_word_embeddings && !weights.names.contains("lm_head.weight") {
            // candle's fallback: checkpoints of small tied models sometimes say untied but
            // ship no head; the embedding is the only sensible head then.
            tracing::warn!(
                "{}: no lm_head.weight although tie_word_embeddings is false; tying to the embedding",
                dir.display()
            );
            cfg.tie_word_embeddings = true;
        }
        let lm = Self::skeleton(cfg, device, dtype)?;
        let tied = lm.cfg.tie_word_embeddings;
        load::load_into(&lm.vs.variables(), &weights.files, |name| {
            (tied && name == "lm_head.weight") || name.ends_with("rotary_emb.inv_freq")
        })?;
        Ok(lm)
    }

    /// Writes `config.json` and `model.safetensors` (Hugging Face layout, weights in the model's
    /// dtype, no `lm_head.weight` when tied) into `dir`, creating it if needed. Tokenizer files
    /// are the caller's to copy.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let config_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&self.cfg.to_hf(self.dtype)).map_err(|source| {
            ModelError::Json {
                path: config_path.clone(),
                source,
            }
        })?;
        std::fs::write(&config_path, json + "\n").map_err(|e| ModelError::io(&config_path, e))?;
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        load::save_file(&vars, &dir.join(load::SINGLE_FILE))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> Kind {
        self.dtype
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// A deep copy with its own weights (e.g. the frozen reference policy).
    pub fn try_clone(&self) -> Result<Self, ModelError> {
        let mut copy = Self::skeleton(self.cfg.clone(), self.vs.device(), self.dtype)?;
        copy.vs.copy(&self.vs)?;
        Ok(copy)
    }

    /// A fresh, empty KV cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers as usize)
    }

    /// Slot storage for the rollout engine: `slots` sequences of up to `capacity` tokens, in the
    /// model's dtype and device.
    pub fn new_slot_cache(&self, slots: i64, capacity: i64) -> SlotCache {
        let c = &self.cfg;
        SlotCache::new(
            c.num_hidden_layers as usize,
            slots,
            c.num_key_value_heads,
            capacity,
            c.head_dim,
            (self.dtype(), self.device()),
        )
    }

    /// KV bytes one cached token takes in this model (every layer, keys and values).
    pub fn kv_bytes_per_token(&self) -> u64 {
        let c = &self.cfg;
        SlotCache::bytes_per_token(
            c.num_hidden_layers as usize,
            c.num_key_value_heads,
            c.head_dim,
            self.dtype(),
        )
    }

    /// One decode step over slot storage (see `Decoder::decode_slots`): ids (S, 1), positions
    /// (S,) -> next-token logits (S, V) in float32.
    pub fn decode_slots(
        &self,
        ids: &Tensor,
        pos: &Tensor,
        window: i64,
        cache: &SlotCache,
    ) -> Tensor {
        let h = self.model.decode_slots(ids, pos, window, cache);
        self.lm_head(&h.squeeze_dim(1)).to_kind(Kind::Float)
    }

    /// ids (B, T) int64, mask (B, T_past + T) 0/1 (left padding allowed; T_past from `cache`)
    /// -> final-normed hidden states (B, T, C) in the model dtype. With a cache, the new keys
    /// and values are appended to it.
    pub fn hidden_states(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        self.model.forward(ids, mask, cache)
    }

    /// (.., C) -> (.., V) logits in the model dtype; callers upcast to f32 before log-softmax.
    /// Public so callers can apply it to chunks of time steps and never hold (B, T, V) in f32.
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        // Contiguous: with few rows on CPU the product is a transposed view (see
        // `layers::linear`), and every caller reduces over the vocabulary next (log-softmax,
        // cumsum), which ran 2-4x slower on that layout than one transposing copy costs.
        crate::layers::linear::linear(hidden, &self.lm_head, None).contiguous()
    }

    /// ids (B, T), mask (B, T_past + T) -> logits (B, T, V) in float32.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, cache: Option<&mut KvCache>) -> Tensor {
        self.lm_head(&self.hidden_states(ids, mask, cache))
            .to_kind(Kind::Float)
    }

    /// Moves every weight (and the RoPE tables) to `device` in place, e.g. a reference model
    /// kept in host memory between its scoring phases (`model.reference_offload`).
    pub fn set_device(&mut self, device: Device) {
        if device != self.vs.device() {
            self.vs.set_device(device);
            self.model.set_device(device);
        }
    }

    /// The decoder, for the layer-by-layer training pass (`lean.rs`).
    pub(crate) fn decoder(&self) -> &Decoder {
        &self.model
    }

    /// Name of the variable that holds the output head (the embedding when tied).
    pub(crate) fn head_name(&self) -> &'static str {
        if self.cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        }
    }

    /// Number of distinct parameters (a tied head counts once).
    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }
}

/// `n` draws from N(0, std) by the Box-Muller transform (Box & Muller 1958).
fn normal_f32(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: keeps ln finite
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelType;

    const FAMILIES: [ModelType; 3] = [ModelType::Qwen2, ModelType::Llama, ModelType::Qwen3];

    fn tiny(t: ModelType) -> CausalLm {
        let mut cfg = ModelConfig::tiny(t);
        cfg.vocab_size = 64;
        // Larger init than HF's 0.02 so logits differ visibly between positions.
        cfg.initializer_range = 0.2;
        CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 7).unwrap()
    }

    fn ids(rows: &[&[i64]]) -> Tensor {
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn kv_cache_decoding_matches_full_forward_with_left_padding() {
        let _g = tch::no_grad_guard();
        for t in FAMILIES {
            let lm = tiny(t);
            let tokens = ids(&[&[0, 0, 5, 9, 3, 7, 1, 2], &[4, 8, 15, 16, 23, 42, 3, 1]]);
            let mask = ids(&[&[0, 0, 1, 1, 1, 1, 1, 1], &[1, 1, 1, 1, 1, 1, 1, 1]]);
            let full = lm.forward(&tokens, &mask, None);
            let mut cache = lm.new_cache();
            // Prefill 4, then one token at a time, then 2 at once.
            let mut steps = vec![lm.forward(
                &tokens.narrow(1, 0, 4),
                &mask.narrow(1, 0, 4),
                Some(&mut cache),
            )];
            for i in 4..6 {
                steps.push(lm.forward(
                    &tokens.narrow(1, i, 1),
                    &mask.narrow(1, 0, i + 1),
                    Some(&mut cache),
                ));
            }
            steps.push(lm.forward(&tokens.narrow(1, 6, 2), &mask, Some(&mut cache)));
            assert_eq!(cache.seq_len(), 8);
            let inc = Tensor::cat(&steps, 1);
            // Compare only real (unpadded) positions.
            let real = mask.unsqueeze(-1).to_kind(Kind::Float);
            let d = max_diff(&(&inc * &real), &(&full * &real));
            assert!(d < 1e-4, "{t:?}: cached vs full differ by {d}");
            assert!(!bool::try_from(full.isnan().any()).unwrap());
        }
    }

    #[test]
    fn left_padded_row_equals_unpadded_row() {
        let _g = tch::no_grad_guard();
        for t in FAMILIES {
            let lm = tiny(t);
            let alone = lm.forward(&ids(&[&[5, 9, 3, 7]]), &ids(&[&[1, 1, 1, 1]]), None);
            let padded = lm.forward(
                &ids(&[&[0, 0, 5, 9, 3, 7], &[1, 2, 3, 4, 5, 6]]),
                &ids(&[&[0, 0, 1, 1, 1, 1], &[1, 1, 1, 1, 1, 1]]),
                None,
            );
            let d = max_diff(&alone.get(0), &padded.get(0).narrow(0, 2, 4));
            assert!(d < 1e-4, "{t:?}: padded row differs by {d}");
            // Logits really depend on the input (the comparison above is not vacuous).
            assert!(max_diff(&alone.get(0).get(0), &alone.get(0).get(3)) > 1e-2);
        }
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = tiny(ModelType::Qwen2);
        let b = tiny(ModelType::Qwen2);
        let c = CausalLm::from_config(a.config().clone(), Device::Cpu, Kind::Float, 8).unwrap();
        let w =
            |m: &CausalLm| m.var_store().variables()["model.layers.1.mlp.up_proj.weight"].copy();
        assert_eq!(w(&a), w(&b));
        assert!(max_diff(&w(&a), &w(&c)) > 0.0);
        let std = f64::try_from(w(&a).std(true)).unwrap();
        assert!((std - 0.2).abs() < 0.02, "init std {std}");
        let vars = a.var_store().variables();
        assert_eq!(
            vars["model.norm.weight"],
            Tensor::ones([64], (Kind::Float, Device::Cpu))
        );
        assert_eq!(
            f64::try_from(
                vars["model.layers.0.self_attn.q_proj.bias"]
                    .abs()
                    .sum(Kind::Float)
            )
            .unwrap(),
            0.0
        );
    }

    #[test]
    fn weight_names_follow_hf_per_family() {
        let names = |t| {
            let mut cfg = ModelConfig::tiny(t);
            cfg.tie_word_embeddings = t == ModelType::Qwen2;
            let lm = CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 0).unwrap();
            let mut n: Vec<String> = lm.var_store().variables().into_keys().collect();
            n.sort();
            n
        };
        let q2 = names(ModelType::Qwen2);
        assert!(q2.contains(&"model.layers.0.self_attn.k_proj.bias".to_string()));
        assert!(!q2.contains(&"model.layers.0.self_attn.o_proj.bias".to_string()));
        assert!(!q2.contains(&"lm_head.weight".to_string()));
        let l = names(ModelType::Llama);
        assert!(l.contains(&"lm_head.weight".to_string()));
        assert!(!l.iter().any(|n| n.ends_with(".bias")));
        let q3 = names(ModelType::Qwen3);
        assert!(q3.contains(&"model.layers.1.self_attn.q_norm.weight".to_string()));
        assert!(q3.contains(&"model.layers.1.self_attn.k_norm.weight".to_string()));
        // embed, norm, lm_head + per layer: 2 norms, q/k/v/o, gate/up/down, q/k norm.
        assert_eq!(q3.len(), 3 + 2 * 11);
    }

    #[test]
    fn save_then_load_is_bit_exact_and_tied_head_is_omitted() {
        let dir = tempfile::tempdir().unwrap();
        for (t, dtype) in [
            (ModelType::Qwen2, Kind::Float),
            (ModelType::Llama, Kind::BFloat16),
            (ModelType::Qwen3, Kind::Half),
        ] {
            let mut cfg = ModelConfig::tiny(t);
            cfg.tie_word_embeddings = t != ModelType::Llama;
            let lm = CausalLm::from_config(cfg, Device::Cpu, dtype, 3).unwrap();
            let path = dir.path().join(format!("{t:?}"));
            lm.save(&path).unwrap();
            let back = CausalLm::load(&path, Device::Cpu, dtype).unwrap();
            assert_eq!(back.config(), lm.config());
            let (a, b) = (lm.var_store().variables(), back.var_store().variables());
            assert_eq!(a.len(), b.len());
            for (name, t) in &a {
                assert_eq!(t.kind(), dtype);
                assert!(t.equal(&b[name]), "{name} differs after round trip");
            }
            let header = WeightFiles::find(&path).unwrap();
            assert_eq!(
                header.names.contains("lm_head.weight"),
                !lm.config().tie_word_embeddings
            );
            let _g = tch::no_grad_guard();
            let x = ids(&[&[1, 2, 3]]);
            let m = ids(&[&[1, 1, 1]]);
            assert!(lm.forward(&x, &m, None).equal(&back.forward(&x, &m, None)));
        }
    }

    #[test]
    fn try_clone_is_deep() {
        let a = tiny(ModelType::Llama);
        let b = a.try_clone().unwrap();
        let name = "model.layers.0.mlp.down_proj.weight";
        let before = b.var_store().variables()[name].copy();
        tch::no_grad(|| {
            let _ = a.var_store().variables()[name].shallow_clone().fill_(1.0);
        });
        assert!(b.var_store().variables()[name].equal(&before));
    }

    #[test]
    fn gradients_reach_every_parameter() {
        let lm = tiny(ModelType::Qwen3);
        let logits = lm.forward(&ids(&[&[0, 1, 2, 3]]), &ids(&[&[0, 1, 1, 1]]), None);
        let loss = logits
            .log_softmax(-1, Kind::Float)
            .select(-1, 5)
            .sum(Kind::Float);
        loss.backward();
        for (name, v) in lm.var_store().variables() {
            let g = v.grad();
            assert!(g.defined(), "{name} got no gradient");
            assert!(
                !bool::try_from(g.isnan().any()).unwrap(),
                "{name} NaN gradient"
            );
        }
    }

    #[test]
    fn bf16_and_f16_track_f32() {
        let _g = tch::no_grad_guard();
        let lm = tiny(ModelType::Qwen2);
        let x = ids(&[&[3, 1, 4, 1, 5, 9]]);
        let m = ids(&[&[1, 1, 1, 1, 1, 1]]);
        let reference = lm.forward(&x, &m, None).log_softmax(-1, Kind::Float);
        for dtype in [Kind::BFloat16, Kind::Half] {
            // f32 checkpoint loaded as a lower precision, as `--dtype bf16` does.
            let dir = tempfile::tempdir().unwrap();
            lm.save(dir.path()).unwrap();
            let low = CausalLm::load(dir.path(), Device::Cpu, dtype).unwrap();
            let out = low.forward(&x, &m, None);
            assert_eq!(out.kind(), Kind::Float);
            let d = max_diff(&out.log_softmax(-1, Kind::Float), &reference);
            assert!(d < 0.1, "{dtype:?} log-probs differ from f32 by {d}");
        }
    }

    #[test]
    fn bad_checkpoints_give_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let lm = tiny(ModelType::Qwen2);
        let path = dir.path().join("m");
        lm.save(&path).unwrap();
        let load = |p: &Path| {
            CausalLm::load(p, Device::Cpu, Kind::Float)
                .unwrap_err()
                .to_string()
        };

        let err = load(&dir.path().join("nope"));
        assert!(err.contains("config.json"), "{err}");

        // Truncated weights.
        let st = path.join("model.safetensors");
        let bytes = std::fs::read(&st).unwrap();
        std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
        let err = load(&path);
        assert!(
            err.contains("model.safetensors") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&st, &bytes[..5]).unwrap();
        let err = load(&path);
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::remove_file(&st).unwrap();
        let err = load(&path);
        assert!(err.contains("no model.safetensors"), "{err}");

        // Shape mismatch: config says a wider MLP than the weights have.
        lm.save(&path).unwrap();
        let cfg_path = path.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(
            &cfg_path,
            text.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
        )
        .unwrap();
        let err = load(&path);
        assert!(
            err.contains("model.safetensors") && err.contains("mlp") && err.contains("shape"),
            "{err}"
        );

        // Unsupported architecture.
        std::fs::write(&cfg_path, text.replace("\"qwen2\"", "\"mamba\"")).unwrap();
        let err = load(&path);
        assert!(
            err.contains("config.json") && err.contains("mamba"),
            "{err}"
        );

        // Missing tensor.
        std::fs::write(
            &cfg_path,
            text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
        )
        .unwrap();
        let err = load(&path);
        assert!(err.contains("missing tensor `model.layers.2."), "{err}");
    }
}
