//! Finding the final answer in a model response. Priority, after Math-Verify's extraction
//! regexes (`parser.py`): the last `\boxed{}`/`\fbox{}` (several adjacent ones joined by `,`,
//! `and`, `or` are merged into one list), else the text after the last "final answer is" /
//! "answer is" / "answer:" (in a prose sentence, "The largest $n$ is 34.", its first math span
//! or first number, whichever ends further right, past lone variable names), else the last
//! LaTeX span (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`, with the spans joined to it by `,` /
//! `and` / `or` as one list), else the whole response when it is short and bare, else the last
//! plain number. A percent sign or word after the answer (`\boxed{28}$ pct`) is reported with
//! it, and so is whether the answer is plain text (where `2,74` can be a decimal comma). All
//! scans are linear in the response length.

/// Where the answer was found; reported in the verdict reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Boxed,
    FinalAnswer,
    LatexSpan,
    Whole,
    TrailingNumber,
}

/// For every `{` the index of its matching `}` (`u32::MAX` when unmatched), in one pass with a
/// stack so that many unbalanced `\boxed{` cannot make extraction quadratic.
fn brace_table(b: &[u8]) -> Vec<u32> {
    let mut table = vec![u32::MAX; b.len()];
    let mut stack: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'{' => stack.push(i as u32),
            b'}' => {
                if let Some(open) = stack.pop() {
                    table[open as usize] = i as u32;
                }
            }
            _ => {}
        }
        i += 1;
    }
    table
}

/// Byte ranges `(start_of_command, content_start, content_end)` of every `\boxed{..}` and
/// `\fbox{..}` with balanced braces, in order.
fn boxed_spans(s: &str) -> Vec<(usize, usize, usize)> {
    let b = s.as_bytes();
    if !s.contains("\\boxed") && !s.contains("\\fbox") {
        return Vec::new();
    }
    let table = brace_table(b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let rest = &s[i..];
            let cmd_len = if rest.starts_with("\\boxed") {
                6
            } else if rest.starts_with("\\fbox") {
                5
            } else {
                0
            };
            if cmd_len > 0 {
                let mut j = i + cmd_len;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                if j < b.len() && b[j] == b'{' {
                    if table[j] != u32::MAX {
                        let end = table[j] as usize;
                        out.push((i, j + 1, end));
                        // Nested boxes inside this one are not separate answers.
                        i = end + 1;
                        continue;
                    }
                } else if cmd_len == 6 && j > i + cmd_len && j < b.len() {
                    // `\boxed 5`: TeX takes one token as the argument.
                    let mut k = j;
                    while k < b.len() && b[k].is_ascii_alphanumeric() {
                        k += 1;
                    }
                    if k > j {
                        out.push((i, j, k));
                        i = k;
                        continue;
                    }
                }
            }
            // Skip the escaped character so `\{` and `\$` are never seen as syntax.
            i += 2;
            continue;
        }
        i += 1;
    }
    out
}

/// Index of the `}` matching the `{` at `open`, skipping escaped braces.
pub(crate) fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether the text between two boxed answers only joins them ("," / "and" / "or").
fn is_connector(gap: &str) -> bool {
    if gap.len() > 64 {
        return false;
    }
    let mut g = gap.to_ascii_lowercase();
    for junk in [
        "\\text{", "\\mbox{", "}", "$", "\\]", "\\[", "\\(", "\\)", "\\quad", "\\,",
    ] {
        g = g.replace(junk, " ");
    }
    let g = g.trim();
    g.len() <= 12
        && matches!(
            g,
            "" | "," | "and" | ", and" | ",and" | "or" | ", or" | ",or" | ";"
        )
}

/// Whether the text between two math spans joins them into one answer the way Math-Verify's
/// pattern does: only `,`, `and`, `or`, `,and`, `,or` between the delimiters (`$1$ and $2$`,
/// `$1$, $2$`), not `, and` or prose.
fn joins_spans(gap: &str) -> bool {
    let mut g = gap.trim();
    for d in ["$$", "$", "\\)", "\\]"] {
        g = g.strip_prefix(d).unwrap_or(g);
    }
    for d in ["$$", "$", "\\(", "\\["] {
        g = g.strip_suffix(d).unwrap_or(g);
    }
    matches!(g.trim(), "," | "and" | "or" | ",and" | ",or")
}

/// An extracted answer: its text, where it was found, whether it is plain text (outside any
/// math delimiters), where a comma can be a decimal comma (`2,74 $`) as Math-Verify's plain-number
/// pattern reads it, and whether a percent sign or word follows it outside the box or span
/// (`\boxed{28}$ pct`, `28 percent`): the answer is then a percentage, but its text without the
/// sign still matches a gold written the same way (Math-Verify's string fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub text: String,
    pub source: Source,
    pub plain: bool,
    pub percent: bool,
}

impl Extracted {
    fn new((text, percent): (String, bool), source: Source, plain: bool) -> Self {
        Self {
            text,
            source,
            plain,
            percent,
        }
    }
}

/// Whether `rest` (the text right after an answer) starts with a percent sign or word, past
/// closing math delimiters: `\boxed{28}$ pct`, `$28$ percent`, `$28$\%`.
fn percent_follows(rest: &str) -> bool {
    let mut t = rest;
    loop {
        let before = t.len();
        t = t.trim_start();
        for close in ["$", "\\)", "\\]"] {
            t = t.strip_prefix(close).unwrap_or(t);
        }
        if t.len() == before {
            break;
        }
    }
    if t.starts_with('%') || t.starts_with("\\%") {
        return true;
    }
    let word: String = t
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(word.as_str(), "percent" | "percentage" | "pct")
}

/// An answer with whether a percent sign or word follows it (unless it ends with one itself).
fn with_percent(text: String, rest: &str) -> (String, bool) {
    let percent = percent_follows(rest) && !text.trim_end().ends_with('%');
    (text, percent)
}

/// A plain-text answer with a trailing percent sign or word split off: `28 pct` → (`28`, true).
fn split_percent(text: &str) -> (String, bool) {
    let t = text.trim_end();
    if let Some(x) = t.strip_suffix("\\%").or_else(|| t.strip_suffix('%')) {
        return (x.trim_end().to_string(), true);
    }
    let word_start = t
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphabetic())
        .last()
        .map_or(t.len(), |(i, _)| i);
    let (head, word) = t.split_at(word_start);
    let lw = word.to_ascii_lowercase();
    if matches!(lw.as_str(), "percent" | "percentage" | "pct")
        && head.ends_with(|c: char| c.is_ascii_digit() || c.is_whitespace())
        && head.trim().ends_with(|c: char| c.is_ascii_digit())
    {
        return (head.trim_end().to_string(), true);
    }
    (t.to_string(), false)
}

/// The answer found in `response`, with where it came from.
pub(crate) fn extract(response: &str) -> Option<Extracted> {
    let spans = boxed_spans(response);
    if let Some(&(start, cs, ce)) = spans.last() {
        let mut parts = vec![&response[cs..ce]];
        let mut prev_start = start;
        for &(s2, c2, e2) in spans.iter().rev().skip(1) {
            if e2 < prev_start && is_connector(&response[e2 + 1..prev_start]) {
                parts.push(&response[c2..e2]);
                prev_start = s2;
            } else {
                break;
            }
        }
        parts.reverse();
        let text = parts.join(", ").trim().to_string();
        let after = if response.as_bytes().get(ce) == Some(&b'}') {
            ce + 1
        } else {
            ce
        };
        let text = with_percent(text, &response[after..]);
        return Some(Extracted::new(text, Source::Boxed, false));
    }
    if let Some((t, plain)) = after_final_answer(response) {
        return Some(Extracted::new(t, Source::FinalAnswer, plain));
    }
    if let Some(t) = last_latex_span(response) {
        return Some(Extracted::new(t, Source::LatexSpan, false));
    }
    let trimmed = response.trim();
    if !trimmed.is_empty() && trimmed.len() <= 200 && looks_like_bare_answer(trimmed) {
        // The percent sign of a bare answer is part of it (`0.15\%` is not 0.15).
        return Some(Extracted::new(
            (trimmed.to_string(), false),
            Source::Whole,
            true,
        ));
    }
    trailing_number(response)
}

/// The last plain number of a response, as a fallback answer (used when the whole short
/// response was taken as the answer and does not parse: `Soucis : 2,74 $ a..`).
pub(crate) fn trailing_number(response: &str) -> Option<Extracted> {
    let (t, end) = last_number(response)?;
    let ans = with_percent(t, &response[end..]);
    Some(Extracted::new(ans, Source::TrailingNumber, true))
}

/// A bare answer has no sentence structure: few words, no sentence-ending punctuation inside,
/// and no word next to a number other than a unit (`5 apples` is bare, `Soucis : 2,74` not).
fn looks_like_bare_answer(s: &str) -> bool {
    const MATH_WORDS: &[&str] = &[
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "log",
        "ln",
        "exp",
        "sqrt",
        "pi",
        "inf",
        "infty",
        "arcsin",
        "arccos",
        "arctan",
        "and",
        "or",
        "percent",
        "percentage",
        "pct",
    ];
    let words: Vec<&str> = s
        .split_whitespace()
        .filter(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let wordy_number = s.contains(|c: char| c.is_ascii_digit())
        && words.iter().any(|w| {
            !MATH_WORDS.contains(&w.to_ascii_lowercase().as_str())
                && !crate::normalize::is_unit_word(w)
        });
    words.len() <= 1 && !wordy_number && !s.contains(". ") && !s.contains('\n')
}

/// Whether a gold answer is written as a solution or a sentence rather than as a bare answer:
/// several words and a full stop or an answer phrase (`... Hence the answer is 42.`).
pub(crate) fn looks_like_prose(s: &str) -> bool {
    let words = s
        .split_whitespace()
        .filter(|w| {
            let w = w.trim_end_matches(['.', ',', ':', ';']);
            w.len() > 1 && w.chars().all(|c| c.is_ascii_alphabetic())
        })
        .count();
    let t = s.trim_end();
    words >= 4
        && (t.ends_with('.') || t.ends_with(".$") || s.to_ascii_lowercase().contains("answer"))
}

/// Text after the last "final answer is" / "answer is" / "answer:" up to the end of the line
/// (or the next non-empty line), and whether that answer is plain text.
fn after_final_answer(response: &str) -> Option<((String, bool), bool)> {
    let lower = response.to_ascii_lowercase();
    let mut best: Option<usize> = None;
    for key in ["answer is", "answer:", "answer is:"] {
        if let Some(p) = lower.rfind(key) {
            let end = p + key.len();
            if best.is_none_or(|b| end > b) {
                best = Some(end);
            }
        }
    }
    let start = best?;
    let rest = &response[start..];
    let rest = rest.trim_start_matches([':', ' ', '\t', '*']);
    let line = rest.split('\n').next().unwrap_or("");
    if line.trim().is_empty() {
        // "The final answer is:\n\n$$ 5 $$": take the next non-empty line.
        let next = rest.lines().map(str::trim).find(|l| !l.is_empty())?;
        return clean_answer_line(next);
    }
    clean_answer_line(line)
}

/// Plain numbers outside math spans, as byte ranges: `34`, `-3.5`, `1,000`, `2,74`, with a
/// following percent sign or word included (`28 pct`). `spans` are sorted and disjoint; one
/// pass over the text.
fn plain_numbers(s: &str, spans: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut next_span = 0;
    let mut i = 0;
    while i < b.len() {
        while next_span < spans.len() && spans[next_span].1 <= i {
            next_span += 1;
        }
        if let Some(&(a, c)) = spans.get(next_span) {
            if i >= a {
                i = c;
                continue;
            }
        }
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Part of a word or an expression (`x2`, `x^2`, `a_1`): not a stand-alone number.
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        let glued = prev.is_ascii_alphanumeric() || matches!(prev, b'^' | b'_' | b'\\' | b'.');
        let mut st = i;
        while i < b.len()
            && (b[i].is_ascii_digit()
                || (matches!(b[i], b'.' | b',')
                    && i + 1 < b.len()
                    && b[i + 1].is_ascii_digit()
                    && b[i - 1].is_ascii_digit()))
        {
            i += 1;
        }
        if glued {
            continue;
        }
        if st > 0 && b[st - 1] == b'-' {
            st -= 1;
        }
        let mut end = i;
        let tail = &s[i..];
        let t = tail.trim_start();
        let ws = tail.len() - t.len();
        if t.starts_with('%') {
            end = i + ws + 1;
        } else if t.starts_with("\\%") {
            end = i + ws + 2;
        } else {
            let word_len = t
                .bytes()
                .take(12)
                .take_while(u8::is_ascii_alphabetic)
                .count();
            let word = t[..word_len].to_ascii_lowercase();
            if matches!(word.as_str(), "percent" | "percentage" | "pct") {
                end = i + ws + word_len;
            }
        }
        out.push((st, end));
    }
    out
}

/// Words of a sentence that make it prose (outside math spans; units and connectors do not
/// count): "The largest $n$ is 34" has three. `spans` are sorted and disjoint.
fn prose_words(s: &str, spans: &[(usize, usize)]) -> usize {
    let words = |gap: &str| {
        gap.split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| {
                let lw = w.to_ascii_lowercase();
                w.len() > 1
                    && !matches!(lw.as_str(), "and" | "or" | "percent" | "percentage" | "pct")
                    && !crate::normalize::is_unit_word(w)
            })
            .count()
    };
    let mut count = 0;
    let mut from = 0;
    for &(a, c) in spans {
        if a > from {
            count += words(&s[from..a]);
        }
        from = from.max(c);
    }
    count + words(&s[from.min(s.len())..])
}

/// A math span that is a lone name (`$n$`, `$k$`, `$x_1$`): in prose it is what the sentence
/// talks about, not the answer ("The largest $n$ is 34").
fn is_lone_name(t: &str) -> bool {
    let t = t.trim();
    let mut cs = t.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic())
        && (t.len() == 1 || (t.as_bytes().get(1) == Some(&b'_') && t.len() <= 6))
}

/// The answer in the line after an answer phrase. A sentence in prose ("The largest $n$ is 34.")
/// gives its first math span or its first number, whichever ends further right, as Math-Verify's
/// anchored patterns do, but a lone variable name (`$n$`) is not taken when there is a number;
/// otherwise the first math span (with spans joined to it by "and"/","), or the sentence itself.
fn clean_answer_line(line: &str) -> Option<((String, bool), bool)> {
    let spans = latex_spans(line);
    // Cut at the end of the sentence: the first ". " outside math spans.
    let mut cut = line.len();
    let mut from = 0;
    let mut k = 0;
    while let Some(p) = line[from..].find(". ") {
        let p = from + p;
        while k < spans.len() && spans[k].1 <= p {
            k += 1;
        }
        if spans.get(k).is_none_or(|&(a, _)| p < a) {
            cut = p;
            break;
        }
        from = spans[k].1;
    }
    let sentence = &line[..cut];
    let spans: Vec<(usize, usize)> = spans
        .into_iter()
        .filter(|&(a, c)| c <= cut && !line[a..c].trim().is_empty())
        .collect();
    let numbers = plain_numbers(sentence, &spans);
    if prose_words(sentence, &spans) >= 2 && (!spans.is_empty() || !numbers.is_empty()) {
        // Candidates: the first math span (past lone names) and the first plain number; the
        // one that ends further right wins.
        let span =
            spans
                .iter()
                .find(|&&(a, c)| !is_lone_name(&line[a..c]))
                .or(if numbers.is_empty() {
                    spans.first()
                } else {
                    None
                });
        let pick = match (span, numbers.first()) {
            (Some(&(_, c)), Some(&(na, nc))) if nc > c => (na, nc, true),
            (Some(&(a, c)), _) => (a, c, false),
            (None, Some(&(na, nc))) => (na, nc, true),
            (None, None) => return None,
        };
        let t = line[pick.0..pick.1].trim();
        let text = if pick.2 {
            split_percent(t)
        } else {
            with_percent(t.to_string(), &line[pick.1..])
        };
        return Some((text, pick.2));
    }
    if let Some(&(a, c)) = spans.first() {
        let mut parts = vec![line[a..c].trim()];
        let mut prev_end = c;
        for &(a2, c2) in spans.iter().skip(1) {
            if !joins_spans(&line[prev_end..a2]) || parts.len() >= 6 {
                break;
            }
            parts.push(line[a2..c2].trim());
            prev_end = c2;
        }
        let text = with_percent(parts.join(", "), &line[prev_end..]);
        return Some((text, false));
    }
    let t = sentence
        .trim()
        .trim_end_matches(['.', ',', ';', '!'])
        .trim();
    let t = t.trim_matches('*').trim();
    (!t.is_empty()).then(|| (split_percent(t), true))
}

/// All complete math spans in order, as content byte ranges. Once a closing delimiter is
/// found missing, later openers of that kind are not searched again (linear time).
fn latex_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut no_close = [false; 4]; // `\)`, `\]`, `$`, `$$`
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && (b[i + 1] == b'(' || b[i + 1] == b'[') => {
                let kind = usize::from(b[i + 1] == b'[');
                let close = if kind == 0 { "\\)" } else { "\\]" };
                match (!no_close[kind]).then(|| s[i + 2..].find(close)).flatten() {
                    Some(p) => {
                        out.push((i + 2, i + 2 + p));
                        i = i + 2 + p + 2;
                    }
                    None => {
                        no_close[kind] = true;
                        i += 2;
                    }
                }
            }
            b'\\' => i += 2,
            b'$' => {
                let double = i + 1 < b.len() && b[i + 1] == b'$';
                let open = if double { 2 } else { 1 };
                let kind = 2 + usize::from(double);
                let mut found = None;
                if !no_close[kind] {
                    let mut j = i + open;
                    while j < b.len() {
                        if b[j] == b'\\' {
                            j += 2;
                            continue;
                        }
                        if b[j] == b'$' {
                            if !double {
                                found = Some((j, 1));
                                break;
                            }
                            if j + 1 < b.len() && b[j + 1] == b'$' {
                                found = Some((j, 2));
                                break;
                            }
                        }
                        j += 1;
                    }
                }
                match found {
                    Some((j, close)) => {
                        if j > i + open {
                            out.push((i + open, j));
                        }
                        i = j + close;
                    }
                    None => {
                        no_close[kind] = true;
                        i += open;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The last math span, with the spans joined to it by "," / "and" / "or" into one answer
/// (`$(3,2)$ and $(1,1)$` is one list), and whether a percent word follows. Like Math-Verify's
/// pattern, a run of joined spans is cut into groups of six from its start, and the group holding
/// the last span is the answer.
fn last_latex_span(s: &str) -> Option<(String, bool)> {
    let spans: Vec<(usize, usize)> = latex_spans(s)
        .into_iter()
        .filter(|&(a, b)| !s[a..b].trim().is_empty())
        .collect();
    let last = spans.len().checked_sub(1)?;
    // A span ending in sentence punctuation (`$c = 3,$ and $d = 11.$`) is a clause of the
    // text, not an item of a list (Math-Verify 0.9.0 does not parse it, and so does not join it).
    let clause = |&(a, b): &(usize, usize)| s[a..b].trim_end().ends_with([',', '.', ';']);
    let mut run_start = last;
    while run_start > 0
        && !clause(&spans[run_start - 1])
        && joins_spans(&s[spans[run_start - 1].1..spans[run_start].0])
    {
        run_start -= 1;
    }
    let first = run_start + (last - run_start) / 6 * 6;
    let parts: Vec<&str> = spans[first..=last]
        .iter()
        .map(|&(a, b)| s[a..b].trim())
        .collect();
    Some(with_percent(parts.join(", "), &s[spans[last].1..]))
}

/// The last number in the text (`-3`, `1,000`, `2.5`, `3/4`), and where it ends.
fn last_number(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let last_digit = b.iter().rposition(u8::is_ascii_digit)?;
    let mut start = last_digit;
    while start > 0 {
        let c = b[start - 1];
        let inner_sep =
            matches!(c, b'.' | b',' | b'/') && start >= 2 && b[start - 2].is_ascii_digit();
        if c.is_ascii_digit() || inner_sep {
            start -= 1;
        } else {
            break;
        }
    }
    if start > 0 && b[start - 1] == b'-' {
        start -= 1;
    }
    let t = s[start..=last_digit].trim_end_matches([',', '.']);
    (!t.is_empty()).then(|| (t.to_string(), last_digit + 1))
}

/// The multiple-choice letter (A–E) an answer names: `C`, `(C)`, `\text{(C)}`, `\textbf{C}.`
pub(crate) fn choice_letter(s: &str) -> Option<char> {
    let mut t = s.trim().to_string();
    for w in ["\\textbf", "\\text", "\\mathrm", "\\mbox", "\\boxed"] {
        t = t.replace(w, "");
    }
    let t: String = t
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '(' | ')' | '$' | '.' | ' ' | ':' | '*'))
        .collect();
    let mut cs = t.chars();
    match (cs.next(), cs.next()) {
        (Some(c), None) if ('A'..='E').contains(&c.to_ascii_uppercase()) => {
            Some(c.to_ascii_uppercase())
        }
        _ => None,
    }
}

/// The choice letter a response gives: boxed, then "answer is (X)", then the last `(X)`.
pub(crate) fn extract_choice(response: &str) -> Option<(char, String)> {
    if let Some(&(_, cs, ce)) = boxed_spans(response).last() {
        let inner = &response[cs..ce];
        return choice_letter(inner).map(|c| (c, inner.to_string()));
    }
    if let Some(((t, _), _)) = after_final_answer(response) {
        if let Some(c) = choice_letter(&t) {
            return Some((c, t));
        }
        // "The answer is (B) 12": take the leading letter token.
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(c) = choice_letter(first) {
            return Some((c, first.to_string()));
        }
    }
    let b = response.as_bytes();
    for i in (0..b.len().saturating_sub(2)).rev() {
        if b[i] == b'(' && b[i + 2] == b')' && (b'A'..=b'E').contains(&b[i + 1]) {
            return Some((b[i + 1] as char, response[i..i + 3].to_string()));
        }
    }
    let t = response.trim();
    choice_letter(t)
        .filter(|_| t.len() <= 16)
        .map(|c| (c, t.to_string()))
}

#[cfg(test)]
mod tests;
