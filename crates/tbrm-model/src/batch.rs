//! Packing (prompt, response) pairs into one batch for scoring and training.
//!
//! Each row is its prompt followed directly by its response, right-padded to the longest row:
//! `[p_0 .. p_{P_i-1}, y_0 .. y_{L_i-1}, pad ..]`. A causal model never looks ahead, so padding
//! at the end of a row changes nothing at the real positions and the batch needs no attention
//! mask: the forward takes SDPA's causal path, which on CUDA keeps the flash and
//! memory-efficient kernels (an explicit padding mask rules flash out), and RoPE positions are
//! plain `0..T`. The hidden state that predicts response token j of row i sits at column
//! `P_i - 1 + j`; [`PackedBatch::response_hidden`] gathers those into a (B, L, C) block.

use tch::{Device, Kind, Tensor};

use crate::ModelError;

/// A (B, T) batch of prompt + response rows, right-padded.
#[derive(Debug)]
pub struct PackedBatch {
    /// (B, T) int64; padding holds `pad_id`.
    pub input_ids: Tensor,
    /// (B, T) int64 ones: right padding needs no mask (see the module doc).
    pub attention_mask: Tensor,
    /// (B, L) f32, 1 at real response tokens.
    pub response_mask: Tensor,
    /// (B, L) int64: the response tokens (`pad_id` at padding).
    pub response_ids: Tensor,
    /// (B, L) int64: the column of the hidden state that predicts response token j
    /// (`P_i - 1 + j`, clamped into the row at padding).
    pub predict_index: Tensor,
    /// Real prompt lengths per row.
    pub prompt_lens: Vec<i64>,
    /// Real response lengths per row.
    pub response_lens: Vec<i64>,
}

impl PackedBatch {
    /// Packs `pairs` of (prompt ids, response ids). Every prompt must be non-empty (the last
    /// prompt token predicts the first response token); responses may be empty.
    ///
    /// Panics on an empty prompt or an empty batch; use [`PackedBatch::try_new`] for input that
    /// is not checked yet.
    pub fn new(pairs: &[(&[u32], &[u32])], pad_id: u32, device: Device) -> Self {
        match Self::try_new(pairs, pad_id, device) {
            Ok(b) => b,
            Err(e) => panic!("PackedBatch::new: {e}"),
        }
    }

    pub fn try_new(
        pairs: &[(&[u32], &[u32])],
        pad_id: u32,
        device: Device,
    ) -> Result<Self, ModelError> {
        if pairs.is_empty() {
            return Err(ModelError::config(
                "<batch>",
                "pairs",
                "no (prompt, response) pairs",
            ));
        }
        if let Some(i) = pairs.iter().position(|(p, _)| p.is_empty()) {
            return Err(ModelError::config(
                "<batch>",
                "prompt",
                format!("prompt {i} is empty"),
            ));
        }
        let t = pairs
            .iter()
            .map(|(p, r)| p.len() + r.len())
            .max()
            .unwrap_or(0);
        let l = pairs.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
        let b = pairs.len();
        let pad = i64::from(pad_id);
        let mut ids = Vec::with_capacity(b * t);
        let mut resp = Vec::with_capacity(b * l);
        let mut rmask = Vec::with_capacity(b * l);
        let mut index = Vec::with_capacity(b * l);
        for (prompt, response) in pairs {
            let len = prompt.len() + response.len();
            ids.extend(prompt.iter().chain(response.iter()).map(|&x| i64::from(x)));
            ids.extend(std::iter::repeat_n(pad, t - len));
            resp.extend(response.iter().map(|&x| i64::from(x)));
            resp.extend(std::iter::repeat_n(pad, l - response.len()));
            rmask.extend(std::iter::repeat_n(1f32, response.len()));
            rmask.extend(std::iter::repeat_n(0f32, l - response.len()));
            let first = prompt.len() - 1;
            index.extend((0..l).map(|j| (first + j).min(t - 1) as i64));
        }
        let (bi, ti, li) = (b as i64, t as i64, l as i64);
        Ok(PackedBatch {
            input_ids: Tensor::from_slice(&ids).view([bi, ti]).to_device(device),
            attention_mask: Tensor::ones([bi, ti], (Kind::Int64, device)),
            response_mask: Tensor::from_slice(&rmask)
                .view([bi, li])
                .to_kind(Kind::Float)
                .to_device(device),
            response_ids: Tensor::from_slice(&resp).view([bi, li]).to_device(device),
            predict_index: Tensor::from_slice(&index).view([bi, li]).to_device(device),
            prompt_lens: pairs.iter().map(|(p, _)| p.len() as i64).collect(),
            response_lens: pairs.iter().map(|(_, r)| r.len() as i64).collect(),
        })
    }

    pub fn batch_size(&self) -> i64 {
        self.input_ids.size()[0]
    }

    /// T, the padded row length.
    pub fn seq_len(&self) -> i64 {
        self.input_ids.size()[1]
    }

    /// L, the padded response length.
    pub fn response_len(&self) -> i64 {
        self.response_ids.size()[1]
    }

    /// Tokens the batch occupies with padding (B x T): what a forward pass costs.
    pub fn padded_tokens(&self) -> i64 {
        self.batch_size() * self.seq_len()
    }

    /// (B,) f32: 1 where the row has a first response token.
    pub fn first_response_mask(&self) -> Tensor {
        if self.response_len() > 0 {
            self.response_mask.select(1, 0)
        } else {
            Tensor::zeros(
                [self.batch_size()],
                (Kind::Float, self.response_mask.device()),
            )
        }
    }

    /// hidden (B, T, C) -> (B, L, C): the states that predict each response token.
    pub fn response_hidden(&self, hidden: &Tensor) -> Tensor {
        let c = hidden.size()[2];
        let (b, l) = (self.batch_size(), self.response_len());
        let index = self.predict_index.unsqueeze(-1).expand([b, l, c], false);
        hidden.gather(1, &index, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f64> {
        Vec::try_from(t.to_kind(Kind::Double).view([-1])).unwrap()
    }

    #[test]
    fn rows_are_prompt_then_response_right_padded() {
        let b = PackedBatch::new(&[(&[1, 2, 3], &[4]), (&[5], &[6, 7, 8])], 0, Device::Cpu);
        assert_eq!(b.seq_len(), 4);
        assert_eq!(b.response_len(), 3);
        assert_eq!(v(&b.input_ids), [1., 2., 3., 4., 5., 6., 7., 8.]);
        assert_eq!(v(&b.response_mask), [1., 0., 0., 1., 1., 1.]);
        assert_eq!(v(&b.response_ids), [4., 0., 0., 6., 7., 8.]);
        // Row 0: token 4 is predicted from column 2; padding clamps into the row.
        assert_eq!(v(&b.predict_index), [2., 3., 3., 0., 1., 2.]);
        assert_eq!(b.response_lens, vec![1, 3]);
        assert_eq!(b.prompt_lens, vec![3, 1]);
        assert_eq!(b.padded_tokens(), 8);
        assert_eq!(b.response_mask.kind(), Kind::Float);
        let hidden = Tensor::arange(8, (Kind::Float, Device::Cpu)).view([2, 4, 1]);
        assert_eq!(v(&b.response_hidden(&hidden)), [2., 3., 3., 4., 5., 6.]);
    }

    #[test]
    fn empty_prompt_is_an_error() {
        let err = PackedBatch::try_new(&[(&[], &[1])], 0, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("prompt 0 is empty"), "{err}");
        assert!(PackedBatch::try_new(&[], 0, Device::Cpu).is_err());
    }
}
