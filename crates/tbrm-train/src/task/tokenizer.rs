//! A character-level tokenizer for the built-in tasks, written as real Hugging Face
//! files so the tiny model folder loads like any other checkpoint (`tbrm_model::Tokenizer::load`,
//! Python `transformers.AutoTokenizer`).
//!
//! Built with the `tokenizers` crate: a `WordLevel` model whose vocabulary is the task's
//! characters, a `Split` pre-tokenizer that isolates every character (regex `.`), and a `Fuse`
//! decoder so decoding concatenates characters instead of joining them with spaces. Three
//! special tokens come first: `<|endoftext|>` (end of response, the EOS), `<|pad|>` and
//! `<|unk|>` (any character outside the task alphabet, so foreign text never panics).
//!
//! Each task has its own alphabet ([`CHARS`] for arithmetic, [`COUNTDOWN_CHARS`] for
//! Countdown); a later alphabet only appends characters to an earlier one, so the characters
//! the tasks share keep their ids and the committed `assets/tiny-arith` tokenizer never moves.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::TaskError;

/// End of a response; generation stops on it.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Padding, distinct from EOS so a padded batch never looks finished by accident.
pub const PAD_TOKEN: &str = "<|pad|>";
/// Any character outside [`CHARS`].
pub const UNK_TOKEN: &str = "<|unk|>";
/// Everything the arithmetic task writes: digits, operators, `=`, the step separator `;` and
/// the answer marker `#`.
pub const CHARS: &str = "0123456789+-*=;#";
/// Countdown's alphabet: arithmetic's characters (same ids) then the number separator `,` and
/// the target marker `:` (ids 19 and 20).
pub const COUNTDOWN_CHARS: &str = "0123456789+-*=;#,:";

/// Id of [`EOS_TOKEN`].
pub const EOS_ID: u32 = 0;
/// Id of [`PAD_TOKEN`].
pub const PAD_ID: u32 = 1;
/// Id of [`UNK_TOKEN`].
pub const UNK_ID: u32 = 2;

/// Number of tokens of the arithmetic tokenizer (special tokens plus characters).
pub fn vocab_size() -> usize {
    vocab_size_for(CHARS)
}

/// Number of tokens of the tokenizer over `chars` (special tokens plus characters).
pub fn vocab_size_for(chars: &str) -> usize {
    3 + chars.chars().count()
}

fn vocab(chars: &str) -> HashMap<String, u32> {
    let mut v: HashMap<String, u32> = [
        (EOS_TOKEN, EOS_ID),
        (PAD_TOKEN, PAD_ID),
        (UNK_TOKEN, UNK_ID),
    ]
    .into_iter()
    .map(|(t, i)| (t.to_string(), i))
    .collect();
    for (i, ch) in chars.chars().enumerate() {
        v.insert(ch.to_string(), 3 + i as u32);
    }
    v
}

fn tok_err(e: impl std::fmt::Display) -> TaskError {
    TaskError::Tokenizer(e.to_string())
}

/// The arithmetic task's tokenizer, in memory.
pub fn build() -> Result<Tokenizer, TaskError> {
    build_for(CHARS)
}

/// The tokenizer over the alphabet `chars` (distinct characters, none of them a space), in
/// memory.
pub fn build_for(chars: &str) -> Result<Tokenizer, TaskError> {
    let model = WordLevel::builder()
        .vocab(vocab(chars).into_iter().collect())
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .map_err(tok_err)?;
    let mut tok = Tokenizer::new(model);
    let split = Split::new(
        SplitPattern::Regex(".".to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?;
    tok.with_pre_tokenizer(Some(split));
    tok.with_decoder(Some(Fuse::new()));
    tok.add_special_tokens(&[
        AddedToken::from(EOS_TOKEN, true),
        AddedToken::from(PAD_TOKEN, true),
        AddedToken::from(UNK_TOKEN, true),
    ]);
    Ok(tok)
}

/// Writes the arithmetic task's tokenizer files into `dir` (see [`write_files_for`]).
pub fn write_files(dir: &Path) -> Result<(), TaskError> {
    write_files_for(dir, CHARS)
}

/// Writes `tokenizer.json`, `tokenizer_config.json` (no chat template: prompts are raw text)
/// and `generation_config.json` (EOS id) of the tokenizer over `chars` into `dir`, creating it
/// if needed.
pub fn write_files_for(dir: &Path, chars: &str) -> Result<(), TaskError> {
    let io = |path: &Path, e: std::io::Error| TaskError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tok = build_for(chars)?;
    let path = dir.join("tokenizer.json");
    tok.save(&path, true).map_err(tok_err)?;

    let special = |content: &str| {
        json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
               "single_word": false, "special": true})
    };
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {
            EOS_ID.to_string(): special(EOS_TOKEN),
            PAD_ID.to_string(): special(PAD_TOKEN),
            UNK_ID.to_string(): special(UNK_TOKEN),
        },
        "bos_token": null,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 256,
    });
    write_json(&dir.join("tokenizer_config.json"), &config)?;
    let generation = json!({
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "do_sample": false,
    });
    write_json(&dir.join("generation_config.json"), &generation)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), TaskError> {
    let text = serde_json::to_string_pretty(value).expect("a json! value always serialises");
    std::fs::write(path, text + "\n").map_err(|e| TaskError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_character_one_token_each() {
        let tok = build().unwrap();
        let text = "2+7*3-5=7*3=21;2+21=23;23-5=18;#18";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc.get_ids().len(), text.len());
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        let all = tok.encode(CHARS, false).unwrap();
        let want: Vec<u32> = (3..vocab_size() as u32).collect();
        assert_eq!(all.get_ids(), &want[..]);
        assert_eq!(tok.get_vocab_size(true), vocab_size());
    }

    #[test]
    fn special_tokens_have_fixed_ids_and_are_skipped_when_decoding() {
        let tok = build().unwrap();
        assert_eq!(tok.token_to_id(EOS_TOKEN), Some(EOS_ID));
        assert_eq!(tok.token_to_id(PAD_TOKEN), Some(PAD_ID));
        assert_eq!(tok.token_to_id(UNK_TOKEN), Some(UNK_ID));
        let enc = tok.encode("#5<|endoftext|>", false).unwrap();
        assert_eq!(*enc.get_ids().last().unwrap(), EOS_ID);
        assert_eq!(enc.get_ids().len(), 3);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "#5");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "#5<|endoftext|>");
    }

    #[test]
    fn countdown_alphabet_extends_arithmetic_without_moving_its_ids() {
        let arith = build().unwrap();
        let cd = build_for(COUNTDOWN_CHARS).unwrap();
        assert!(COUNTDOWN_CHARS.starts_with(CHARS));
        for ch in CHARS.chars() {
            let t = ch.to_string();
            assert_eq!(arith.token_to_id(&t), cd.token_to_id(&t), "{t}");
        }
        assert_eq!(cd.token_to_id(","), Some(19));
        assert_eq!(cd.token_to_id(":"), Some(20));
        assert_eq!(vocab_size_for(COUNTDOWN_CHARS), 21);
        assert_eq!(cd.get_vocab_size(true), 21);
        let text = "3,7,9:24=9-7=2;3*2=6";
        let enc = cd.encode(text, false).unwrap();
        assert_eq!(enc.get_ids().len(), text.len());
        assert!(!enc.get_ids().contains(&UNK_ID));
        assert_eq!(cd.decode(enc.get_ids(), true).unwrap(), text);
        // The arithmetic tokenizer does not know the separators.
        let enc = arith.encode("3,7:1", false).unwrap();
        assert_eq!(enc.get_ids()[1], UNK_ID);
    }

    #[test]
    fn foreign_characters_become_unk() {
        let tok = build().unwrap();
        let enc = tok.encode("1 x", false).unwrap();
        assert_eq!(enc.get_ids(), &[3 + 1, UNK_ID, UNK_ID]);
    }

    #[test]
    fn written_files_load_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path()).unwrap();
        let loaded = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let enc = loaded.encode("12-3*4=", false).unwrap();
        assert_eq!(loaded.decode(enc.get_ids(), true).unwrap(), "12-3*4=");
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["eos_token"], EOS_TOKEN);
        assert!(cfg.get("chat_template").is_none());
        let gen: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("generation_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(gen["eos_token_id"], EOS_ID);
    }
}
