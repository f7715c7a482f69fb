//! Math answer verifier: extraction, normalisation and equivalence in the spirit of Hugging Face Math-Verify, with bounded work. No tch dependency.
