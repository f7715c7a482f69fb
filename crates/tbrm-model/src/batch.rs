//! Packing (prompt, response) pairs into one batch for scoring and training: prompts
//! left-padded to a common length P, responses right-padded to L, so every response starts at
//! column P and the logits that predict response token j sit at column P - 1 + j for every row.

use tch::{Device, Kind, Tensor};

use crate::ModelError;

/// A (B, P + L) batch of left-padded prompts followed by right-padded responses.
#[derive(Debug)]
pub struct PackedBatch {
    /// (B, P + L) int64; padding holds `pad_id`.
    pub input_ids: Tensor,
    /// (B, P + L) int64, 1 at real tokens.
    pub attention_mask: Tensor,
    /// (B, L) f32, 1 at real response tokens.
    pub response_mask: Tensor,
    /// (B, L) int64: the response tokens (`pad_id` at padding).
    pub response_ids: Tensor,
    /// P, the padded prompt length: response column j is `prompt_len + j`.
    pub prompt_len: i64,
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
        let p = pairs.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let l = pairs.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
        let b = pairs.len();
        let pad = i64::from(pad_id);
        let mut ids = Vec::with_capacity(b * (p + l));
        let mut mask = Vec::with_capacity(b * (p + l));
        let mut resp = Vec::with_capacity(b * l);
        let mut rmask = Vec::with_capacity(b * l);
        for (prompt, response) in pairs {
            let lp = p - prompt.len();
            let rp = l - response.len();
            ids.extend(std::iter::repeat_n(pad, lp));
            ids.extend(prompt.iter().map(|&t| i64::from(t)));
            ids.extend(response.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(pad, rp));
            mask.extend(std::iter::repeat_n(0i64, lp));
            mask.extend(std::iter::repeat_n(1i64, prompt.len() + response.len()));
            mask.extend(std::iter::repeat_n(0i64, rp));
            resp.extend(response.iter().map(|&t| i64::from(t)));
            resp.extend(std::iter::repeat_n(pad, rp));
            rmask.extend(std::iter::repeat_n(1f32, response.len()));
            rmask.extend(std::iter::repeat_n(0f32, rp));
        }
        let (bi, pl, li) = (b as i64, p as i64, l as i64);
        Ok(PackedBatch {
            input_ids: Tensor::from_slice(&ids)
                .view([bi, pl + li])
                .to_device(device),
            attention_mask: Tensor::from_slice(&mask)
                .view([bi, pl + li])
                .to_device(device),
            response_mask: Tensor::from_slice(&rmask)
                .view([bi, li])
                .to_kind(Kind::Float)
                .to_device(device),
            response_ids: Tensor::from_slice(&resp).view([bi, li]).to_device(device),
            prompt_len: pl,
            response_lens: pairs.iter().map(|(_, r)| r.len() as i64).collect(),
        })
    }

    pub fn batch_size(&self) -> i64 {
        self.input_ids.size()[0]
    }

    /// L, the padded response length.
    pub fn response_len(&self) -> i64 {
        self.input_ids.size()[1] - self.prompt_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f64> {
        Vec::try_from(t.to_kind(Kind::Double).view([-1])).unwrap()
    }

    #[test]
    fn prompts_left_padded_responses_right_padded() {
        let b = PackedBatch::new(&[(&[1, 2, 3], &[4]), (&[5], &[6, 7, 8])], 0, Device::Cpu);
        assert_eq!(b.prompt_len, 3);
        assert_eq!(b.response_len(), 3);
        assert_eq!(
            v(&b.input_ids),
            [1., 2., 3., 4., 0., 0., 0., 0., 5., 6., 7., 8.]
        );
        assert_eq!(
            v(&b.attention_mask),
            [1., 1., 1., 1., 0., 0., 0., 0., 1., 1., 1., 1.]
        );
        assert_eq!(v(&b.response_mask), [1., 0., 0., 1., 1., 1.]);
        assert_eq!(v(&b.response_ids), [4., 0., 0., 6., 7., 8.]);
        assert_eq!(b.response_lens, vec![1, 3]);
        assert_eq!(b.response_mask.kind(), Kind::Float);
    }

    #[test]
    fn empty_prompt_is_an_error() {
        let err = PackedBatch::try_new(&[(&[], &[1])], 0, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("prompt 0 is empty"), "{err}");
        assert!(PackedBatch::try_new(&[], 0, Device::Cpu).is_err());
    }
}
