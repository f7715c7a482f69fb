//! Relations: equations compared by their sides (same assigned name, or proportional
//! `l - r`), single inequalities by sign and ratio, and one-variable inequalities read as the
//! intervals they describe.

use super::numeric::{has_symbols, ratio};
use super::{eq, is_setlike};
use crate::budget::Budget;
use crate::parse::{is_label, Node, RelOp};
use crate::VerifyError;

fn inf(neg: bool) -> Node {
    if neg {
        Node::Neg(Box::new(Node::Inf))
    } else {
        Node::Inf
    }
}

/// `x > 2` → `(2, ∞)`, `-2 \le x \le 7` → `[-2, 7]`: a one-variable inequality as an interval.
pub(super) fn inequality_interval(xs: &[Node], ops: &[RelOp]) -> Option<Node> {
    let lt = |o: RelOp| matches!(o, RelOp::Lt | RelOp::Le);
    let gt = |o: RelOp| matches!(o, RelOp::Gt | RelOp::Ge);
    let closed = |o: RelOp| matches!(o, RelOp::Le | RelOp::Ge);
    let is_var = |n: &Node| matches!(n, Node::Sym(_));
    let iv = |lo: &Node, lc: bool, hi: &Node, hc: bool| Node::Interval {
        lo: Box::new(lo.clone()),
        hi: Box::new(hi.clone()),
        lo_closed: lc,
        hi_closed: hc,
    };
    let flip = |o: RelOp| match o {
        RelOp::Lt => RelOp::Gt,
        RelOp::Le => RelOp::Ge,
        RelOp::Gt => RelOp::Lt,
        RelOp::Ge => RelOp::Le,
        o => o,
    };
    // `-x > -1` is `x < 1`.
    if let ([Node::Neg(a), c], [op]) = (xs, ops) {
        if is_var(a) && !has_symbols(c) {
            let neg_c = Node::Neg(Box::new(c.clone()));
            return inequality_interval(&[(**a).clone(), neg_c], &[flip(*op)]);
        }
    }
    if let ([c, Node::Neg(a)], [op]) = (xs, ops) {
        if is_var(a) && !has_symbols(c) {
            let neg_c = Node::Neg(Box::new(c.clone()));
            return inequality_interval(&[neg_c, (**a).clone()], &[flip(*op)]);
        }
    }
    match (xs, ops) {
        ([a, c], [op]) if (lt(*op) || gt(*op)) => {
            let (var_left, bound) = if is_var(a) && !has_symbols(c) {
                (true, c)
            } else if is_var(c) && !has_symbols(a) {
                (false, a)
            } else {
                return None;
            };
            // Normalise to "x < bound" or "x > bound".
            let upper = lt(*op) == var_left;
            Some(if upper {
                iv(&inf(true), false, bound, closed(*op))
            } else {
                iv(bound, closed(*op), &inf(false), false)
            })
        }
        ([a, x, c], [o1, o2]) if is_var(x) && !has_symbols(a) && !has_symbols(c) => {
            if lt(*o1) && lt(*o2) {
                Some(iv(a, closed(*o1), c, closed(*o2)))
            } else if gt(*o1) && gt(*o2) {
                Some(iv(c, closed(*o2), a, closed(*o1)))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn diff(l: &Node, r: &Node) -> Node {
    Node::Add(vec![l.clone(), Node::Neg(Box::new(r.clone()))])
}

pub(super) fn rel_eq(
    gx: &[Node],
    go: &[RelOp],
    px: &[Node],
    po: &[RelOp],
    b: &Budget,
) -> Result<bool, VerifyError> {
    let all_eq = |ops: &[RelOp]| ops.iter().all(|o| *o == RelOp::Eq);
    if all_eq(go) && all_eq(po) {
        let (gl, gr) = (&gx[0], &gx[gx.len() - 1]);
        let (pl, pr) = (&px[0], &px[px.len() - 1]);
        // Same assigned name: compare the values (keeps the 6-decimal rule for `x = 0.333333`,
        // and compares labelled tuples `(p,q) = (3,2)`).
        if is_label(gl) && gl == pl && eq(gr, pr, b)? {
            return Ok(true);
        }
        let structure = |n: &Node| is_setlike(n) || matches!(n, Node::Matrix(_) | Node::Text(_));
        if [gl, gr, pl, pr].into_iter().any(structure) {
            return Ok(false);
        }
        // Otherwise: l - r proportional (either side order, scalar multiples such as planes).
        return Ok(matches!(ratio(&diff(gl, gr), &diff(pl, pr), b)?, Some(r) if r.abs() > 1e-12));
    }
    if go.len() == 1 && po.len() == 1 && go[0] != RelOp::In && po[0] != RelOp::In {
        // Bring both to `d > 0` / `d >= 0` / `d != 0`.
        let norm = |xs: &[Node], op: RelOp| -> (Node, Option<bool>) {
            match op {
                RelOp::Lt => (diff(&xs[1], &xs[0]), Some(true)),
                RelOp::Le => (diff(&xs[1], &xs[0]), Some(false)),
                RelOp::Gt => (diff(&xs[0], &xs[1]), Some(true)),
                RelOp::Ge => (diff(&xs[0], &xs[1]), Some(false)),
                _ => (diff(&xs[0], &xs[1]), None),
            }
        };
        let (gd, gs) = norm(gx, go[0]);
        let (pd, ps) = norm(px, po[0]);
        if gs != ps {
            return Ok(false);
        }
        let r = ratio(&gd, &pd, b)?;
        return Ok(match (r, gs) {
            (Some(r), Some(_)) => r.is_real() && r.re > 0.0,
            (Some(r), None) => r.abs() > 1e-12,
            (None, _) => false,
        });
    }
    if go != po || gx.len() != px.len() {
        return Ok(false);
    }
    for (x, y) in gx.iter().zip(px) {
        if !eq(x, y, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}
