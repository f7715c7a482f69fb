//! Tokenising: the answer text as numbers, letters, known words, LaTeX commands and the
//! arguments of `\begin`, `\end`, `\text`, `\operatorname`, with a budget tick per token.

use num_bigint::BigInt;
use num_rational::BigRational;

use super::parse_err;
use crate::budget::Budget;
use crate::VerifyError;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(String),
    Letter(char),
    /// A known multi-letter word written without backslash (`sin`, `pi`, `sqrt`).
    Word(String),
    /// `\name`, or `\` plus one non-letter character (`\{`, `\\`).
    Cmd(String),
    Ch(char),
    Text(String),
    Begin(String),
    End(String),
}

const WORDS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "ln", "log", "exp", "sqrt", "pi", "infty", "inf",
];

pub(super) fn tokenize(s: &str, budget: &Budget) -> Result<Vec<Tok>, VerifyError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        budget.tick()?;
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())
        {
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else if i < b.len()
                && b[i] == b'.'
                && !b
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.')
            {
                // `-1./3` (Fortran-style float in Minerva answers): the point ends the number.
                i += 1;
            }
            if i - st > budget.limits.max_digits {
                return Err(VerifyError::TooLarge(format!(
                    "a number literal of {} digits",
                    i - st
                )));
            }
            out.push(Tok::Num(s[st..i].to_string()));
        } else if c.is_ascii_alphabetic() {
            let st = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let w = &s[st..i];
            if WORDS.contains(&w) {
                out.push(Tok::Word(w.to_string()));
            } else {
                out.extend(w.chars().map(Tok::Letter));
            }
        } else if c == b'\\' {
            i += 1;
            if i >= b.len() {
                return Err(parse_err(s, "trailing backslash"));
            }
            if b[i].is_ascii_alphabetic() {
                let st = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let name = &s[st..i];
                match name {
                    "begin" | "end" | "text" | "operatorname" => {
                        while i < b.len() && b[i] == b' ' {
                            i += 1;
                        }
                        if i >= b.len() || b[i] != b'{' {
                            return Err(parse_err(s, format!("\\{name} without {{")));
                        }
                        let end = crate::extract::matching_brace(b, i)
                            .ok_or_else(|| parse_err(s, "unbalanced braces"))?;
                        let arg = s[i + 1..end].trim().to_string();
                        i = end + 1;
                        out.push(match name {
                            "begin" => Tok::Begin(arg),
                            "end" => Tok::End(arg),
                            "text" => Tok::Text(arg),
                            _ => Tok::Word(arg),
                        });
                    }
                    _ => out.push(Tok::Cmd(name.to_string())),
                }
            } else {
                let ch = s[i..].chars().next().unwrap_or(' ');
                i += ch.len_utf8();
                out.push(Tok::Cmd(ch.to_string()));
            }
        } else if c.is_ascii() {
            out.push(Tok::Ch(c as char));
            i += 1;
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(parse_err(s, format!("unexpected character `{ch}`")));
        }
    }
    Ok(out)
}

/// Exact value of a decimal literal such as `12.50`.
pub(super) fn decimal_value(s: &str) -> Option<BigRational> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = format!("{int}{frac}");
    let num = BigInt::parse_bytes(digits.as_bytes(), 10)?;
    let den = num_traits::pow(BigInt::from(10), frac.len());
    Some(BigRational::new(num, den))
}
