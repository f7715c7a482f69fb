//! Finding the final answer in a model response. Priority, after Math-Verify's extraction
//! regexes (`parser.py`): the last `\boxed{}`/`\fbox{}` (several adjacent ones joined by `,`,
//! `and`, `or` are merged into one list), else the text after the last "final answer is" /
//! "answer is" / "answer:", else the last LaTeX span (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`),
//! else the whole response when it is short and parses as math, else the last plain number.
//! All scans are linear in the response length.

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

/// The answer found in `response`, with where it came from.
pub(crate) fn extract(response: &str) -> Option<(String, Source)> {
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
        let text = parts.join(", ");
        return Some((text.trim().to_string(), Source::Boxed));
    }
    if let Some(t) = after_final_answer(response) {
        return Some((t, Source::FinalAnswer));
    }
    if let Some(t) = last_latex_span(response) {
        return Some((t, Source::LatexSpan));
    }
    let trimmed = response.trim();
    if !trimmed.is_empty() && trimmed.len() <= 200 && looks_like_bare_answer(trimmed) {
        return Some((trimmed.to_string(), Source::Whole));
    }
    last_number(response).map(|t| (t, Source::TrailingNumber))
}

/// A bare answer has no sentence structure: few words, no sentence-ending punctuation inside.
fn looks_like_bare_answer(s: &str) -> bool {
    let words = s
        .split_whitespace()
        .filter(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .count();
    words <= 1 && !s.contains(". ") && !s.contains('\n')
}

/// Text after the last "final answer is" / "answer is" / "answer:" up to the end of the line,
/// with a LaTeX span in it unwrapped.
fn after_final_answer(response: &str) -> Option<String> {
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

fn clean_answer_line(line: &str) -> Option<String> {
    if let Some(t) = first_latex_span(line) {
        return Some(t);
    }
    // Cut at the end of the sentence: ". " or a final ".".
    let mut t = line;
    if let Some(p) = t.find(". ") {
        t = &t[..p];
    }
    let t = t.trim().trim_end_matches(['.', ',', ';', '!']).trim();
    let t = t.trim_matches('*').trim();
    (!t.is_empty()).then(|| t.to_string())
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

fn last_latex_span(s: &str) -> Option<String> {
    latex_spans(s)
        .into_iter()
        .rev()
        .map(|(a, b)| s[a..b].trim())
        .find(|t| !t.is_empty())
        .map(str::to_string)
}

fn first_latex_span(s: &str) -> Option<String> {
    latex_spans(s)
        .into_iter()
        .map(|(a, b)| s[a..b].trim())
        .find(|t| !t.is_empty())
        .map(str::to_string)
}

/// The last number in the text (`-3`, `1,000`, `2.5`, `3/4`).
fn last_number(s: &str) -> Option<String> {
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
    (!t.is_empty()).then(|| t.to_string())
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
    if let Some(t) = after_final_answer(response) {
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
mod tests {
    use super::*;

    fn ex(s: &str) -> Option<String> {
        extract(s).map(|(t, _)| t)
    }

    #[test]
    fn last_boxed_with_nested_braces() {
        assert_eq!(
            ex("first \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}} done").as_deref(),
            Some("\\frac{1}{\\sqrt{2}}")
        );
        assert_eq!(ex("\\fbox{7}").as_deref(), Some("7"));
        assert_eq!(ex("so \\boxed{\\{1,2\\}}.").as_deref(), Some("\\{1,2\\}"));
        assert_eq!(ex("\\boxed 5.").as_deref(), Some("5"));
    }

    #[test]
    fn adjacent_boxed_are_merged() {
        assert_eq!(
            ex("$\\boxed{1}$ and $\\boxed{-2}$").as_deref(),
            Some("1, -2")
        );
        assert_eq!(ex("\\boxed{1}, \\boxed{2}").as_deref(), Some("1, 2"));
        // Far apart: only the last one counts.
        assert_eq!(
            ex("we get \\boxed{1} in step one. Then after more work \\boxed{2}").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn unbalanced_boxed_is_ignored() {
        assert_eq!(ex("\\boxed{1 and then $x=3$").as_deref(), Some("x=3"));
    }

    #[test]
    fn final_answer_phrases() {
        assert_eq!(
            ex("Work... The final answer is $\\frac{3}{4}$. I hope it is correct.").as_deref(),
            Some("\\frac{3}{4}")
        );
        assert_eq!(ex("So the answer is 12.").as_deref(), Some("12"));
        assert_eq!(ex("Answer: 5 apples").as_deref(), Some("5 apples"));
        assert_eq!(
            ex("The final answer is:\n\n$$ x+1 $$").as_deref(),
            Some("x+1")
        );
    }

    #[test]
    fn latex_spans_and_fallbacks() {
        assert_eq!(ex("we find $x=2$ and so $y=3$").as_deref(), Some("y=3"));
        assert_eq!(ex("thus \\[ 4\\pi \\] ok").as_deref(), Some("4\\pi"));
        assert_eq!(ex("thus \\( 4 \\) ok").as_deref(), Some("4"));
        assert_eq!(ex("costs \\$5 and \\$6").as_deref(), Some("6"));
        assert_eq!(ex("\\frac{1}{2}").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(
            ex("So in total we have 1,250 marbles").as_deref(),
            Some("1,250")
        );
        assert_eq!(ex("the result is -3.5.").as_deref(), Some("-3.5"));
        assert_eq!(ex("no numbers here at all"), None);
        assert_eq!(ex(""), None);
    }

    #[test]
    fn choices() {
        assert_eq!(choice_letter("\\text{(C)}"), Some('C'));
        assert_eq!(choice_letter("(b)"), Some('B'));
        assert_eq!(choice_letter("F"), None);
        assert_eq!(choice_letter("CD"), None);
        assert_eq!(
            extract_choice("so \\boxed{\\text{(D)}}").map(|x| x.0),
            Some('D')
        );
        assert_eq!(
            extract_choice("The answer is (A) because").map(|x| x.0),
            Some('A')
        );
        assert_eq!(
            extract_choice("options (A) or maybe (E)").map(|x| x.0),
            Some('E')
        );
        assert_eq!(extract_choice("nothing"), None);
    }
}
