//! `nn.Linear` with Hugging Face's layout: `weight` is (out, in), `bias` optional.

use tch::{nn, Tensor};

pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Zero-initialised; `CausalLm` fills weights from a checkpoint or a seeded init.
    pub fn new(p: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        Linear {
            weight: p.zeros("weight", &[out_dim, in_dim]),
            bias: bias.then(|| p.zeros("bias", &[out_dim])),
        }
    }

    /// (.., in) -> (.., out)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}
