//! Scalars: exact rationals first, 6-decimal rounding when one side is a decimal literal,
//! percentages, and otherwise numeric evaluation at deterministic sample points (also used for
//! the constant ratio of two relations' sides).

use num_rational::BigRational;

use crate::budget::Budget;
use crate::eval::{exact, numeric, symbols, C};
use crate::parse::Node;
use crate::VerifyError;

/// Sample points for expressions with variables.
const POINTS: u64 = 6;

pub(super) fn has_symbols(n: &Node) -> bool {
    let mut v = Vec::new();
    symbols(n, &mut v);
    !v.is_empty()
}

fn is_decimal_atom(n: &Node) -> bool {
    match n {
        Node::Num { decimal, .. } => *decimal,
        Node::Neg(x) | Node::Percent(x) => is_decimal_atom(x),
        _ => false,
    }
}

fn is_integer_literal(n: &Node) -> bool {
    match n {
        Node::Num { val, decimal } => !decimal && val.is_integer(),
        Node::Neg(x) => is_integer_literal(x),
        _ => false,
    }
}

pub(super) fn scalar_eq(g: &Node, p: &Node, b: &Budget) -> Result<bool, VerifyError> {
    match (g, p) {
        (Node::Percent(x), Node::Percent(y)) => num_eq(x, y, b),
        // A gold percentage accepts the bare number (`50\%` vs `50`) and its value (`0.5`).
        (Node::Percent(x), _) => Ok(num_eq(x, p, b)? || num_eq(g, p, b)?),
        // A predicted percentage is its value (`50\%` = 0.5); like Math-Verify, an integer
        // percentage also matches the same integer, because MATH writes the answer to "by what
        // percent ...?" without the sign (MATH500: gold `10`).
        (_, Node::Percent(y)) => {
            let ints = is_integer_literal(g) && is_integer_literal(y);
            Ok(ints && num_eq(g, y, b)? || num_eq(g, p, b)?)
        }
        _ => num_eq(g, p, b),
    }
}

/// Rounds to 6 decimals, half away from zero.
fn round6_exact(v: &BigRational) -> BigRational {
    let scale = BigRational::from_integer(1_000_000.into());
    (v * &scale).round()
}

fn num_eq(a: &Node, c: &Node, b: &Budget) -> Result<bool, VerifyError> {
    let ea = exact(a, b);
    let ec = exact(c, b);
    // Math-Verify: when one side is a decimal literal, both are rounded to 6 places.
    if is_decimal_atom(a) || is_decimal_atom(c) {
        if let (Ok(Some(x)), Ok(Some(y))) = (&ea, &ec) {
            return Ok(round6_exact(x) == round6_exact(y));
        }
        if !has_symbols(a) && !has_symbols(c) {
            let (x, y) = (numeric(a, &|_| f64::NAN, b)?, numeric(c, &|_| f64::NAN, b)?);
            if x.is_real() && y.is_real() && x.re.is_finite() && y.re.is_finite() {
                return Ok((x.re * 1e6).round() == (y.re * 1e6).round());
            }
        }
    }
    if let (Some(x), Some(y)) = (ea?, ec?) {
        return Ok(x == y);
    }
    agree_at_samples(a, c, b)
}

/// Deterministic sample value for a symbol at trial `t`: FNV-1a of the name mixed with `t`
/// (SplitMix64 finaliser), mapped into ±[0.37, 2.27] so no sample is 0, ±1 or an integer, and
/// both signs are tried (so `|x|` and `x` differ, as they do for sympy without assumptions).
pub(super) fn sample(name: &str, t: u64) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for byte in name.bytes() {
        h ^= byte as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut z = h ^ t.wrapping_mul(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^= z >> 31;
    let mag = 0.37 + 1.9 * ((z >> 11) as f64 / (1u64 << 53) as f64);
    if z & 1 == 1 {
        -mag
    } else {
        mag
    }
}

fn close(x: C, y: C) -> bool {
    if x.re.is_infinite() || y.re.is_infinite() {
        return x.re == y.re && x.im == 0.0 && y.im == 0.0;
    }
    if !(x.re.is_finite() && x.im.is_finite() && y.re.is_finite() && y.im.is_finite()) {
        return false;
    }
    let d = C {
        re: x.re - y.re,
        im: x.im - y.im,
    }
    .abs();
    d <= 1e-9 * x.abs().max(y.abs()) + 1e-12
}

/// How many sample points to evaluate `a` and `c` at: one when neither has variables.
fn sample_points(a: &Node, c: &Node) -> u64 {
    if has_symbols(a) || has_symbols(c) {
        POINTS
    } else {
        1
    }
}

/// Whether `a` and `c` agree at every sample point (once when there are no variables).
fn agree_at_samples(a: &Node, c: &Node, b: &Budget) -> Result<bool, VerifyError> {
    let trials = sample_points(a, c);
    let mut valid = 0;
    for t in 0..trials {
        b.tick()?;
        let env = |s: &str| sample(s, t);
        let (x, y) = (numeric(a, &env, b)?, numeric(c, &env, b)?);
        let (xn, yn) = (
            x.re.is_nan() || x.im.is_nan(),
            y.re.is_nan() || y.im.is_nan(),
        );
        if xn && yn {
            continue;
        }
        if xn != yn || !close(x, y) {
            return Ok(false);
        }
        valid += 1;
    }
    // With one point (no variables) this asks for that point to be valid.
    Ok(valid > 0 && valid * 2 >= trials)
}

/// The constant ratio `a / c` over the sample points, if there is one.
pub(super) fn ratio(a: &Node, c: &Node, b: &Budget) -> Result<Option<C>, VerifyError> {
    let trials = sample_points(a, c);
    let mut first: Option<C> = None;
    let mut both_zero = 0;
    for t in 0..trials {
        b.tick()?;
        let env = |s: &str| sample(s, t);
        let (x, y) = (numeric(a, &env, b)?, numeric(c, &env, b)?);
        let finite = |v: C| v.re.is_finite() && v.im.is_finite();
        if !finite(x) || !finite(y) {
            continue;
        }
        let (zx, zy) = (x.abs() < 1e-12, y.abs() < 1e-12);
        if zx && zy {
            both_zero += 1;
            continue;
        }
        if zx != zy {
            return Ok(None);
        }
        let r = C {
            re: (x.re * y.re + x.im * y.im) / (y.re * y.re + y.im * y.im),
            im: (x.im * y.re - x.re * y.im) / (y.re * y.re + y.im * y.im),
        };
        match first {
            None => first = Some(r),
            Some(f) if close(f, r) => {}
            Some(_) => return Ok(None),
        }
    }
    if first.is_none() && both_zero > 0 {
        // Both sides vanish everywhere sampled (`0 = 0`): identical relations.
        return Ok(Some(C::real(1.0)));
    }
    Ok(first)
}
