//! Building blocks of the decoder: linear projections, RMSNorm, rotary embeddings, grouped-query
//! attention and the SwiGLU MLP. Each holds its own weights, created under the `nn::Path` the
//! checkpoint names them by, so loading needs no renaming table.

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod mask;
pub(crate) mod mlp;
pub(crate) mod packed;
pub(crate) mod rms_norm;
pub(crate) mod rope;
