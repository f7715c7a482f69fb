//! Structural clean-up before comparison: `\pm` expanded into the set of its sign choices,
//! `x \in S` read as `S`, a pair with an infinite end read as an open interval.

use super::sets::is_infinite;
use crate::budget::Budget;
use crate::parse::{Node, RelOp};
use crate::VerifyError;

/// Most `\pm` signs expanded in one answer (2^4 variants).
const MAX_PM: usize = 4;

fn count_pm(n: &Node) -> usize {
    match n {
        Node::PlusMinus(x) => 1 + count_pm(x),
        Node::Neg(x) | Node::Percent(x) | Node::Fact(x) | Node::Func(_, x) => count_pm(x),
        Node::Div(x, y)
        | Node::Pow(x, y)
        | Node::Log(x, y)
        | Node::Root(x, y)
        | Node::Binom(x, y) => count_pm(x) + count_pm(y),
        Node::Add(xs) | Node::Mul(xs) | Node::Rel(xs, _) => xs.iter().map(count_pm).sum(),
        _ => 0,
    }
}

/// Replaces each `±x` by `x` or `-x` according to the bits of `mask`.
fn choose_signs(n: &Node, mask: u32, idx: &mut u32) -> Node {
    let rec = |x: &Node, idx: &mut u32| Box::new(choose_signs(x, mask, idx));
    match n {
        Node::PlusMinus(x) => {
            let bit = (mask >> *idx) & 1;
            *idx += 1;
            let inner = rec(x, idx);
            if bit == 0 {
                *inner
            } else {
                Node::Neg(inner)
            }
        }
        Node::Neg(x) => Node::Neg(rec(x, idx)),
        Node::Percent(x) => Node::Percent(rec(x, idx)),
        Node::Fact(x) => Node::Fact(rec(x, idx)),
        Node::Func(f, x) => Node::Func(*f, rec(x, idx)),
        Node::Div(x, y) => Node::Div(rec(x, idx), rec(y, idx)),
        Node::Pow(x, y) => Node::Pow(rec(x, idx), rec(y, idx)),
        Node::Log(x, y) => Node::Log(rec(x, idx), rec(y, idx)),
        Node::Root(x, y) => Node::Root(rec(x, idx), rec(y, idx)),
        Node::Binom(x, y) => Node::Binom(rec(x, idx), rec(y, idx)),
        Node::Add(xs) => Node::Add(xs.iter().map(|x| choose_signs(x, mask, idx)).collect()),
        Node::Mul(xs) => Node::Mul(xs.iter().map(|x| choose_signs(x, mask, idx)).collect()),
        Node::Rel(xs, ops) => Node::Rel(
            xs.iter().map(|x| choose_signs(x, mask, idx)).collect(),
            ops.clone(),
        ),
        other => other.clone(),
    }
}

/// `1 \pm \sqrt{2}` → `[1 + √2, 1 - √2]`.
fn pm_variants(n: Node) -> Result<Vec<Node>, VerifyError> {
    let k = count_pm(&n);
    if k == 0 {
        return Ok(vec![n]);
    }
    if k > MAX_PM {
        return Err(VerifyError::TooLarge(format!("{k} \\pm signs")));
    }
    Ok((0..1u32 << k)
        .map(|mask| choose_signs(&n, mask, &mut 0))
        .collect())
}

/// Structural clean-up before comparison: `x \in S` → `S`, `\pm` expanded into sets.
/// Inequalities stay relations (compared as relations, `-x > -1` = `x < 1`); they become
/// intervals only when compared with an interval or with an inequality chain.
pub(super) fn canon(n: Node, b: &Budget) -> Result<Node, VerifyError> {
    b.tick()?;
    Ok(match n {
        Node::Set(items) => {
            let mut out = Vec::new();
            for it in items {
                for v in pm_variants(it)? {
                    out.push(canon_inner(v, b)?);
                }
            }
            Node::Set(out)
        }
        other => {
            let mut vs = pm_variants(other)?;
            if vs.len() == 1 {
                canon_inner(vs.pop().unwrap_or(Node::Set(vec![])), b)?
            } else {
                Node::Set(
                    vs.into_iter()
                        .map(|v| canon_inner(v, b))
                        .collect::<Result<_, _>>()?,
                )
            }
        }
    })
}

fn canon_inner(n: Node, b: &Budget) -> Result<Node, VerifyError> {
    b.tick()?;
    Ok(match n {
        Node::Rel(mut xs, ops) if ops == [RelOp::In] && xs.len() == 2 => {
            canon_inner(xs.pop().unwrap_or(Node::Set(vec![])), b)?
        }
        // `(2, \infty)` is an interval, and an infinite end is open whatever the bracket
        // (sympy normalises `Interval(2, oo, right_open=False)` the same way).
        Node::Tuple(mut xs) if xs.len() == 2 && (is_infinite(&xs[0]) || is_infinite(&xs[1])) => {
            let hi = xs.pop().unwrap_or(Node::Set(vec![]));
            let lo = xs.pop().unwrap_or(Node::Set(vec![]));
            Node::Interval {
                lo: Box::new(lo),
                hi: Box::new(hi),
                lo_closed: false,
                hi_closed: false,
            }
        }
        Node::Interval {
            lo,
            hi,
            lo_closed,
            hi_closed,
        } => Node::Interval {
            lo_closed: lo_closed && !is_infinite(&lo),
            hi_closed: hi_closed && !is_infinite(&hi),
            lo,
            hi,
        },
        Node::Tuple(xs) => Node::Tuple(
            xs.into_iter()
                .map(|x| canon_inner(x, b))
                .collect::<Result<_, _>>()?,
        ),
        Node::Union(xs) => Node::Union(
            xs.into_iter()
                .map(|x| canon_inner(x, b))
                .collect::<Result<_, _>>()?,
        ),
        Node::Set(xs) => canon(Node::Set(xs), b)?,
        other => other,
    })
}
