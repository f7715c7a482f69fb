//! String-level normalisation of an extracted answer before parsing: math delimiters, `\left`/
//! `\right`, spacing commands, `\dfrac`/`\tfrac`, thousands separators, `\text{}` and units,
//! currency, degrees, base subscripts and percent words. The list follows the normalisation
//! steps Math-Verify documents (`latex2sympy2_extended` `NormalizationConfig`: units, malformed
//! operators, nits, boxed, equations) and the MATH dataset's answer conventions.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// Unit and counting words dropped after a number (`5 \text{ cm}`, `864 inches^2`).
const UNITS: &[&str] = &[
    "cm",
    "mm",
    "km",
    "m",
    "in",
    "inch",
    "inches",
    "ft",
    "foot",
    "feet",
    "yd",
    "yard",
    "yards",
    "mile",
    "miles",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "centimetre",
    "centimetres",
    "kilometer",
    "kilometers",
    "millimeter",
    "millimeters",
    "unit",
    "units",
    "sq",
    "square",
    "cubic",
    "degree",
    "degrees",
    "deg",
    "cent",
    "cents",
    "dollar",
    "dollars",
    "hour",
    "hours",
    "hr",
    "hrs",
    "minute",
    "minutes",
    "min",
    "mins",
    "second",
    "seconds",
    "sec",
    "s",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "mph",
    "kg",
    "g",
    "gram",
    "grams",
    "lb",
    "lbs",
    "pound",
    "pounds",
    "ounce",
    "ounces",
    "oz",
    "liter",
    "liters",
    "litre",
    "litres",
    "ml",
    "gallon",
    "gallons",
    "people",
    "students",
    "ways",
    "points",
    "marbles",
    "apples",
    "radians",
    "rad",
    "calories",
    "coins",
    "pages",
    "books",
    "boxes",
    "cups",
    "steps",
    "games",
    "miles/hour",
    "km/h",
    "per",
    "each",
    "is",
];

static THOUSANDS_SPACED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d)(?:\{,\}|,\\!|\\,|\\!|\\ |,\s*\\!)\s*(\d\d\d)").unwrap());
static THOUSANDS_PLAIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$").unwrap());
static BASE_SUBSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^A-Za-z_\\\d])(\d+)_(?:\{(\d{1,2})\}|(\d))").unwrap());
static UNIT_POWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x01\s*(?:\^\s*\{?\s*[23]\s*\}?)?").unwrap());
static TRAILING_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\d}]\s*\\text\{[A-Za-z][A-Za-z .]*\}\s*$").unwrap());
static PERCENT_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s*\b(?:percent|percentage|pct)\s*$").unwrap());
static WORD_CONNECTOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s+(?:or|and)\s+").unwrap());

/// Commands replaced by a space: spacing, sizing and style commands with no meaning.
const SPACE_COMMANDS: &[&str] = &[
    ",",
    "!",
    ";",
    ":",
    " ",
    "quad",
    "qquad",
    "displaystyle",
    "textstyle",
    "big",
    "Big",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "bigg",
    "Bigg",
    "biggl",
    "biggr",
    "Biggl",
    "Biggr",
    "limits",
    "nolimits",
    "scriptstyle",
    "hfill",
    "hspace",
    "vspace",
    "nonumber",
    "notag",
    "$",
    "phantom",
];

/// Rewrites `\name` commands (a backslash and letters, or a backslash and one other char).
/// `\left`/`\right` are dropped with a following `.`; others go through `map`.
fn rewrite_commands(s: &str, map: impl Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let rest = &s[i + 1..];
        let name_len = rest
            .char_indices()
            .take_while(|(_, ch)| ch.is_ascii_alphabetic())
            .last()
            .map(|(j, ch)| j + ch.len_utf8())
            .unwrap_or(0);
        let name_len = if name_len == 0 {
            rest.chars().next().map(char::len_utf8).unwrap_or(0)
        } else {
            name_len
        };
        let name = &rest[..name_len];
        for _ in 0..name.chars().count() {
            chars.next();
        }
        if name == "left" || name == "right" {
            if let Some(&(_, '.')) = chars.peek() {
                chars.next();
            }
            out.push(' ');
            continue;
        }
        match map(name) {
            Some(rep) => out.push_str(rep),
            None => {
                out.push('\\');
                out.push_str(name);
            }
        }
    }
    out
}

/// Replaces every `\cmd{content}` (balanced) by `f(content)`.
fn rewrite_braced(s: &str, cmd: &str, f: &impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find(cmd) {
        let after = &rest[p + cmd.len()..];
        // `\text` must not match `\textbf`: the command must end here.
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(&rest[..p + cmd.len()]);
            rest = after;
            continue;
        }
        let trimmed = after.trim_start();
        let skipped = after.len() - trimmed.len();
        if !trimmed.starts_with('{') {
            out.push_str(&rest[..p + cmd.len()]);
            rest = after;
            continue;
        }
        match crate::extract::matching_brace(trimmed.as_bytes(), 0) {
            Some(end) => {
                out.push_str(&rest[..p]);
                out.push_str(&f(&trimmed[1..end]));
                rest = &after[skipped + end + 1..];
            }
            None => {
                out.push_str(&rest[..p + cmd.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn is_unit_word(w: &str) -> bool {
    let w = w
        .trim_end_matches("^2")
        .trim_end_matches("^3")
        .trim_end_matches("^{2}")
        .trim_end_matches("^{3}")
        .trim_end_matches('.');
    let lw = w.to_ascii_lowercase();
    !lw.is_empty() && UNITS.contains(&lw.as_str())
}

fn is_unit_phrase(s: &str) -> bool {
    let words: Vec<&str> = s.split_whitespace().collect();
    !words.is_empty() && words.iter().all(|w| is_unit_word(w))
}

/// Drops unit words that follow a number: `5 cm`, `864 inches^2`, `3 square feet`.
fn strip_trailing_units(s: &str) -> String {
    let t = s.trim_end();
    // The longest run of unit words at the end, then only if a number precedes it.
    let mut cut = t.len();
    let mut rest = t;
    while let Some(p) = rest.rfind(|c: char| c.is_whitespace()) {
        if !is_unit_word(rest[p..].trim()) {
            break;
        }
        cut = p;
        rest = rest[..p].trim_end();
    }
    let head = t[..cut].trim_end();
    if cut < t.len() && head.ends_with(|c: char| c.is_ascii_digit() || c == '}' || c == ')') {
        return head.to_string();
    }
    // `15cm`: a unit glued to the number.
    let alpha_start = t
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphabetic() || matches!(c, '^' | '2' | '3'))
        .last()
        .map(|(i, _)| i);
    if let Some(a) = alpha_start {
        let (num, unit) = t.split_at(a);
        if unit.len() >= 2
            && !num.contains(|c: char| c.is_whitespace())
            && num.ends_with(|c: char| c.is_ascii_digit())
            && unit.starts_with(|c: char| c.is_ascii_alphabetic())
            && is_unit_word(unit)
        {
            return num.to_string();
        }
    }
    t.to_string()
}

/// LaTeX stored with every backslash doubled, as some datasets and JSON round trips leave it
/// (`\\frac{1}{5}`, `\\boxed{..}`). When every backslash run has even length and one of them is
/// `\\` before a command name, all runs are halved (so a doubled `\\\\` row break stays a row
/// break); otherwise a `\\` directly before a letter is read as one backslash, except in matrix
/// and array text, where `\\` is the row separator (the rule Math-Verify's normaliser applies).
/// Linear; borrows when nothing changes.
pub(crate) fn undouble_backslashes(s: &str) -> Cow<'_, str> {
    if !s.contains("\\\\") {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let (mut doubled_cmd, mut all_even) = (false, true);
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let st = i;
        while i < b.len() && b[i] == b'\\' {
            i += 1;
        }
        let run = i - st;
        doubled_cmd |= run == 2 && b.get(i).is_some_and(u8::is_ascii_alphabetic);
        all_even &= run % 2 == 0;
    }
    if !doubled_cmd {
        return Cow::Borrowed(s);
    }
    if !all_even && (s.contains("matrix") || s.contains("array")) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('\\') {
        out.push_str(&rest[..p]);
        let run = rest[p..].bytes().take_while(|&c| c == b'\\').count();
        let after = &rest[p + run..];
        let keep = if all_even {
            run / 2
        } else if run == 2 && after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            1
        } else {
            run
        };
        out.extend(std::iter::repeat_n('\\', keep));
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `x != 3` (ASCII not-equal) as `x \\ne 3`, when the `!` follows a space or a letter; after a
/// digit or a bracket it stays a factorial (`5!=120`, `(n+1)! = 24`).
fn ascii_not_equal(s: &str) -> Cow<'_, str> {
    if !s.contains("!=") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(p) = rest.find("!=") {
        let before = &rest[..p];
        let prev = before.chars().next_back();
        let ne = match prev {
            None => false,
            Some(c) => c.is_whitespace() || c.is_ascii_alphabetic(),
        };
        out.push_str(before);
        out.push_str(if ne { " \\ne " } else { "!=" });
        rest = &rest[p + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decimal commas in a plain-text answer (`1,22`, `1000,99`, `2,74 $`): a comma between digits
/// is a decimal point unless the number is written with thousands separators (`1,222`,
/// `12,345,678`), as Math-Verify's plain-number pattern reads it. The caller applies this only
/// where a list cannot be meant (a plain-text answer to a gold that is not a list); text with
/// brackets is left alone.
pub(crate) fn decimal_commas(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    // Inside brackets a comma separates coordinates or interval ends: `(1,2)`.
    if s.contains(['(', ')', '[', ']', '{', '}'])
        || !b
            .windows(3)
            .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit())
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let st = i;
        let mut groups = vec![];
        let mut g = i;
        loop {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(i - g);
            if i + 1 < b.len() && b[i] == b',' && b[i + 1].is_ascii_digit() {
                i += 1;
                g = i;
            } else {
                break;
            }
        }
        let thousands = groups.len() > 1
            && groups[0] <= 3
            && b[st] != b'0'
            && groups[1..].iter().all(|&n| n == 3);
        if groups.len() == 2 && !thousands {
            let comma = st + groups[0];
            out.push_str(&s[last..comma]);
            out.push('.');
            last = comma + 1;
        }
    }
    if last == 0 {
        return Cow::Borrowed(s);
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Strips outer math delimiters and a trailing full stop, repeatedly.
fn strip_outer(s: &str) -> &str {
    let mut t = s.trim();
    loop {
        let before = t;
        for (a, b) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
            if t.len() >= a.len() + b.len() && t.starts_with(a) && t.ends_with(b) {
                t = t[a.len()..t.len() - b.len()].trim();
            }
        }
        t = t.trim_end_matches(['.', ';']).trim();
        if t == before {
            return t;
        }
    }
}

/// Normalises one answer string; the result is what the parser reads.
pub(crate) fn normalize(input: &str) -> String {
    // Dollars left inside (`8$,$4` in OlympiadBench, `\$5`) are not math delimiters any more.
    let mut s = strip_outer(input).replace("\\$", " ").replace('$', " ");
    s = ascii_not_equal(&s).into_owned();
    for (from, to) in [
        ("−", "-"),
        ("–", "-"),
        ("×", "\\times "),
        ("·", "\\cdot "),
        ("÷", "\\div "),
        ("≤", "\\le "),
        ("≥", "\\ge "),
        ("≠", "\\ne "),
        ("∞", "\\infty "),
        ("π", "\\pi "),
        ("√", "\\sqrt "),
        ("∪", "\\cup "),
        ("±", "\\pm "),
        ("≈", "\\approx "),
        ("°", ""),
        ("^\\circ", ""),
        ("^{\\circ}", ""),
        ("^{\\circ }", ""),
        ("^\\degree", ""),
        ("\\degree", ""),
        ("\\circ", ""),
        ("\\%", "%"),
    ] {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s = rewrite_braced(&s, "\\boxed", &|c| c.to_string());
    for cmd in [
        "\\text",
        "\\textbf",
        "\\mbox",
        "\\textrm",
        "\\textit",
        "\\mathrm",
        "\\mathbf",
        "\\emph",
        "\\textnormal",
        "\\mathit",
        "\\hbox",
    ] {
        if s.contains(cmd) {
            s = rewrite_braced(&s, cmd, &|c| {
                let t = c.trim().to_ascii_lowercase();
                let t = t.trim_matches(|ch: char| ch == ',' || ch.is_whitespace());
                if matches!(t, "or" | "and" | "") {
                    ", ".to_string()
                } else if matches!(t, "percent" | "percentage" | "pct" | "%" | "\\%") {
                    "%".to_string()
                } else if is_unit_phrase(c) {
                    // Marked so that a power after the unit (`\mbox{ inches}^2`) goes too.
                    " \u{1}".to_string()
                } else if c.trim().starts_with(|ch: char| ch.is_ascii_alphabetic())
                    && c.trim().chars().all(|ch| ch.is_ascii_alphanumeric())
                    && c.trim().len() > 1
                {
                    // A word: keep it one token so it is not read as a product of letters.
                    format!(" \\text{{{}}} ", c.trim())
                } else {
                    format!(" {c} ")
                }
            });
        }
    }
    // Thousands separators inside a number (`1{,}000`, `10,\!080`, `1\,000`), before the
    // spacing commands they use are blanked out below.
    let mut prev = String::new();
    while prev != s {
        prev = s.clone();
        s = THOUSANDS_SPACED.replace_all(&s, "$1$2").into_owned();
    }
    if s.contains('\u{1}') {
        s = UNIT_POWER.replace_all(&s, "").into_owned();
    }
    s = rewrite_commands(&s, |name| match name {
        "dfrac" | "tfrac" | "cfrac" => Some("\\frac"),
        "dbinom" | "tbinom" => Some("\\binom"),
        n if SPACE_COMMANDS.contains(&n) => Some(" "),
        _ => None,
    });
    s = s.replace("{,}", ",");
    s = strip_trailing_units(&s);
    if let Some(m) = PERCENT_WORD.find(&s) {
        // `28 percent`, `28 pct`, `28 percentage` (Math-Verify's percent synonyms).
        s = format!("{}%", &s[..m.start()]);
    }
    s = WORD_CONNECTOR.replace_all(&s, ", ").into_owned();
    s = BASE_SUBSCRIPT.replace_all(&s, "$1$2").into_owned();
    if let Some(m) = TRAILING_WORD.find(&s) {
        // `21 \text{dogs}`, `2 \text{ euros}`: a word after a number is a unit.
        s.truncate(m.start() + 1);
    }
    let mut t = s
        .trim()
        .trim_start_matches('=')
        .trim_end_matches([',', ';'])
        .trim();
    if let Some(r) = t.strip_prefix("\\approx") {
        // `\approx 8.24`: an approximate answer on its own is its value.
        t = r.trim_start();
    }
    t = strip_outer(t);
    // `32,349` is a number, `32, 349` a list of two (as Math-Verify reads them).
    if THOUSANDS_PLAIN.is_match(t) {
        return t.replace(',', "");
    }
    t.to_string()
}

/// Key for comparing answers as plain text: lower case, no markup, no spaces.
pub(crate) fn text_key(s: &str) -> String {
    let mut t = s.to_lowercase();
    for w in ["\\text", "\\mathrm", "\\textbf", "\\mbox"] {
        t = t.replace(w, "");
    }
    t.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '{' | '}' | '$' | '~'))
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

/// Whether a normalised answer is a word answer ("Evelyn", "even", "ellipse") rather than math.
pub(crate) fn is_text_answer(norm: &str) -> bool {
    let t = norm.replace("\\text", "");
    let t: String = t.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let t = t.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '\'')
    {
        return false;
    }
    const MATH_WORDS: &[&str] = &[
        "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi", "sqrt", "infty", "inf",
        "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    ];
    t.split([' ', '-'])
        .any(|w| w.chars().count() >= 2 && !MATH_WORDS.contains(&w.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_and_spacing() {
        assert_eq!(normalize("$\\frac{1}{2}$."), "\\frac{1}{2}");
        assert_eq!(
            normalize("\\left( 3, \\frac{\\pi}{2} \\right)").replace(' ', ""),
            "(3,\\frac{\\pi}{2})"
        );
        assert_eq!(normalize("\\dfrac{17}{50}"), "\\frac{17}{50}");
        assert_eq!(normalize("\\left.x\\right|").replace(' ', ""), "x|");
        assert_eq!(normalize("\\boxed{5}"), "5");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(normalize("10,\\!080"), "10080");
        assert_eq!(normalize("11,\\! 111,\\! 111,\\! 100"), "11111111100");
        assert_eq!(normalize("1{,}000"), "1000");
        assert_eq!(normalize("1\\,000\\,000"), "1000000");
        assert_eq!(normalize("58,500"), "58500");
        assert_eq!(normalize("\\$32,\\!348"), "32348");
        // Not a thousands pattern: a list.
        assert_eq!(normalize("1,-2"), "1,-2");
        assert_eq!(normalize("1,25"), "1,25");
    }

    #[test]
    fn units_currency_degrees() {
        assert_eq!(normalize("864 \\mbox{ inches}^2").trim(), "864");
        assert_eq!(normalize("5.4 \\text{ cents}").trim(), "5.4");
        assert_eq!(
            normalize("\\frac{270}7\\text{ degrees}").trim(),
            "\\frac{270}7"
        );
        assert_eq!(normalize("90^\\circ"), "90");
        assert_eq!(normalize("90°"), "90");
        assert_eq!(normalize("\\$18.90"), "18.90");
        assert_eq!(normalize("15cm"), "15");
        assert_eq!(normalize("12 square feet"), "12");
        assert_eq!(normalize("2k"), "2k");
    }

    #[test]
    fn subscripts_percent_connectors() {
        assert_eq!(normalize("52_8"), "52");
        assert_eq!(normalize("4210_{5}"), "4210");
        assert_eq!(normalize("x_1"), "x_1");
        assert_eq!(normalize("50\\%"), "50%");
        assert_eq!(normalize("50 percent"), "50%");
        assert_eq!(normalize("1 \\text{ or } 2").replace(' ', ""), "1,2");
        assert_eq!(normalize("3 and 4"), "3, 4");
        assert_eq!(normalize("6, 8\\text{, and }10").replace(' ', ""), "6,8,10");
        assert_eq!(normalize("21\\text{ dogs}"), "21");
        assert_eq!(normalize("1.85\\ \\text{USD}"), "1.85");
        assert_eq!(normalize("\\approx 8.24"), "8.24");
        assert_eq!(normalize("8$,$4").replace(' ', ""), "8,4");
    }

    #[test]
    fn doubled_backslashes() {
        assert_eq!(undouble_backslashes("\\\\frac{1}{5}"), "\\frac{1}{5}");
        assert_eq!(
            undouble_backslashes("\\boxed{\\\\frac{1}{5}}"),
            "\\boxed{\\frac{1}{5}}"
        );
        // Fully doubled text: every run halved, so a doubled row break stays a row break.
        assert_eq!(
            undouble_backslashes("\\\\begin{pmatrix} 1 \\\\\\\\ 2 \\\\end{pmatrix}"),
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"
        );
        // Ordinary LaTeX is untouched: row breaks before a space, three backslashes, matrices.
        for s in [
            "a \\\\ b",
            "a \\\\\\end{align}",
            "\\frac{1}{2}",
            "\\begin{pmatrix} 1 \\\\x \\end{pmatrix}",
        ] {
            assert!(matches!(undouble_backslashes(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn decimal_commas_and_not_equal() {
        assert_eq!(decimal_commas("1,22"), "1.22");
        assert_eq!(decimal_commas("1000,99"), "1000.99");
        assert_eq!(decimal_commas("0,111"), "0.111");
        assert_eq!(decimal_commas("2,74 $"), "2.74 $");
        // Thousands separators and lists stay.
        assert_eq!(decimal_commas("1,222"), "1,222");
        assert_eq!(decimal_commas("12,345,678"), "12,345,678");
        assert_eq!(decimal_commas("1, 22"), "1, 22");
        assert_eq!(decimal_commas("1,2,3"), "1,2,3");
        assert_eq!(decimal_commas("(1,2)"), "(1,2)");
        assert_eq!(ascii_not_equal("x != 3"), "x  \\ne  3");
        assert_eq!(ascii_not_equal("x!=3"), "x \\ne 3");
        assert_eq!(ascii_not_equal("5!=120"), "5!=120");
        assert_eq!(ascii_not_equal("(n+1)!=24"), "(n+1)!=24");
    }

    #[test]
    fn percent_words_and_approximations() {
        assert_eq!(normalize("28 pct"), "28%");
        assert_eq!(normalize("28 percentage"), "28%");
        assert_eq!(normalize("28\\text{ pct}").replace(' ', ""), "28%");
        assert_eq!(normalize("x \\approx 3"), "x \\approx 3");
        assert_eq!(normalize("≈ 3"), "3");
        // `32, 349` is a list, `32,349` a number.
        assert_eq!(normalize("32,349"), "32349");
        assert_eq!(normalize("32, 349"), "32, 349");
    }

    #[test]
    fn text_answers() {
        assert!(is_text_answer(&normalize("\\text{Evelyn}")));
        assert!(is_text_answer(&normalize("east")));
        assert!(!is_text_answer(&normalize("p - q")));
        assert!(!is_text_answer(&normalize("\\cot x")));
        assert!(!is_text_answer(&normalize("2x")));
        assert_eq!(text_key("\\text{Even}."), "even");
    }
}
