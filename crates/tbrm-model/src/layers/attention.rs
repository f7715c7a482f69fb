//! Multi-head attention with grouped-query heads (Ainslie et al. 2023, GQA), as transformers'
//! `LlamaAttention` / `Qwen2Attention` / `Qwen3Attention`: project, optionally RMSNorm each
//! q/k head (Qwen3), rotate, append to the KV cache, then
//! `scaled_dot_product_attention` with KV heads shared by groups of query heads.

use tch::{nn, Tensor};

use super::linear::Linear;
use super::mask::AttnMask;
use super::rms_norm::RmsNorm;
use super::rope::apply_rotary;
use crate::kv_cache::LayerKv;
use crate::ModelConfig;

/// Where a forward pass's new keys and values go.
pub(crate) enum KvWrite<'a> {
    /// Nowhere: attend over this pass's tokens only (training, scoring).
    None,
    /// Appended to a growing cache (prefill).
    Append(&'a mut LayerKv),
    /// One new token per sequence written into preallocated slot storage (slots, nkv, L, hs):
    /// row `rows[i]` at position `pos[i]` (both (S,) int64), attending over the first `window`
    /// positions (the mask hides each row's unused tail).
    Slots {
        k: &'a Tensor,
        v: &'a Tensor,
        rows: &'a Tensor,
        pos: &'a Tensor,
        window: i64,
    },
}

pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_head: i64,
    n_kv_head: i64,
    head_dim: i64,
}

impl Attention {
    pub fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let (h, hs) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let norm = |name: &str| {
            cfg.qk_norm
                .then(|| RmsNorm::new(&p / name, hs, cfg.rms_norm_eps))
        };
        Attention {
            q_proj: Linear::new(&p / "q_proj", h, nh * hs, cfg.qkv_bias),
            k_proj: Linear::new(&p / "k_proj", h, nkv * hs, cfg.qkv_bias),
            v_proj: Linear::new(&p / "v_proj", h, nkv * hs, cfg.qkv_bias),
            o_proj: Linear::new(&p / "o_proj", nh * hs, h, cfg.o_bias),
            q_norm: norm("q_norm"),
            k_norm: norm("k_norm"),
            n_head: nh,
            n_kv_head: nkv,
            head_dim: hs,
        }
    }

    /// x (B, T, C), cos/sin (B, 1, T, hs) -> (B, T, C)
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        kv: KvWrite,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input must be (B, T, C)");
        let hs = self.head_dim;
        let heads = |y: Tensor, n: i64, norm: &Option<RmsNorm>| {
            let y = y.view([b, t, n, hs]);
            let y = match norm {
                Some(norm) => norm.forward(&y),
                None => y,
            };
            y.transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x), self.n_head, &self.q_norm); // (B, nh, T, hs)
        let k = heads(self.k_proj.forward(x), self.n_kv_head, &self.k_norm); // (B, nkv, T, hs)
        let v = heads(self.v_proj.forward(x), self.n_kv_head, &None); // (B, nkv, T, hs)
                                                                      // Contiguous queries: a decode step's projections come back as transposed views (see
                                                                      // `linear`), and SDPA's CPU kernel ran about 2x slower on those strides.
        let q = apply_rotary(&q, cos, sin).contiguous();
        let k = apply_rotary(&k, cos, sin);
        let (k, v) = match kv {
            KvWrite::Append(cache) => cache.append(&k, &v), // (B, nkv, T_past + T, hs)
            KvWrite::None => (k, v),
            KvWrite::Slots {
                k: kb,
                v: vb,
                rows,
                pos,
                window,
            } => {
                // Shallow handles on the slot storage: the writes land in place. `index_put_`
                // rather than `scatter_`: on CPU, scatter_ into bf16/f16 storage copies the
                // whole storage to f32 and back on every call (an accumulation buffer), which
                // made a bf16 decode step ~2.5x slower than f32 (BENCHMARKS.md).
                let at = [Some(rows), None, Some(pos)];
                let _ = kb.shallow_clone().index_put_(&at, &k.squeeze_dim(2), false);
                let _ = vb.shallow_clone().index_put_(&at, &v.squeeze_dim(2), false);
                (kb.narrow(2, 0, window), vb.narrow(2, 0, window))
            }
        };
        let gqa = self.n_kv_head != self.n_head;
        let y = match mask {
            AttnMask::Decode(add)
                if q.device() == tch::Device::Cpu && q.kind() == tch::Kind::Float =>
            {
                self.grouped_decode(&q, &k, &v, add)
            }
            AttnMask::Decode(add) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(add), 0.0, false, None, gqa)
            }
            AttnMask::None => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                gqa,
            ),
            AttnMask::Causal => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                true,
                None,
                gqa,
            ),
            AttnMask::Explicit(m) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(m), 0.0, false, None, gqa)
            }
        }; // (B, nh, T, hs)
        let y = y.transpose(1, 2).reshape([b, t, self.n_head * hs]);
        self.o_proj.forward(&y)
    }

    /// One query per row against (B, nkv, W, hs) keys with an additive mask (B, 1, 1, W):
    /// the query heads of one KV group as the rows of one product with that group's keys, so
    /// the keys are read in place (no GQA expansion). SDPA's CPU kernels took 1.5-2.5x longer
    /// at decode shapes (16 rows, 12/2 heads, ~200 keys; BENCHMARKS.md "Rollout engine").
    /// f32 only: in bf16 these products go through oneDNN, which first copies the transposed
    /// key window to contiguous memory, and SDPA's flash kernel is the faster one there.
    fn grouped_decode(&self, q: &Tensor, k: &Tensor, v: &Tensor, add: &Tensor) -> Tensor {
        let (b, hs) = (q.size()[0], self.head_dim);
        let g = self.n_head / self.n_kv_head;
        let qg = q.view([b, self.n_kv_head, g, hs]);
        let scores = qg.matmul(&k.transpose(-1, -2)) * (1.0 / (hs as f64).sqrt()) + add;
        let p = scores.softmax(-1, scores.kind());
        p.matmul(v).view([b, self.n_head, 1, hs])
    }
}
