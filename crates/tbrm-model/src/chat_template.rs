//! Hugging Face chat templates rendered with minijinja, matching transformers'
//! `apply_chat_template(..., tokenize=False)`.
//!
//! transformers renders templates with Jinja2 (`ImmutableSandboxedEnvironment`,
//! `trim_blocks=True`, `lstrip_blocks=True`) and adds three helpers: `raise_exception(msg)`,
//! `strftime_now(fmt)` and a `tojson` filter that is `json.dumps(x, ensure_ascii=False)`
//! (see `transformers/utils/chat_template_utils.py`). minijinja gets the same whitespace
//! settings here, the same helpers written anew, and `minijinja-contrib`'s `pycompat`
//! callback for the Python string/dict methods templates call (`.strip()`,
//! `.startswith()`, `.split()`, `.items()`, ...). The context is what transformers passes:
//! `messages`, `add_generation_prompt`, `tools` (none), the special tokens and any extra
//! keyword arguments (`enable_thinking`, `date_string`, ...).

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

/// One turn of a conversation, as transformers takes it (`{"role": .., "content": ..}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template. Rendering errors (syntax, `raise_exception`) come back as
/// strings with minijinja's description; the tokenizer wraps them with the file name.
pub struct ChatTemplate {
    env: Environment<'static>,
}

const NAME: &str = "chat_template";

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME.to_string(), source.to_string())
            .map_err(|e| format_error(&e))?;
        Ok(Self { env })
    }

    /// Renders `messages`. `special_tokens` are (name, text) pairs such as
    /// `("bos_token", "<|begin_of_text|>")`; `extra` holds additional template variables
    /// (transformers' `**kwargs`), which override the defaults.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        special_tokens: &[(&str, &str)],
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        let mut ctx = serde_json::Map::new();
        for (k, v) in special_tokens {
            ctx.insert(
                (*k).to_string(),
                serde_json::Value::String((*v).to_string()),
            );
        }
        ctx.insert(
            "messages".into(),
            serde_json::to_value(messages).map_err(|e| e.to_string())?,
        );
        ctx.insert("tools".into(), serde_json::Value::Null);
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            serde_json::Value::Bool(add_generation_prompt),
        );
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        let tmpl = self.env.get_template(NAME).map_err(|e| format_error(&e))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| format_error(&e))
    }
}

/// minijinja's `Display` gives the kind and message; the line number is in the detail.
fn format_error(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("{e} (template line {line})"),
        None => e.to_string(),
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`: the current UTC time through a C `strftime` subset (the
/// specifiers chat templates use: Llama 3.2 calls `strftime_now("%d %b %Y")`).
fn strftime_now(fmt: String) -> Result<String, Error> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31): Howard Hinnant's
/// `civil_from_days` algorithm (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn strftime(fmt: &str, unix_secs: i64) -> Result<String, Error> {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[m as usize - 1] + d + u32::from(is_leap && m > 2);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let month = MONTHS[m as usize - 1];
        let wd = WEEKDAYS[weekday];
        match spec {
            'Y' => out.push_str(&y.to_string()),
            'y' => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            'm' => out.push_str(&format!("{m:02}")),
            'd' => out.push_str(&format!("{d:02}")),
            'e' => out.push_str(&format!("{d:>2}")),
            'B' => out.push_str(month),
            'b' | 'h' => out.push_str(&month[..3]),
            'A' => out.push_str(wd),
            'a' => out.push_str(&wd[..3]),
            'j' => out.push_str(&format!("{yday:03}")),
            'H' => out.push_str(&format!("{:02}", sod / 3600)),
            'M' => out.push_str(&format!("{:02}", sod / 60 % 60)),
            'S' => out.push_str(&format!("{:02}", sod % 60)),
            'F' => out.push_str(&format!("{y}-{m:02}-{d:02}")),
            '%' => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported format specifier %{other}"),
                ))
            }
        }
    }
    Ok(out)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`. Python's separators differ from
/// serde_json's compact form (`", "` and `": "` without indent, `","` with it), and
/// minijinja's own `tojson` HTML-escapes `<`/`>`/`'`, which transformers does not.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else {
                let n = i64::try_from(v)?;
                Some(" ".repeat(n.max(0) as usize))
            }
        }
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let a = v.get_item(&Value::from(0))?;
            let b = v.get_item(&Value::from(1))?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(out: &mut String, v: &Value, o: &JsonOpts, depth: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                if v.as_i64().is_some() {
                    out.push_str(&i.to_string());
                    return Ok(());
                }
            }
            let f = f64::try_from(v.clone())?;
            out.push_str(&python_float_repr(f));
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), o, depth, |out, i| {
                write_json(out, &items[i], o, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            write_container(out, '{', '}', keys.len(), o, depth, |out, i| {
                let k = &keys[i];
                match k.as_str() {
                    Some(s) => write_json_str(out, s),
                    None => write_json_str(out, &k.to_string()),
                }
                out.push_str(&o.key_sep);
                write_json(out, &v.get_item(k)?, o, depth + 1)
            })?;
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a value of kind {}", v.kind()),
            ))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    n: usize,
    o: &JsonOpts,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A JSON string as Python's `json.dumps(.., ensure_ascii=False)` writes it.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` for the common cases (`1.0`, `0.5`, `1e-05`, `1e+20`).
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    format!("{f:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[ChatMessage]) -> Result<String, String> {
        ChatTemplate::new(src)?.render(msgs, true, &[], &serde_json::Map::new())
    }

    #[test]
    fn trim_and_lstrip_blocks_like_jinja2() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}\n";
        let out = render(src, &[ChatMessage::user("a"), ChatMessage::user("b")]).unwrap();
        assert_eq!(out, "[a]\n[b]\n");
    }

    #[test]
    fn python_string_methods_work() {
        let src = "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith('  x') }}|{{ messages[0].content.split('y')[-1] }}";
        let out = render(src, &[ChatMessage::user("  xay b ")]).unwrap();
        assert_eq!(out, "xay b|True| b ");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let err = render("{{ raise_exception('only user turns') }}", &[]).unwrap_err();
        assert!(err.contains("only user turns"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = ChatTemplate::new("ok\n{% if %}").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let src = "{{ x | tojson }}\n{{ x | tojson(indent=2) }}";
        let t = ChatTemplate::new(src).unwrap();
        let mut extra = serde_json::Map::new();
        // Keys already sorted, so the order is the same whether or not serde_json keeps
        // insertion order.
        extra.insert(
            "x".into(),
            serde_json::json!({"b": [1, 2.5, true, null], "e": {}, "name": "f<>", "é": "a\"\n"}),
        );
        let out = t.render(&[], false, &[], &extra).unwrap();
        // Written out from Python: json.dumps(x, ensure_ascii=False) and with indent=2.
        let want = concat!(
            "{\"b\": [1, 2.5, true, null], \"e\": {}, \"name\": \"f<>\", \"é\": \"a\\\"\\n\"}\n",
            "{\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"e\": {},\n",
            "  \"name\": \"f<>\",\n  \"é\": \"a\\\"\\n\"\n}"
        );
        assert_eq!(out, want);
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 00:00:00 UTC was a Friday, day 208 of a leap year.
        let t = 1_721_952_000;
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %j %F", t).unwrap(),
            "Friday July 208 2024-07-26"
        );
        assert_eq!(strftime("%H:%M:%S %%", t + 3723).unwrap(), "01:02:03 %");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
        assert!(strftime("%Q", t).is_err());
    }

    #[test]
    fn strftime_now_renders_the_current_year() {
        let out = render("{{ strftime_now('%Y') }}", &[]).unwrap();
        let year: i64 = out.parse().unwrap();
        assert!((2024..3000).contains(&year), "{out}");
    }

    #[test]
    fn float_repr_like_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(1e20), "1e+20");
    }
}
