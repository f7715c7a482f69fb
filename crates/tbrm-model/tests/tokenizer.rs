//! Tokenizer and chat-template parity with transformers: expected renders and ids were
//! written by `scripts/make_template_fixtures.py` from transformers' `apply_chat_template`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tbrm_model::{ChatMessage, ChatTemplate, Tokenizer, TokenizerError};

fn resources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resources")
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn real_templates_render_exactly_like_transformers() {
    let dir = resources().join("chat_templates");
    let renders = read(&dir.join("renders.json"));
    let cases = renders["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 24);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let src = std::fs::read_to_string(dir.join(name)).unwrap();
        let template = ChatTemplate::new(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut special = Vec::new();
        for key in ["bos_token", "eos_token"] {
            if let Some(s) = case[key].as_str() {
                special.push((key, s));
            }
        }
        let got = template
            .render(
                &messages(&case["messages"]),
                case["add_generation_prompt"].as_bool().unwrap(),
                &special,
                &serde_json::Map::new(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got,
            case["expected"].as_str().unwrap(),
            "template {name}, case {case}"
        );
    }
}

#[test]
fn encode_and_chat_ids_match_transformers() {
    let dir = resources().join("tok_qwen");
    let tok = Tokenizer::load(&dir).unwrap();
    let enc = read(&dir.join("encodings.json"));
    for case in enc["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text);
    }
    for case in enc["chat"].as_array().unwrap() {
        let text = tok
            .apply_chat_template(&messages(&case["messages"]), true)
            .unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(&text, false).unwrap(), want);
    }
    let eos: Vec<u32> = serde_json::from_value(enc["eos_token_ids"].clone()).unwrap();
    assert_eq!(tok.eos_token_ids(), eos.as_slice());
    assert_eq!(
        tok.pad_token_id() as u64,
        enc["pad_token_id"].as_u64().unwrap()
    );
}

#[test]
fn skip_special_drops_special_tokens_when_decoding() {
    let tok = Tokenizer::load(&resources().join("tok_qwen")).unwrap();
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
}

#[test]
fn named_template_list_uses_default_and_eos_falls_back_to_tokenizer_config() {
    let tok = Tokenizer::load(&resources().join("tok_named")).unwrap();
    let text = tok
        .apply_chat_template(&[ChatMessage::user("hi")], true)
        .unwrap();
    assert!(
        text.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(tok.eos_token_ids(), &[eot]);
}

#[test]
fn missing_chat_template_is_a_clear_error_naming_the_file() {
    let tok = Tokenizer::load(&resources().join("tok_plain")).unwrap();
    assert!(!tok.has_chat_template());
    let err = tok
        .apply_chat_template(&[ChatMessage::user("hi")], true)
        .unwrap_err();
    assert!(matches!(err, TokenizerError::MissingChatTemplate { .. }));
    let msg = err.to_string();
    assert!(msg.contains("tok_plain/tokenizer_config.json"), "{msg}");
    assert!(msg.contains("chat_template"), "{msg}");
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn chat_template_jinja_file_overrides_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    copy_folder(&resources().join("tok_qwen"), tmp.path());
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let tok = Tokenizer::load(tmp.path()).unwrap();
    let text = tok
        .apply_chat_template(&[ChatMessage::user("hi")], false)
        .unwrap();
    assert_eq!(text, "<user>hi");
}

#[test]
fn bad_folders_are_errors_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");

    copy_folder(&resources().join("tok_qwen"), tmp.path());
    std::fs::write(
        tmp.path().join("generation_config.json"),
        r#"{"eos_token_id": "x"}"#,
    )
    .unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("eos_token_id"),
        "{err}"
    );

    std::fs::write(tmp.path().join("generation_config.json"), "{").unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("generation_config.json") && err.contains("invalid JSON"),
        "{err}"
    );

    std::fs::remove_file(tmp.path().join("generation_config.json")).unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<|not_a_token|>"}"#,
    )
    .unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("eos_token"),
        "{err}"
    );

    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"chat_template": "{% if %}"}"#,
    )
    .unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");

    std::fs::write(tmp.path().join("tokenizer.json"), "{\"truncated\": ").unwrap();
    let err = Tokenizer::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn extra_variables_reach_the_template() {
    let t = ChatTemplate::new(
        "{% if enable_thinking is defined and enable_thinking is false %}no-think{% endif %}",
    )
    .unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("enable_thinking".into(), Value::Bool(false));
    assert_eq!(t.render(&[], true, &[], &extra).unwrap(), "no-think");
    assert_eq!(
        t.render(&[], true, &[], &serde_json::Map::new()).unwrap(),
        ""
    );
}

#[test]
fn end_of_turn_token_is_found_from_the_template_and_joins_the_stop_ids() {
    // Qwen2.5's template: a turn ends in `<|im_end|>`, while EOS is `<|endoftext|>`.
    let mut tok = Tokenizer::load(&resources().join("tok_named")).unwrap();
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(tok.end_of_turn_ids().unwrap(), vec![im_end]);
    tok.add_eos_token_ids(&[im_end, im_end]);
    assert_eq!(tok.eos_token_ids(), &[eot, im_end]);

    // No chat template: nothing to add.
    let plain = Tokenizer::load(&resources().join("tok_plain")).unwrap();
    assert!(plain.end_of_turn_ids().unwrap().is_empty());

    // A template whose turns end in plain text has no end-of-turn token; one that ends a
    // turn with the EOS token gives that token.
    let tmp = tempfile::tempdir().unwrap();
    copy_folder(&resources().join("tok_qwen"), tmp.path());
    let jinja = tmp.path().join("chat_template.jinja");
    std::fs::write(
        &jinja,
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}",
    )
    .unwrap();
    let tok = Tokenizer::load(tmp.path()).unwrap();
    assert!(tok.end_of_turn_ids().unwrap().is_empty());
    std::fs::write(
        &jinja,
        "{% for m in messages %}<|im_start|>{{ m.content }}<|endoftext|>{% endfor %}",
    )
    .unwrap();
    let tok = Tokenizer::load(tmp.path()).unwrap();
    assert_eq!(
        tok.end_of_turn_ids().unwrap(),
        vec![tok.token_to_id("<|endoftext|>").unwrap()]
    );
}
