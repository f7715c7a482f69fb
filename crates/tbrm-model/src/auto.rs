//! `config.json` `model_type` to family, after psyche's `auto_model.rs`: adding a family is one
//! file in `models/` plus one line here.

use crate::config::{FamilySpec, ModelType};
use crate::models::{llama, qwen2, qwen3};

/// Every supported `model_type` string.
pub const SUPPORTED: &[&str] = &[qwen2::SPEC.name, llama::SPEC.name, qwen3::SPEC.name];

/// The family for a `model_type` string, if supported.
pub(crate) fn family(model_type: &str) -> Option<&'static FamilySpec> {
    [&qwen2::SPEC, &llama::SPEC, &qwen3::SPEC]
        .into_iter()
        .find(|s| s.name == model_type)
}

pub(crate) fn spec(model_type: ModelType) -> &'static FamilySpec {
    match model_type {
        ModelType::Qwen2 => &qwen2::SPEC,
        ModelType::Llama => &llama::SPEC,
        ModelType::Qwen3 => &qwen3::SPEC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_maps_back_to_itself() {
        for t in [ModelType::Qwen2, ModelType::Llama, ModelType::Qwen3] {
            assert_eq!(family(spec(t).name).unwrap().model_type, t);
        }
        assert!(family("mistral").is_none());
    }
}
