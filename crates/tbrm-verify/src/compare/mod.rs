//! Deciding equivalence of a gold answer and an extracted answer. The decision order follows
//! Math-Verify's `sympy_expr_eq` (`grader.py`): assignments `x = 5` and labelled tuples
//! `(p,q) = (3,2)` are unwrapped against plain values, relations are compared as relations
//! (`-x > -1` is `x < 1`, `x \neq 3` is `x != 3`; an inequality becomes an interval only against
//! an interval or another inequality chain), sets/tuples/intervals structurally (a gold set or
//! list ignores order, a gold tuple keeps it against any list, an open interval equals a pair),
//! and scalars by exact rationals, by rounding to 6 decimals when one side is a decimal literal,
//! and otherwise by evaluation: once for constants, at several pseudo-random points for
//! expressions with variables (Schwartz–Zippel style identity testing instead of sympy's
//! `simplify`). Before that, LaTeX stored with doubled backslashes is read as written once, a
//! gold written as a whole solution is reduced to its final answer, and a plain-text answer may
//! use a decimal comma when the gold is not a list.
//!
//! The pieces, in the order a comparison meets them: this file reads the answers and dispatches
//! (`verify_pair`, `eq`); `canon` cleans up the trees (`\pm`, `x \in S`, infinite ends);
//! `relation` compares equations and inequalities; `sets` compares sets, tuples, intervals
//! and unions; `numeric` compares scalars (exact, 6 decimals, sample points).

mod canon;
mod numeric;
#[cfg(test)]
mod parse_coverage;
mod relation;
mod sets;
#[cfg(test)]
mod tests;

use crate::budget::Budget;
use crate::extract::{
    choice_letter, extract, extract_choice, looks_like_prose, trailing_number, Source,
};
use crate::normalize::{decimal_commas, is_text_answer, normalize, text_key, undouble_backslashes};
use crate::parse::{is_label, parse, Node, RelOp};
use crate::{Limits, Outcome, Verdict, VerifyError};

use canon::canon;
use numeric::scalar_eq;
use relation::{inequality_interval, rel_eq};
use sets::set_eq;

fn verdict(
    correct: bool,
    extracted: Option<String>,
    reason: String,
    o: Outcome,
) -> (Verdict, Outcome) {
    (
        Verdict {
            correct,
            extracted,
            reason,
        },
        o,
    )
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Boxed => "\\boxed",
        Source::FinalAnswer => "'answer is'",
        Source::LatexSpan => "last LaTeX span",
        Source::Whole => "whole response",
        Source::TrailingNumber => "last number",
    }
}

/// Gold answers are normally bare; a gold written as a whole solution or a sentence is reduced
/// to its final answer, found the way a response's is (`\boxed{}`, "the answer is", the last
/// math span or number).
fn gold_answer(gold: &str) -> String {
    if gold.contains("\\boxed") || gold.contains("\\fbox") || looks_like_prose(gold) {
        if let Some(e) = extract(gold) {
            return e.text;
        }
    }
    gold.trim().to_string()
}

/// Whether the gold answer is a multiple-choice letter: `(C)`, `\text{(C)}`, `C`.
fn gold_choice(gold: &str) -> Option<char> {
    let c = choice_letter(gold)?;
    gold.contains(c).then_some(c)
}

pub(crate) fn verify_pair(gold: &str, response: &str, limits: &Limits) -> (Verdict, Outcome) {
    for (what, len, max) in [
        ("response", response.len(), limits.max_response_bytes),
        ("gold answer", gold.len(), limits.max_answer_bytes),
    ] {
        if len > max {
            let e = VerifyError::TooLong { what, len, max };
            return verdict(
                false,
                None,
                format!("not checked: {e}"),
                Outcome::Unparseable,
            );
        }
    }
    // LaTeX stored with doubled backslashes (`\\frac{1}{5}`) is read as written once.
    let response = undouble_backslashes(response);
    let response = response.as_ref();
    let gold = gold_answer(&undouble_backslashes(gold));
    if let Some(g) = gold_choice(&gold) {
        return match extract_choice(response) {
            Some((c, text)) if c == g => verdict(
                true,
                Some(text),
                format!("choice {c} matches"),
                Outcome::Correct,
            ),
            Some((c, text)) => verdict(
                false,
                Some(text),
                format!("choice {c} differs from {g}"),
                Outcome::Incorrect,
            ),
            None => verdict(
                false,
                None,
                "no choice letter found".into(),
                Outcome::Unparseable,
            ),
        };
    }
    let Some(found) = extract(response) else {
        return verdict(false, None, "no answer found".into(), Outcome::Unparseable);
    };
    let (mut pred, mut source) = (found.text, found.source);
    let mut src = source_name(source);
    if pred.len() > limits.max_answer_bytes {
        let e = VerifyError::TooLong {
            what: "extracted answer",
            len: pred.len(),
            max: limits.max_answer_bytes,
        };
        return verdict(
            false,
            Some(pred),
            format!("not checked: {e}"),
            Outcome::Unparseable,
        );
    }
    let gn = normalize(&gold);
    // A plain-text answer may use a decimal comma (`2,74 $`); it cannot mean a list when the
    // gold answer is not one.
    let list_gold = gn.contains([',', ';']);
    let plain_norm = |t: &str| {
        if list_gold {
            normalize(t)
        } else {
            normalize(&decimal_commas(t))
        }
    };
    let pn = if found.plain {
        plain_norm(&pred)
    } else {
        normalize(&pred)
    };
    let budget = Budget::new(limits);
    if !gn.is_empty() && text_key(&gn) == text_key(&pn) {
        return verdict(
            true,
            Some(pred),
            format!("equivalent: same text after normalisation (from {src})"),
            Outcome::Correct,
        );
    }
    if is_text_answer(&gn) {
        let bare = |s: &str| text_key(s).replace(['(', ')'], "");
        if bare(&gn) == bare(&pn) {
            return verdict(
                true,
                Some(pred),
                format!("equivalent: same words (from {src})"),
                Outcome::Correct,
            );
        }
        return verdict(
            false,
            Some(pred),
            format!("not equivalent: text answers differ (from {src})"),
            Outcome::Incorrect,
        );
    }
    let g = match parse(&gn, &budget).and_then(|g| canon(g, &budget)) {
        Ok(g) => g,
        Err(e) => {
            return verdict(
                false,
                Some(pred),
                format!("not equivalent: gold answer not parseable ({e}) and texts differ"),
                Outcome::Incorrect,
            )
        }
    };
    // A percent sign or word after the answer (`\boxed{28}$ pct`) makes it a percentage.
    let with_pct = |n: &str, percent: bool| {
        if percent && !n.ends_with('%') {
            format!("{n}%")
        } else {
            n.to_string()
        }
    };
    let mut parsed = parse(&with_pct(&pn, found.percent), &budget).and_then(|p| canon(p, &budget));
    if parsed.is_err() && source == Source::Whole {
        // A short sentence taken whole (`Soucis : 2,74 $ a..`): its last number instead.
        if let Some(t) = trailing_number(response) {
            let tn = with_pct(&plain_norm(&t.text), t.percent);
            if let Ok(p) = parse(&tn, &budget).and_then(|p| canon(p, &budget)) {
                (parsed, source) = (Ok(p), t.source);
                src = source_name(source);
                pred = t.text;
            }
        }
    }
    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            return verdict(
                false,
                Some(pred),
                format!("unparseable answer (from {src}): {e}"),
                Outcome::Unparseable,
            )
        }
    };
    match eq(&g, &p, &budget) {
        Ok(true) => verdict(
            true,
            Some(pred),
            format!("equivalent (from {src})"),
            Outcome::Correct,
        ),
        Ok(false) => verdict(
            false,
            Some(pred),
            format!("not equivalent (from {src})"),
            Outcome::Incorrect,
        ),
        Err(e) => verdict(
            false,
            Some(pred),
            format!("not equivalent: {e} (from {src})"),
            Outcome::Incorrect,
        ),
    }
}

fn is_equation(n: &Node) -> bool {
    matches!(n, Node::Rel(_, ops) if ops.iter().all(|o| *o == RelOp::Eq))
}

/// `x = ...`, `AB = ...`, `(p,q) = ...`: an equation whose left side is a name.
fn is_assignment(n: &Node) -> bool {
    match n {
        Node::Rel(xs, _) if is_equation(n) => is_label(&xs[0]),
        _ => false,
    }
}

fn last_rhs(n: &Node) -> &Node {
    match n {
        Node::Rel(xs, _) => xs.last().unwrap_or(n),
        _ => n,
    }
}

fn is_setlike(n: &Node) -> bool {
    matches!(
        n,
        Node::Set(_) | Node::Tuple(_) | Node::Interval { .. } | Node::Union(_)
    )
}

/// Equivalence of a gold node and a predicted node.
fn eq(g: &Node, p: &Node, b: &Budget) -> Result<bool, VerifyError> {
    b.tick()?;
    // Follow the gold format, as Math-Verify does: `9` vs `x = 9` compares 9 with 9, and
    // `x = 9` vs `9` too; but `2x + z = 1` vs `1` compares the equation.
    let (g, p) = if is_equation(p) && !is_equation(g) {
        (g, last_rhs(p))
    } else if is_assignment(g) && !is_equation(p) {
        (last_rhs(g), p)
    } else {
        (g, p)
    };
    match (g, p) {
        (Node::Text(a), Node::Text(c)) => Ok(text_key(a) == text_key(c)),
        (Node::Text(_), _) | (_, Node::Text(_)) => Ok(false),
        (Node::Rel(gx, go), Node::Rel(px, po)) => {
            if rel_eq(gx, go, px, po, b)? {
                return Ok(true);
            }
            // Two one-variable inequalities (chains too): the same interval (`1 < x < 2` and
            // `2 > x > 1`).
            match (inequality_interval(gx, go), inequality_interval(px, po)) {
                (Some(a), Some(c)) => set_eq(&a, &c, b),
                _ => Ok(false),
            }
        }
        // An inequality against an interval: as the interval it describes (`x > 2` and
        // `(2, \infty)`, either side).
        (Node::Rel(gx, go), other) if is_setlike(other) => match inequality_interval(gx, go) {
            Some(iv) => eq(&iv, other, b),
            None => Ok(false),
        },
        (other, Node::Rel(px, po)) if is_setlike(other) => match inequality_interval(px, po) {
            Some(iv) => eq(other, &iv, b),
            None => Ok(false),
        },
        (Node::Rel(..), _) | (_, Node::Rel(..)) => Ok(false),
        (Node::Matrix(a), Node::Matrix(c)) => {
            if a.len() != c.len() || a[0].len() != c[0].len() {
                return Ok(false);
            }
            for (x, y) in a.iter().flatten().zip(c.iter().flatten()) {
                if !eq(x, y, b)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        (Node::Matrix(_), _) | (_, Node::Matrix(_)) => Ok(false),
        _ if is_setlike(g) || is_setlike(p) => set_eq(g, p, b),
        _ => scalar_eq(g, p, b),
    }
}
