//! The pre-norm decoder shared by Qwen2, Llama 3 and Qwen3 (transformers' `LlamaModel` shape):
//! embed, then per layer x + attn(norm(x)) and x + mlp(norm(x)), then a final norm. Families
//! differ only in `ModelConfig` flags (biases, q/k norm, head_dim, RoPE scaling).

use tch::{nn, Tensor};

use crate::kv_cache::{KvCache, SlotCache};
use crate::layers::attention::{Attention, KvWrite};
use crate::layers::mask::{position_ids, AttnMask};
use crate::layers::mlp::Mlp;
use crate::layers::rms_norm::RmsNorm;
use crate::layers::rope::RotaryEmbedding;
use crate::ModelConfig;

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        DecoderLayer {
            input_layernorm: RmsNorm::new(&p / "input_layernorm", h, eps),
            self_attn: Attention::new(&p / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", h, eps),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    /// (B, T, C) -> (B, T, C)
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        kv: KvWrite,
    ) -> Tensor {
        let x = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), cos, sin, mask, kv);
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }
}

/// `model.*` of a checkpoint: embeddings, layers, final norm.
pub(crate) struct Decoder {
    pub embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: RotaryEmbedding,
}

impl Decoder {
    pub fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let layers_p = &p / "layers";
        Decoder {
            embed_tokens: (&p / "embed_tokens").zeros("weight", &[cfg.vocab_size, cfg.hidden_size]),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| DecoderLayer::new(&layers_p / i, cfg))
                .collect(),
            norm: RmsNorm::new(&p / "norm", cfg.hidden_size, cfg.rms_norm_eps),
            rope: RotaryEmbedding::new(cfg, p.device()),
        }
    }

    /// ids (B, T), mask (B, T_past + T) -> final-normed hidden states (B, T, C).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, mut cache: Option<&mut KvCache>) -> Tensor {
        let (b, t) = ids.size2().expect("input ids must be (B, T)");
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        assert_eq!(
            mask.size(),
            [b, past + t],
            "attention mask must be (B, T_past + T) = ({b}, {})",
            past + t
        );
        if let Some(c) = &cache {
            assert_eq!(
                c.num_layers(),
                self.layers.len(),
                "KvCache built for another model"
            );
        }
        let mut x = self.embed(ids); // (B, T, C)
        let ctx = self.context(mask, t, x.kind());
        for i in 0..self.layers.len() {
            let kv = match cache.as_deref_mut() {
                Some(c) => KvWrite::Append(c.layer_mut(i)),
                None => KvWrite::None,
            };
            x = self.layers[i].forward(&x, &ctx.cos, &ctx.sin, &ctx.mask, kv);
        }
        self.norm.forward(&x)
    }

    /// One decode step over slot storage: ids (S, 1), `pos` (S,) int64 each slot's position
    /// (= its cached length), `window` > every position -> final-normed hidden (S, 1, C).
    /// The new keys and values are written at `pos`; row s attends to positions `0..=pos[s]`.
    /// One mask and one RoPE table per step, shared by every layer.
    pub fn decode_slots(
        &self,
        ids: &Tensor,
        pos: &Tensor,
        window: i64,
        cache: &SlotCache,
    ) -> Tensor {
        let s = ids.size()[0];
        assert_eq!(
            cache.num_layers(),
            self.layers.len(),
            "SlotCache of another model"
        );
        let mut x = self.embed(ids); // (S, 1, C)
        let (cos, sin) = self.rope.cos_sin(&pos.view([s, 1]), x.kind());
        let keys = Tensor::arange(window, (tch::Kind::Int64, pos.device())).view([1, window]);
        let allowed = keys.le_tensor(&pos.view([s, 1])).view([s, 1, 1, window]);
        let mask = AttnMask::Decode(
            Tensor::zeros([s, 1, 1, window], (x.kind(), pos.device()))
                .masked_fill(&allowed.logical_not(), f64::NEG_INFINITY),
        );
        let rows = Tensor::arange(s, (tch::Kind::Int64, pos.device()));
        for (i, layer) in self.layers.iter().enumerate() {
            let (k, v) = cache.layer(i);
            let kv = KvWrite::Slots {
                k,
                v,
                rows: &rows,
                pos,
                window,
            };
            x = layer.forward(&x, &cos, &sin, &mask, kv);
        }
        self.norm.forward(&x)
    }

    /// ids (B, T) -> token embeddings (B, T, C).
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false)
    }

    /// What every layer of one forward pass shares: RoPE tables and the attention mask.
    pub fn context(&self, mask: &Tensor, t: i64, kind: tch::Kind) -> LayerContext {
        let (cos, sin) = self.rope.cos_sin(&position_ids(mask, t), kind);
        LayerContext {
            cos,
            sin,
            mask: AttnMask::new(mask, t),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i` without a cache: (B, T, C) -> (B, T, C).
    pub fn layer_forward(&self, i: usize, x: &Tensor, ctx: &LayerContext) -> Tensor {
        self.layers[i].forward(x, &ctx.cos, &ctx.sin, &ctx.mask, KvWrite::None)
    }

    /// Moves the tensors that are not variables (RoPE frequencies) to `device`; the caller
    /// moves the var store.
    pub fn set_device(&mut self, device: tch::Device) {
        self.rope.set_device(device);
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, x: &Tensor) -> Tensor {
        self.norm.forward(x)
    }
}

/// Per-forward inputs shared by the layers (see [`Decoder::context`]).
pub(crate) struct LayerContext {
    cos: Tensor,
    sin: Tensor,
    mask: AttnMask,
}
