//! One row to one [`Problem`]: the [`FieldMap`]'s (dotted) field names looked up in the row,
//! the prompt as text or chat messages, scalar answers and ids as text, the rest kept as extras.

use serde_json::{Map, Value};

use super::{FieldMap, Problem, PromptInput};
use crate::template::ChatMessage;

fn lookup<'v>(row: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut cur = row.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A scalar as answer/id text; `None` for anything else.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_prompt(v: &Value, field: &str) -> Result<PromptInput, String> {
    let bad =
        || format!("field `{field}` must be a string or a list of {{role, content}} messages");
    let prompt = match v {
        Value::String(s) => PromptInput::Text(s.clone()),
        Value::Array(items) => {
            let mut msgs = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let role = item.get("role").and_then(Value::as_str);
                let content = item.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => msgs.push(ChatMessage::new(r, c)),
                    _ => {
                        return Err(format!(
                            "field `{field}`: message {i} needs string `role` and `content`"
                        ))
                    }
                }
            }
            PromptInput::Chat(msgs)
        }
        _ => return Err(bad()),
    };
    if prompt.question().trim().is_empty() {
        return Err(format!("field `{field}` is empty"));
    }
    Ok(prompt)
}

pub(super) fn parse_row(
    row: Value,
    index: usize,
    fields: &FieldMap,
    default_source: &str,
) -> Result<Problem, String> {
    let Value::Object(mut obj) = row else {
        return Err("row is not a JSON object".into());
    };
    let prompt = match lookup(&obj, &fields.problem) {
        Some(v) if !v.is_null() => parse_prompt(v, &fields.problem)?,
        _ => return Err(format!("missing field `{}`", fields.problem)),
    };
    let answer = match lookup(&obj, &fields.answer) {
        Some(v) if !v.is_null() => scalar_text(v)
            .ok_or_else(|| format!("field `{}` must be a string or a number", fields.answer))?,
        _ => return Err(format!("missing field `{}`", fields.answer)),
    };
    let id = match lookup(&obj, &fields.id) {
        None | Some(Value::Null) => index.to_string(),
        Some(v) => scalar_text(v)
            .ok_or_else(|| format!("field `{}` must be a string or a number", fields.id))?,
    };
    let source = match lookup(&obj, &fields.source) {
        None | Some(Value::Null) => default_source.to_string(),
        Some(v) => {
            scalar_text(v).ok_or_else(|| format!("field `{}` must be a string", fields.source))?
        }
    };
    // The problem and answer fields are consumed whole (their top-level key); id and source only
    // when they are top-level, so nested metadata such as verl's `extra_info` stays available.
    for f in [&fields.problem, &fields.answer] {
        obj.remove(f.split('.').next().unwrap_or(f));
    }
    for f in [&fields.id, &fields.source] {
        if !f.contains('.') {
            obj.remove(f.as_str());
        }
    }
    Ok(Problem {
        id,
        prompt,
        answer,
        source,
        extra: Value::Object(obj),
    })
}
