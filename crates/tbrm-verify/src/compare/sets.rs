//! Sets, tuples, intervals and unions: intervals by their ends and brackets, a gold tuple in
//! order, a gold set or list in any order, and an open interval against a pair.

use super::eq;
use crate::budget::Budget;
use crate::parse::Node;
use crate::VerifyError;

pub(super) fn is_infinite(n: &Node) -> bool {
    match n {
        Node::Inf => true,
        Node::Neg(x) => is_infinite(x),
        _ => false,
    }
}

pub(super) fn set_eq(g: &Node, p: &Node, b: &Budget) -> Result<bool, VerifyError> {
    let items = |n: &Node| -> Option<(Vec<Node>, bool)> {
        match n {
            Node::Set(xs) => Some((xs.clone(), false)),
            Node::Tuple(xs) => Some((xs.clone(), true)),
            Node::Interval { .. } | Node::Union(_) => None,
            other => Some((vec![other.clone()], false)),
        }
    };
    match (g, p) {
        (
            Node::Interval {
                lo: gl,
                hi: gh,
                lo_closed: glc,
                hi_closed: ghc,
            },
            Node::Interval {
                lo: pl,
                hi: ph,
                lo_closed: plc,
                hi_closed: phc,
            },
        ) => {
            let lo_ok = glc == plc || is_infinite(gl);
            let hi_ok = ghc == phc || is_infinite(gh);
            Ok(lo_ok && hi_ok && eq(gl, pl, b)? && eq(gh, ph, b)?)
        }
        (Node::Union(gs), Node::Union(ps)) => unordered(gs, ps, b),
        (Node::Interval { .. }, Node::Union(ps)) if ps.len() == 1 => eq(g, &ps[0], b),
        (Node::Union(gs), Node::Interval { .. }) if gs.len() == 1 => eq(&gs[0], p, b),
        // Math-Verify: `(1, 2)` is read as an open interval, so it equals the pair `1, 2`.
        (
            Node::Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
            other,
        )
        | (
            other,
            Node::Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
        ) => match items(other) {
            Some((xs, _)) if xs.len() == 2 => {
                let (a, c) = if matches!(g, Node::Interval { .. }) {
                    ((lo.as_ref(), &xs[0]), (hi.as_ref(), &xs[1]))
                } else {
                    ((&xs[0], lo.as_ref()), (&xs[1], hi.as_ref()))
                };
                Ok(eq(a.0, a.1, b)? && eq(c.0, c.1, b)?)
            }
            _ => Ok(false),
        },
        // A gold tuple keeps its order against any list (`(3,1)` is not `\{1,3\}`, but is
        // `\{3,1\}` as written, as Math-Verify compares); a gold set or list ignores order.
        _ => match (items(g), items(p)) {
            (Some((gs, true)), Some((ps, _))) => {
                if gs.len() != ps.len() {
                    return Ok(false);
                }
                for (x, y) in gs.iter().zip(&ps) {
                    if !eq(x, y, b)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            (Some((gs, _)), Some((ps, _))) => unordered(&gs, &ps, b),
            _ => Ok(false),
        },
    }
}

/// Order-free matching of two lists (greedy; each predicted item used once); lists of different
/// lengths are compared as sets, so repeated elements count once.
fn unordered(gs: &[Node], ps: &[Node], b: &Budget) -> Result<bool, VerifyError> {
    if gs.len() != ps.len() {
        // As sets, a repeated element counts once (`$28$ or $28_9$` is {28}, as in sympy's
        // FiniteSet): each side's elements must all be found in the other.
        for g in gs {
            if !any_eq(ps, |p| eq(g, p, b))? {
                return Ok(false);
            }
        }
        for p in ps {
            if !any_eq(gs, |g| eq(g, p, b))? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let mut used = vec![false; ps.len()];
    'outer: for g in gs {
        for (j, p) in ps.iter().enumerate() {
            if !used[j] && eq(g, p, b)? {
                used[j] = true;
                continue 'outer;
            }
        }
        return Ok(false);
    }
    Ok(true)
}

fn any_eq(
    xs: &[Node],
    mut f: impl FnMut(&Node) -> Result<bool, VerifyError>,
) -> Result<bool, VerifyError> {
    for x in xs {
        if f(x)? {
            return Ok(true);
        }
    }
    Ok(false)
}
