//! Key/value cache for incremental decoding (one entry per layer), after candle's
//! `candle-nn/src/kv_cache.rs`: keys and values live in buffers with spare room along time, so
//! appending a token copies only that token instead of re-concatenating the whole history each
//! step. When the new keys carry an autograd graph the cache concatenates instead, because
//! in-place writes into a shared buffer would invalidate tensors saved for backward.
//!
//! Use one cache per batch of sequences: pass it to every forward call of that batch, with an
//! attention mask that covers cached and new positions.

use tch::Tensor;

/// Cached keys and values of one layer: buffers (B, nkv, capacity, hs), the first `len`
/// positions filled.
#[derive(Debug, Default)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: i64,
}

/// Minimum capacity reserved along time, so short prompts do not regrow every step.
const MIN_CAPACITY: i64 = 64;

impl LayerKv {
    /// Appends k, v (B, nkv, T, hs) and returns all cached keys and values
    /// (B, nkv, T_past + T, hs).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let needed = self.len + t;
        if k.requires_grad() || v.requires_grad() {
            let (k_all, v_all) = match (&self.k, &self.v) {
                (Some(ck), Some(cv)) => (
                    Tensor::cat(&[&ck.narrow(2, 0, self.len), k], 2),
                    Tensor::cat(&[&cv.narrow(2, 0, self.len), v], 2),
                ),
                _ => (k.shallow_clone(), v.shallow_clone()),
            };
            self.k = Some(k_all.shallow_clone());
            self.v = Some(v_all.shallow_clone());
            self.len = needed;
            return (k_all, v_all);
        }
        let capacity = self.k.as_ref().map_or(0, |k| k.size()[2]);
        if needed > capacity {
            let new_cap = needed.max(2 * capacity).max(MIN_CAPACITY);
            self.k = Some(grow(self.k.as_ref(), k, self.len, new_cap));
            self.v = Some(grow(self.v.as_ref(), v, self.len, new_cap));
        }
        let (bk, bv) = (self.k.as_ref().unwrap(), self.v.as_ref().unwrap());
        bk.narrow(2, self.len, t).copy_(k);
        bv.narrow(2, self.len, t).copy_(v);
        self.len = needed;
        (bk.narrow(2, 0, needed), bv.narrow(2, 0, needed))
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn select(&mut self, rows: &Tensor) {
        for buf in [&mut self.k, &mut self.v].into_iter().flatten() {
            *buf = buf.index_select(0, rows);
        }
    }
}

/// A buffer of capacity `cap` holding the first `len` positions of `old` (if any), with the
/// batch/head/dim layout and dtype of `like`.
fn grow(old: Option<&Tensor>, like: &Tensor, len: i64, cap: i64) -> Tensor {
    let size = like.size();
    let buf = Tensor::empty(
        [size[0], size[1], cap, size[3]],
        (like.kind(), like.device()),
    );
    if let Some(old) = old {
        buf.narrow(2, 0, len).copy_(&old.narrow(2, 0, len));
    }
    buf
}

/// The cache of a whole model: one [`LayerKv`] per decoder layer.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` decoder layers
    /// (`model.config().num_hidden_layers`).
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| LayerKv::default()).collect(),
        }
    }

    /// Number of cached positions (T_past); the next forward's mask must be T_past + T wide.
    pub fn seq_len(&self) -> i64 {
        self.layers.first().map_or(0, LayerKv::len)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }

    /// Keeps only the batch rows `rows` (1-D int64 indices), e.g. to drop finished sequences
    /// during generation; the caller narrows its attention mask the same way.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for layer in &mut self.layers {
            layer.select(rows);
        }
    }

    /// Forgets everything (keeps nothing allocated).
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = LayerKv::default();
        }
    }
}

/// Preallocated KV storage for the rollout engine (`crate::engine`): per layer, keys and values
/// of `slots` sequences, each with room for `capacity` positions, (slots, nkv, capacity, hs).
/// A slot holds one sequence from position 0 (no padding); the engine tracks each slot's length
/// and masks the positions past it. Zero-initialised, so positions never written hold finite
/// values (a masked key must still not be NaN: its weight is 0, and 0 * NaN is NaN).
#[derive(Debug)]
pub struct SlotCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl SlotCache {
    /// Storage for `slots` sequences of up to `capacity` tokens of a model with `layers`
    /// layers, `kv_heads` key/value heads of `head_dim`.
    pub fn new(
        layers: usize,
        slots: i64,
        kv_heads: i64,
        capacity: i64,
        head_dim: i64,
        options: (tch::Kind, tch::Device),
    ) -> Self {
        let buf = || Tensor::zeros([slots, kv_heads, capacity, head_dim], options);
        SlotCache {
            k: (0..layers).map(|_| buf()).collect(),
            v: (0..layers).map(|_| buf()).collect(),
        }
    }

    /// Bytes of storage per cached token: keys and values of every layer.
    pub fn bytes_per_token(layers: usize, kv_heads: i64, head_dim: i64, kind: tch::Kind) -> u64 {
        2 * layers as u64 * (kv_heads * head_dim) as u64 * kind.elt_size_in_bytes() as u64
    }

    pub fn slots(&self) -> i64 {
        self.k.first().map_or(0, |k| k.size()[0])
    }

    pub fn capacity(&self) -> i64 {
        self.k.first().map_or(0, |k| k.size()[2])
    }

    pub fn num_layers(&self) -> usize {
        self.k.len()
    }

    /// Layer `i`'s (keys, values) storage.
    pub(crate) fn layer(&self, i: usize) -> (&Tensor, &Tensor) {
        (&self.k[i], &self.v[i])
    }

    /// Copies the first `len` positions of a prefill's cache into slots: slot `slots[j]` gets
    /// row `rows[j]` of `src` (so one prefilled prompt can fill several slots). Both index
    /// tensors are 1-D int64 on the storage's device.
    pub fn fill_from(&mut self, src: &mut KvCache, rows: &Tensor, slots: &Tensor, len: i64) {
        assert_eq!(
            src.num_layers(),
            self.k.len(),
            "prefill cache of another model"
        );
        for (i, layer) in src.layers.iter().enumerate() {
            let (Some(sk), Some(sv)) = (&layer.k, &layer.v) else {
                continue;
            };
            for (dst, s) in [(&self.k[i], sk), (&self.v[i], sv)] {
                let part = s.narrow(2, 0, len).index_select(0, rows);
                let _ = dst.narrow(2, 0, len).index_copy_(0, slots, &part);
            }
        }
    }

    /// Keeps only slots `keep` (1-D int64), in that order, and at most `capacity` positions:
    /// the engine shrinks the batch once the queue is empty and few sequences are left.
    pub fn compact(&mut self, keep: &Tensor, capacity: i64) {
        let cap = capacity.min(self.capacity());
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            *buf = buf.narrow(2, 0, cap).index_select(0, keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn rand(t: i64) -> Tensor {
        Tensor::randn([2, 3, t, 4], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn appends_like_concatenation_across_regrowth() {
        let mut cache = KvCache::new(2);
        let mut all_k = Vec::new();
        let mut all_v = Vec::new();
        for t in [5, 1, 70, 1, 1, 130] {
            let (k, v) = (rand(t), rand(t));
            all_k.push(k.shallow_clone());
            all_v.push(v.shallow_clone());
            let (ck, cv) = cache.layer_mut(0).append(&k, &v);
            assert_eq!(ck, Tensor::cat(&all_k, 2));
            assert_eq!(cv, Tensor::cat(&all_v, 2));
        }
        assert_eq!(cache.seq_len(), 208);
        assert!(cache.layer_mut(1).is_empty());
        cache.clear();
        assert_eq!(cache.seq_len(), 0);
    }

    #[test]
    fn select_rows_keeps_chosen_sequences() {
        let mut cache = KvCache::new(1);
        let (k, v) = (rand(3), rand(3));
        let _ = cache.layer_mut(0).append(&k, &v);
        cache.select_rows(&Tensor::from_slice(&[1i64]));
        let (k2, v2) = (rand(1).narrow(0, 0, 1), rand(1).narrow(0, 0, 1));
        let (ck, cv) = cache.layer_mut(0).append(&k2, &v2);
        assert_eq!(ck, Tensor::cat(&[&k.narrow(0, 1, 1), &k2], 2));
        assert_eq!(cv, Tensor::cat(&[&v.narrow(0, 1, 1), &v2], 2));
    }

    #[test]
    fn grad_carrying_keys_are_concatenated_and_keep_their_graph() {
        let mut cache = KvCache::new(1);
        let k = rand(2).set_requires_grad(true);
        let v = rand(2).set_requires_grad(true);
        let _ = cache.layer_mut(0).append(&k, &v);
        let (k2, v2) = (rand(1), rand(1));
        let (ck, cv) = cache.layer_mut(0).append(&k2, &v2);
        (ck.sum(Kind::Float) + cv.sum(Kind::Float)).backward();
        assert_eq!(k.grad(), k.ones_like());
    }
}
