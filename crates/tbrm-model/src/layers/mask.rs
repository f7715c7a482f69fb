//! Attention masks and position ids for left-padded batches.
//!
//! The caller's mask is (B, T_past + T) of 0/1 over every key position (cached and new). From it
//! come RoPE positions as `cumsum - 1`, as transformers' `generate()` derives them, so a
//! left-padded row gets the same positions as the unpadded sequence. A padded query row would
//! have no key to attend to and softmax would give NaN, which then leaks into real rows through
//! the padded keys' values (0 * NaN); letting every query attend to itself avoids that and
//! leaves non-padded rows unchanged.

use tch::{Device, Kind, Tensor};

/// The mask argument for `scaled_dot_product_attention`, built once per forward pass.
pub(crate) enum AttnMask {
    /// One new token per row and no padding: attend to everything.
    None,
    /// No cache and no padding: SDPA's own causal mask (lets torch pick its fastest kernel).
    Causal,
    /// (B, 1, T, T_past + T) bool, true = may attend.
    Explicit(Tensor),
    /// One query per row over slot storage: (B, 1, 1, W) additive, 0 where the row may attend
    /// and -inf past its length, in the model dtype (`Decoder::decode_slots`).
    Decode(Tensor),
}

impl AttnMask {
    /// `mask` (B, T_past + T) of 0/1; `t` new tokens.
    pub fn new(mask: &Tensor, t: i64) -> Self {
        let (b, s) = mask
            .size2()
            .expect("attention mask must be (B, T_past + T)");
        let past = s - t;
        let no_padding = mask.min().int64_value(&[]) != 0;
        if no_padding && t == 1 {
            return AttnMask::None;
        }
        if no_padding && past == 0 {
            return AttnMask::Causal;
        }
        let device = mask.device();
        let q_pos = (Tensor::arange(t, (Kind::Int64, device)) + past).unsqueeze(1); // (T, 1)
        let k_pos = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(0); // (1, S)
        let causal = k_pos.le_tensor(&q_pos); // (T, S)
        let keys = mask.ne(0).view([b, 1, 1, s]);
        let allowed = causal
            .logical_and(&keys)
            .logical_or(&k_pos.eq_tensor(&q_pos));
        AttnMask::Explicit(allowed)
    }
}

/// RoPE positions (B, T) for the last `t` columns of `mask` (B, T_past + T): the number of real
/// tokens before each position; padded positions get 0 (their outputs are never used).
pub(crate) fn position_ids(mask: &Tensor, t: i64) -> Tensor {
    let s = mask.size()[1];
    let m = mask.to_kind(Kind::Int64);
    let pos = (m.cumsum(1, Kind::Int64) - 1).clamp_min(0);
    pos.narrow(1, s - t, t)
}

/// A (B, T) mask of ones on `device`, for unpadded batches.
pub fn ones_mask(batch: i64, len: i64, device: Device) -> Tensor {
    Tensor::ones([batch, len], (Kind::Int64, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&[i64]]) -> Tensor {
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    #[test]
    fn positions_skip_left_padding() {
        let m = mask(&[&[0, 0, 1, 1, 1], &[1, 1, 1, 1, 1]]);
        let p: Vec<i64> = Vec::try_from(position_ids(&m, 5).view([-1])).unwrap();
        assert_eq!(p, vec![0, 0, 0, 1, 2, 0, 1, 2, 3, 4]);
        let p: Vec<i64> = Vec::try_from(position_ids(&m, 1).view([-1])).unwrap();
        assert_eq!(p, vec![2, 4]);
    }

    #[test]
    fn explicit_mask_is_causal_padded_and_self_attending() {
        let m = mask(&[&[0, 1, 1], &[1, 1, 1]]);
        let AttnMask::Explicit(a) = AttnMask::new(&m, 2) else {
            panic!("padding needs an explicit mask")
        };
        assert_eq!(a.size(), [2, 1, 2, 3]);
        let rows: Vec<i64> = Vec::try_from(a.to_kind(Kind::Int64).view([-1])).unwrap();
        // Row 0: query 1 (first real token) sees key 1; query 2 sees keys 1, 2.
        // Row 1: no padding, plain causal with one cached position.
        assert_eq!(rows, vec![0, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1]);
        // A fully padded query row still attends to itself.
        let AttnMask::Explicit(a) = AttnMask::new(&mask(&[&[0, 0, 1]]), 3) else {
            panic!()
        };
        let rows: Vec<i64> = Vec::try_from(a.to_kind(Kind::Int64).view([-1])).unwrap();
        assert_eq!(rows, vec![1, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert!(matches!(
            AttnMask::new(&mask(&[&[1, 1]]), 2),
            AttnMask::Causal
        ));
        assert!(matches!(
            AttnMask::new(&mask(&[&[1, 1]]), 1),
            AttnMask::None
        ));
    }
}
