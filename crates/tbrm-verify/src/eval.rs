//! Evaluation of scalar [`Node`]s: exactly over big rationals when the expression is rational
//! (with caps on exponent and result size, so `10^{10^{10}}` fails fast instead of allocating
//! gigabytes), and numerically over complex `f64` otherwise, with symbols bound to sample values.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use crate::budget::Budget;
use crate::parse::{Func, Node};
use crate::VerifyError;

/// A complex number; only what evaluation needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct C {
    pub re: f64,
    pub im: f64,
}

impl C {
    pub const fn real(re: f64) -> Self {
        Self { re, im: 0.0 }
    }
    const NAN: C = C::real(f64::NAN);

    fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn mul(self, o: C) -> C {
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re * o.re);
        }
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn neg(self) -> C {
        C {
            re: -self.re,
            im: -self.im,
        }
    }
    fn div(self, o: C) -> C {
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re / o.re);
        }
        let d = o.re * o.re + o.im * o.im;
        C {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    pub fn is_real(self) -> bool {
        self.im.abs() <= 1e-12 * self.re.abs().max(1.0)
    }
    fn exp(self) -> C {
        let r = self.re.exp();
        if self.im == 0.0 {
            return C::real(r);
        }
        C {
            re: r * self.im.cos(),
            im: r * self.im.sin(),
        }
    }
    fn ln(self) -> C {
        if self.im == 0.0 && self.re > 0.0 {
            return C::real(self.re.ln());
        }
        C {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        }
    }
    fn powi(self, mut e: i64) -> C {
        if self.im == 0.0 {
            return C::real(
                self.re
                    .powi(e.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
            );
        }
        let inv = e < 0;
        e = e.abs();
        let mut acc = C::real(1.0);
        let mut b = self;
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(b);
            }
            b = b.mul(b);
            e >>= 1;
        }
        if inv {
            C::real(1.0).div(acc)
        } else {
            acc
        }
    }
    fn pow(self, e: C) -> C {
        if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() < 1e9 {
            return self.powi(e.re as i64);
        }
        if self.im == 0.0 && e.im == 0.0 && self.re >= 0.0 {
            return C::real(self.re.powf(e.re));
        }
        if self.re == 0.0 && self.im == 0.0 {
            return C::real(0.0);
        }
        e.mul(self.ln()).exp()
    }
    fn sin(self) -> C {
        C {
            re: self.re.sin() * self.im.cosh(),
            im: self.re.cos() * self.im.sinh(),
        }
    }
    fn cos(self) -> C {
        C {
            re: self.re.cos() * self.im.cosh(),
            im: -(self.re.sin() * self.im.sinh()),
        }
    }
    fn sqrt(self) -> C {
        if self.im == 0.0 && self.re >= 0.0 {
            return C::real(self.re.sqrt());
        }
        self.ln().mul(C::real(0.5)).exp()
    }
    const I: C = C { re: 0.0, im: 1.0 };
    /// Principal `asin z = -i ln(iz + sqrt(1 - z^2))`; real inside [-1, 1].
    fn asin(self) -> C {
        if self.im == 0.0 && self.re.abs() <= 1.0 {
            return C::real(self.re.asin());
        }
        let w = C::I
            .mul(self)
            .add(C::real(1.0).add(self.mul(self).neg()).sqrt());
        C::I.neg().mul(w.ln())
    }
    fn acos(self) -> C {
        if self.im == 0.0 && self.re.abs() <= 1.0 {
            return C::real(self.re.acos());
        }
        C::real(std::f64::consts::FRAC_PI_2).add(self.asin().neg())
    }
    /// Principal `atan z = (i/2) (ln(1 - iz) - ln(1 + iz))`.
    fn atan(self) -> C {
        if self.im == 0.0 {
            return C::real(self.re.atan());
        }
        let iz = C::I.mul(self);
        let d = C::real(1.0)
            .add(iz.neg())
            .ln()
            .add(C::real(1.0).add(iz).ln().neg());
        C { re: 0.0, im: 0.5 }.mul(d)
    }
    fn real_only(self, f: impl Fn(f64) -> f64) -> C {
        if self.is_real() {
            C::real(f(self.re))
        } else {
            C::NAN
        }
    }
}

/// Bits of the larger of numerator and denominator.
fn bits(r: &BigRational) -> u64 {
    r.numer().bits().max(r.denom().bits())
}

fn too_large(b: &Budget, r: BigRational) -> Result<BigRational, VerifyError> {
    if bits(&r) > b.limits.max_bits {
        Err(VerifyError::TooLarge(format!(
            "an intermediate value over {} bits",
            b.limits.max_bits
        )))
    } else {
        Ok(r)
    }
}

/// The exact rational value, `Ok(None)` when the expression is not a rational number
/// (symbols, `\pi`, irrational roots, functions).
pub(crate) fn exact(n: &Node, b: &Budget) -> Result<Option<BigRational>, VerifyError> {
    b.tick()?;
    Ok(match n {
        Node::Num { val, .. } => Some(val.clone()),
        Node::Neg(x) => exact(x, b)?.map(|v| -v),
        Node::PlusMinus(x) => exact(x, b)?,
        Node::Add(xs) => {
            let mut acc = BigRational::zero();
            for x in xs {
                let Some(v) = exact(x, b)? else {
                    return Ok(None);
                };
                acc = too_large(b, acc + v)?;
            }
            Some(acc)
        }
        Node::Mul(xs) => {
            let mut acc = BigRational::one();
            for x in xs {
                let Some(v) = exact(x, b)? else {
                    return Ok(None);
                };
                acc = too_large(b, acc * v)?;
            }
            Some(acc)
        }
        Node::Div(x, y) => match (exact(x, b)?, exact(y, b)?) {
            (Some(x), Some(y)) if !y.is_zero() => Some(too_large(b, x / y)?),
            _ => None,
        },
        Node::Percent(x) => exact(x, b)?.map(|v| v / BigRational::from_integer(100.into())),
        Node::Pow(x, y) => {
            let Some(base) = exact(x, b)? else {
                return Ok(None);
            };
            // `1^{huge}` is 1 even when the exponent itself is too large to evaluate.
            if base.is_one() {
                return Ok(Some(base));
            }
            let Some(e) = exact(y, b)? else {
                return Ok(None);
            };
            exact_pow(&base, &e, b)?
        }
        Node::Root(k, x) => {
            let (Some(k), Some(x)) = (exact(k, b)?, exact(x, b)?) else {
                return Ok(None);
            };
            if k == BigRational::from_integer(2.into()) && !x.is_negative() {
                let (p, q) = (x.numer().sqrt(), x.denom().sqrt());
                let r = BigRational::new(p, q);
                (&r * &r == x).then_some(r)
            } else {
                None
            }
        }
        Node::Fact(x) => {
            let Some(v) = exact(x, b)? else {
                return Ok(None);
            };
            if !v.is_integer() || v.is_negative() {
                return Ok(None);
            }
            let k = v.to_integer().to_u64().unwrap_or(u64::MAX);
            // log2(k!) < k log2 k: refuse before multiplying.
            if k > 4 && (k as f64) * (k as f64).log2() > b.limits.max_bits as f64 {
                return Err(VerifyError::TooLarge(format!("{k}!")));
            }
            let mut acc = BigInt::one();
            for i in 2..=k {
                b.tick()?;
                acc *= i;
            }
            Some(BigRational::from_integer(acc))
        }
        Node::Binom(x, y) => {
            let (Some(nv), Some(kv)) = (exact(x, b)?, exact(y, b)?) else {
                return Ok(None);
            };
            if !nv.is_integer() || !kv.is_integer() {
                return Ok(None);
            }
            let (Some(nn), Some(kk)) = (nv.to_integer().to_i64(), kv.to_integer().to_i64()) else {
                return Err(VerifyError::TooLarge("binomial arguments".into()));
            };
            if kk < 0 || nn < 0 {
                return Ok(None);
            }
            if kk > nn {
                return Ok(Some(BigRational::zero()));
            }
            let kk = kk.min(nn - kk);
            if kk > 5000 {
                return Err(VerifyError::TooLarge(format!("binom({nn}, {kk})")));
            }
            let mut acc = BigInt::one();
            for i in 0..kk {
                b.tick()?;
                acc = acc * (nn - i) / (i + 1);
                if acc.bits() > b.limits.max_bits {
                    return Err(VerifyError::TooLarge(format!("binom({nn}, {kk})")));
                }
            }
            Some(BigRational::from_integer(acc))
        }
        Node::Func(Func::Abs, x) => exact(x, b)?.map(|v| v.abs()),
        Node::Func(Func::Floor, x) => exact(x, b)?.map(|v| v.floor()),
        Node::Func(Func::Ceil, x) => exact(x, b)?.map(|v| v.ceil()),
        _ => None,
    })
}

fn exact_pow(
    base: &BigRational,
    e: &BigRational,
    b: &Budget,
) -> Result<Option<BigRational>, VerifyError> {
    if !e.is_integer() {
        return Ok(None);
    }
    if base.is_zero() {
        return Ok(if e.is_positive() {
            Some(BigRational::zero())
        } else if e.is_zero() {
            Some(BigRational::one())
        } else {
            None
        });
    }
    if base.abs().is_one() {
        let odd = e.to_integer() % 2 != BigInt::zero();
        return Ok(Some(if base.is_negative() && odd {
            -BigRational::one()
        } else {
            BigRational::one()
        }));
    }
    let ei = e.to_integer();
    let mag = ei.abs().to_u64().unwrap_or(u64::MAX);
    let est = bits(base).saturating_sub(1).max(1).saturating_mul(mag);
    if est > b.limits.max_bits {
        return Err(VerifyError::TooLarge(format!(
            "a power with exponent {}",
            if ei.bits() > 64 {
                "over 2^64".to_string()
            } else {
                ei.to_string()
            }
        )));
    }
    let p = num_traits::pow(base.clone(), mag as usize);
    Ok(Some(if ei.is_negative() { p.recip() } else { p }))
}

/// Numeric value with symbols bound by `env`. Structures (sets, tuples, text) are errors.
pub(crate) fn numeric(n: &Node, env: &dyn Fn(&str) -> f64, b: &Budget) -> Result<C, VerifyError> {
    b.tick()?;
    let ev = |x: &Node| numeric(x, env, b);
    Ok(match n {
        Node::Num { val, .. } => C::real(val.to_f64().unwrap_or(f64::NAN)),
        Node::Sym(s) => C::real(env(s)),
        Node::Pi => C::real(std::f64::consts::PI),
        Node::E => C::real(std::f64::consts::E),
        Node::I => C { re: 0.0, im: 1.0 },
        Node::Inf => C::real(f64::INFINITY),
        Node::Neg(x) => ev(x)?.neg(),
        Node::PlusMinus(x) => ev(x)?,
        Node::Add(xs) => {
            let mut acc = C::real(0.0);
            for x in xs {
                acc = acc.add(ev(x)?);
            }
            acc
        }
        Node::Mul(xs) => {
            let mut acc = C::real(1.0);
            for x in xs {
                acc = acc.mul(ev(x)?);
            }
            acc
        }
        Node::Div(x, y) => ev(x)?.div(ev(y)?),
        Node::Percent(x) => ev(x)?.div(C::real(100.0)),
        Node::Pow(x, y) => ev(x)?.pow(ev(y)?),
        Node::Root(k, x) => {
            let (k, x) = (ev(k)?, ev(x)?);
            // A real odd root of a negative real (`\sqrt[3]{-8} = -2`), as answers mean it.
            if k.im == 0.0 && x.im == 0.0 && x.re < 0.0 && k.re.fract() == 0.0 && k.re % 2.0 != 0.0
            {
                C::real(-(-x.re).powf(1.0 / k.re))
            } else if k.re == 2.0 && k.im == 0.0 && x.im == 0.0 && x.re < 0.0 {
                C {
                    re: 0.0,
                    im: (-x.re).sqrt(),
                }
            } else {
                x.pow(C::real(1.0).div(k))
            }
        }
        Node::Log(base, x) => ev(x)?.ln().div(ev(base)?.ln()),
        Node::Fact(x) => {
            let v = ev(x)?;
            if v.is_real() && v.re >= 0.0 && v.re.fract() == 0.0 && v.re <= 170.0 {
                C::real((2..=v.re as u64).map(|i| i as f64).product())
            } else if v.is_real() {
                // `n!` at a non-integer sample point of a symbolic answer: Γ(n + 1).
                C::real(gamma(v.re + 1.0))
            } else {
                C::NAN
            }
        }
        Node::Binom(x, y) => {
            let (nv, kv) = (ev(x)?, ev(y)?);
            if !(nv.is_real() && kv.is_real()) {
                C::NAN
            } else if kv.re.fract() == 0.0 && (0.0..=1000.0).contains(&kv.re) {
                let mut acc = 1.0;
                for i in 0..kv.re as u64 {
                    acc *= (nv.re - i as f64) / (i as f64 + 1.0);
                }
                C::real(acc)
            } else {
                // Symbolic `\binom{2n}{n}`: Γ(n + 1) / (Γ(k + 1) Γ(n - k + 1)).
                let (n, k) = (nv.re, kv.re);
                C::real(gamma(n + 1.0) / (gamma(k + 1.0) * gamma(n - k + 1.0)))
            }
        }
        Node::Func(f, x) => {
            let v = ev(x)?;
            match f {
                Func::Sin => v.sin(),
                Func::Cos => v.cos(),
                Func::Tan => v.sin().div(v.cos()),
                Func::Cot => v.cos().div(v.sin()),
                Func::Sec => C::real(1.0).div(v.cos()),
                Func::Csc => C::real(1.0).div(v.sin()),
                Func::Asin => v.asin(),
                Func::Acos => v.acos(),
                Func::Atan => v.atan(),
                Func::Sinh => v.exp().add(v.neg().exp().neg()).div(C::real(2.0)),
                Func::Cosh => v.exp().add(v.neg().exp()).div(C::real(2.0)),
                Func::Tanh => {
                    let (a, c) = (v.exp(), v.neg().exp());
                    a.add(c.neg()).div(a.add(c))
                }
                Func::Ln => v.ln(),
                Func::Exp => v.exp(),
                Func::Abs => C::real(v.abs()),
                Func::Floor => v.real_only(f64::floor),
                Func::Ceil => v.real_only(f64::ceil),
            }
        }
        Node::Tuple(_)
        | Node::Set(_)
        | Node::Interval { .. }
        | Node::Union(_)
        | Node::Matrix(_)
        | Node::Rel(..)
        | Node::Text(_) => {
            return Err(VerifyError::Parse {
                text: String::new(),
                msg: "a structure used as a number".into(),
            })
        }
    })
}

/// The gamma function for real arguments: Lanczos approximation (g = 7, nine coefficients, as
/// in Press et al., Numerical Recipes §6.1, and Wikipedia "Lanczos approximation"), with the
/// reflection formula below 1/2. Relative error ~1e-15, enough for identity testing.
fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let s = (std::f64::consts::PI * x).sin();
        return std::f64::consts::PI / (s * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + G + 0.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

/// Collects the free symbols of a node (sorted, deduplicated by the caller).
pub(crate) fn symbols(n: &Node, out: &mut Vec<String>) {
    match n {
        Node::Sym(s) => out.push(s.clone()),
        Node::Num { .. } | Node::Pi | Node::E | Node::I | Node::Inf | Node::Text(_) => {}
        Node::Neg(x) | Node::PlusMinus(x) | Node::Percent(x) | Node::Fact(x) | Node::Func(_, x) => {
            symbols(x, out)
        }
        Node::Div(x, y)
        | Node::Pow(x, y)
        | Node::Log(x, y)
        | Node::Root(x, y)
        | Node::Binom(x, y) => {
            symbols(x, out);
            symbols(y, out);
        }
        Node::Interval { lo, hi, .. } => {
            symbols(lo, out);
            symbols(hi, out);
        }
        Node::Add(xs) | Node::Mul(xs) | Node::Tuple(xs) | Node::Set(xs) | Node::Union(xs) => {
            xs.iter().for_each(|x| symbols(x, out))
        }
        Node::Rel(xs, _) => xs.iter().for_each(|x| symbols(x, out)),
        Node::Matrix(rows) => rows.iter().flatten().for_each(|x| symbols(x, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use crate::Limits;

    fn ex(s: &str) -> Result<Option<BigRational>, VerifyError> {
        let l = Limits::default();
        let b = Budget::new(&l);
        let n = parse(s, &b).unwrap();
        exact(&n, &b)
    }

    fn num(s: &str) -> C {
        let l = Limits::default();
        let b = Budget::new(&l);
        let n = parse(s, &b).unwrap();
        numeric(&n, &|_| 1.5, &b).unwrap()
    }

    fn r(a: i64, b: i64) -> Option<BigRational> {
        Some(BigRational::new(a.into(), b.into()))
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(ex("\\frac{1}{2}+\\frac{1}{3}").unwrap(), r(5, 6));
        assert_eq!(ex("2^{-3}").unwrap(), r(1, 8));
        assert_eq!(ex("\\sqrt{\\frac{9}{4}}").unwrap(), r(3, 2));
        assert_eq!(ex("\\sqrt{2}").unwrap(), None);
        assert_eq!(ex("5!").unwrap(), r(120, 1));
        assert_eq!(ex("\\binom{10}{3}").unwrap(), r(120, 1));
        assert_eq!(ex("0.15").unwrap(), r(3, 20));
        assert_eq!(ex("x+1").unwrap(), None);
        assert_eq!(ex("2^{100}").unwrap().map(|v| v.numer().bits()), Some(101));
    }

    #[test]
    fn exact_refuses_huge_numbers() {
        assert!(matches!(
            ex("10^{10^{10^{10}}}"),
            Err(VerifyError::TooLarge(_))
        ));
        assert!(matches!(ex("100000!"), Err(VerifyError::TooLarge(_))));
        assert_eq!(ex("1^{10^{10^{10}}}").unwrap(), r(1, 1));
    }

    #[test]
    fn numeric_values() {
        let close = |a: C, re: f64, im: f64| (a.re - re).abs() < 1e-12 && (a.im - im).abs() < 1e-12;
        assert!(close(num("e^{i\\pi}"), -1.0, 0.0));
        assert!(close(num("\\sqrt{-4}"), 0.0, 2.0));
        assert!(close(num("\\sqrt[3]{-8}"), -2.0, 0.0));
        assert!(close(num("\\log_2 8"), 3.0, 0.0));
        assert!(close(num("\\sin^2 x + \\cos^2 x"), 1.0, 0.0));
        assert!(close(num("(1+i)^2"), 0.0, 2.0));
        // Principal complex value, as sympy gives: asin 2 = π/2 - i ln(2 + √3).
        assert!(close(
            num("\\arcsin 2"),
            std::f64::consts::FRAC_PI_2,
            -(2.0 + 3f64.sqrt()).ln()
        ));
        assert!((gamma(5.0) - 24.0).abs() < 1e-12);
        assert!((gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-12);
        assert!((gamma(-0.5) + 2.0 * std::f64::consts::PI.sqrt()).abs() < 1e-12);
    }
}
