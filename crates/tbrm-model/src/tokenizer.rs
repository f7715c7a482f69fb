//! A Hugging Face tokenizer folder: `tokenizer.json` (through the `tokenizers` crate),
//! `tokenizer_config.json` (chat template and special tokens) and `generation_config.json`
//! (EOS ids), read the way transformers reads them.
//!
//! - `chat_template` may be a string or a list of `{name, template}` (the `default` one is
//!   used, as in transformers); a `chat_template.jinja` file next to it wins, as in
//!   transformers >= 4.43 which saves the template there.
//! - `bos_token`/`eos_token`/`pad_token` may be strings or AddedToken objects
//!   (`{"content": ..}`).
//! - Stop ids: `generation_config.json` `eos_token_id` (an int or a list), falling back to
//!   the tokenizer's `eos_token`. This is what `transformers.generate` stops on.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::chat_template::{ChatMessage, ChatTemplate};

/// Errors while loading or using a tokenizer. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Tokenizers { path: PathBuf, msg: String },
    #[error("{path}: key `{key}`: {msg}")]
    InvalidField {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("no chat template: {path} has no `chat_template` (and there is no chat_template.jinja); this tokenizer cannot format chat messages")]
    MissingChatTemplate { path: PathBuf },
    #[error("chat template from {path}: {msg}")]
    Template { path: PathBuf, msg: String },
}

/// A loaded tokenizer folder. Cheap to share by reference; `generate` needs it for stop
/// strings and decoding.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<(ChatTemplate, PathBuf)>,
    config_path: PathBuf,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    unk_token: Option<String>,
    eos_token_ids: Vec<u32>,
    pad_token_id: u32,
}

fn read_json(path: &Path) -> Result<Json, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional_json(path: &Path) -> Result<Option<Json>, TokenizerError> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A special token given as `"<s>"`, `{"content": "<s>", ...}` or `null`.
fn special_token(cfg: &Json, key: &str, path: &Path) -> Result<Option<String>, TokenizerError> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(o)) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(TokenizerError::InvalidField {
                path: path.to_path_buf(),
                key: key.to_string(),
                msg: "an AddedToken object needs a string `content`".into(),
            }),
        },
        Some(other) => Err(TokenizerError::InvalidField {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg: format!("expected a string or an AddedToken object, found {other}"),
        }),
    }
}

/// `eos_token_id` as an int or a list of ints.
fn id_list(cfg: &Json, key: &str, path: &Path) -> Result<Option<Vec<u32>>, TokenizerError> {
    let bad = |msg: String| TokenizerError::InvalidField {
        path: path.to_path_buf(),
        key: key.to_string(),
        msg,
    };
    let one = |v: &Json| -> Result<u32, TokenizerError> {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| bad(format!("expected a non-negative token id, found {v}")))
    };
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Array(a)) => a.iter().map(one).collect::<Result<_, _>>().map(Some),
        Some(v) => one(v).map(|x| Some(vec![x])),
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` plus the optional `tokenizer_config.json`,
    /// `chat_template.jinja` and `generation_config.json`.
    pub fn load(dir: &Path) -> Result<Self, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(TokenizerError::Io {
                path: tok_path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
            TokenizerError::Tokenizers {
                path: tok_path.clone(),
                msg: e.to_string(),
            }
        })?;

        let config_path = dir.join("tokenizer_config.json");
        let cfg = read_optional_json(&config_path)?.unwrap_or(Json::Null);
        let bos_token = special_token(&cfg, "bos_token", &config_path)?;
        let eos_token = special_token(&cfg, "eos_token", &config_path)?;
        let pad_token = special_token(&cfg, "pad_token", &config_path)?;
        let unk_token = special_token(&cfg, "unk_token", &config_path)?;

        let jinja_path = dir.join("chat_template.jinja");
        let template_source = if jinja_path.exists() {
            let src =
                std::fs::read_to_string(&jinja_path).map_err(|source| TokenizerError::Io {
                    path: jinja_path.clone(),
                    source,
                })?;
            Some((src, jinja_path))
        } else {
            template_from_config(&cfg, &config_path)?.map(|s| (s, config_path.clone()))
        };
        let chat_template = match template_source {
            None => None,
            Some((src, path)) => {
                let t = ChatTemplate::new(&src).map_err(|msg| TokenizerError::Template {
                    path: path.clone(),
                    msg,
                })?;
                Some((t, path))
            }
        };

        let gen_path = dir.join("generation_config.json");
        let gen = read_optional_json(&gen_path)?.unwrap_or(Json::Null);
        let token_id = |tok: &Option<String>, key: &str| -> Result<Option<u32>, TokenizerError> {
            match tok {
                None => Ok(None),
                Some(t) => {
                    inner
                        .token_to_id(t)
                        .map(Some)
                        .ok_or_else(|| TokenizerError::InvalidField {
                            path: config_path.clone(),
                            key: key.to_string(),
                            msg: format!(
                                "token {t:?} is not in the vocabulary of {}",
                                tok_path.display()
                            ),
                        })
                }
            }
        };
        let eos_from_tokenizer = token_id(&eos_token, "eos_token")?;
        let pad_from_tokenizer = token_id(&pad_token, "pad_token")?;
        let eos_token_ids = match id_list(&gen, "eos_token_id", &gen_path)? {
            Some(ids) if !ids.is_empty() => ids,
            _ => eos_from_tokenizer.into_iter().collect(),
        };
        let pad_from_gen =
            id_list(&gen, "pad_token_id", &gen_path)?.and_then(|v| v.first().copied());
        // Padding is always masked out, so any valid id works when the folder names none.
        let pad_token_id = pad_from_tokenizer
            .or(pad_from_gen)
            .or(eos_token_ids.first().copied())
            .unwrap_or(0);
        Ok(Self {
            inner,
            chat_template,
            config_path,
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            eos_token_ids,
            pad_token_id,
        })
    }

    /// Token ids of `text`. `add_special` adds what the tokenizer's post-processor adds
    /// (BOS for Llama 3, nothing for Qwen); pass `false` for rendered chat templates, which
    /// already contain their special tokens.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Tokenizers {
                path: PathBuf::from("tokenizer.json"),
                msg: format!("encoding failed: {e}"),
            })
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Tokenizers {
                path: PathBuf::from("tokenizer.json"),
                msg: format!("decoding failed: {e}"),
            })
    }

    /// Renders `messages` with the folder's chat template exactly as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=..)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// As [`Self::apply_chat_template`], with extra template variables (transformers'
    /// `**kwargs`, e.g. `enable_thinking` for Qwen3 or `date_string` for Llama 3.1).
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Json>,
    ) -> Result<String, TokenizerError> {
        let (template, path) =
            self.chat_template
                .as_ref()
                .ok_or_else(|| TokenizerError::MissingChatTemplate {
                    path: self.config_path.clone(),
                })?;
        let mut special = Vec::new();
        for (k, v) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("pad_token", &self.pad_token),
            ("unk_token", &self.unk_token),
        ] {
            if let Some(v) = v {
                special.push((k, v.as_str()));
            }
        }
        template
            .render(messages, add_generation_prompt, &special, extra)
            .map_err(|msg| TokenizerError::Template {
                path: path.clone(),
                msg,
            })
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Ids that end a generated sequence (see the module doc for where they come from).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Replaces the stop ids (e.g. to also stop on `<|endoftext|>`, or from a config).
    pub fn set_eos_token_ids(&mut self, ids: Vec<u32>) {
        self.eos_token_ids = ids;
    }

    /// Adds `ids` to the stop ids (kept once each, in order).
    pub fn add_eos_token_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_token_ids.contains(&id) {
                self.eos_token_ids.push(id);
            }
        }
    }

    /// The special token the chat template writes right after an assistant turn (`<|im_end|>`
    /// for Qwen, `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma), as ids; empty when the
    /// folder has no chat template or the turn ends in plain text. A base model prompted through
    /// a chat template often emits this token and then goes on writing a new turn, while its
    /// `generation_config.json` names only `<|endoftext|>`: generation must stop here too.
    ///
    /// Found by rendering a probe conversation (not from a list of known names), so it follows
    /// whatever template the folder carries.
    pub fn end_of_turn_ids(&self) -> Result<Vec<u32>, TokenizerError> {
        if self.chat_template.is_none() {
            return Ok(Vec::new());
        }
        const PROBE: &str = "tbrmEndOfTurnProbe";
        let text = self.apply_chat_template(
            &[ChatMessage::user("1+1"), ChatMessage::assistant(PROBE)],
            false,
        )?;
        let Some(pos) = text.rfind(PROBE) else {
            return Ok(Vec::new());
        };
        let after = &text[pos + PROBE.len()..];
        let ids = self.encode(after, false)?;
        let special = self.inner.get_added_tokens_decoder();
        Ok(match ids.first() {
            Some(id) if special.get(id).is_some_and(|t| t.special) => vec![*id],
            _ => Vec::new(),
        })
    }

    /// The id used to fill padded positions (they are always masked out).
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer, for what this wrapper does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn template_from_config(cfg: &Json, path: &Path) -> Result<Option<String>, TokenizerError> {
    let bad = |msg: &str| TokenizerError::InvalidField {
        path: path.to_path_buf(),
        key: "chat_template".into(),
        msg: msg.to_string(),
    };
    match cfg.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let mut first = None;
            for entry in list {
                let name = entry.get("name").and_then(Json::as_str);
                let tmpl = entry.get("template").and_then(Json::as_str);
                match (name, tmpl) {
                    (Some("default"), Some(t)) => return Ok(Some(t.to_string())),
                    (Some(_), Some(t)) => {
                        first.get_or_insert(t.to_string());
                    }
                    _ => {
                        return Err(bad(
                            "each entry of the list needs string `name` and `template`",
                        ))
                    }
                }
            }
            if first.is_some() {
                Err(bad("a list of named templates needs one named `default`"))
            } else {
                Ok(None)
            }
        }
        Some(_) => Err(bad("expected a string or a list of {name, template}")),
    }
}
