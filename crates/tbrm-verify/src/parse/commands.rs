//! LaTeX commands (`\frac`, `\sqrt`, `\{`, `\langle`, `\lfloor`, Greek letters, ...) and
//! function names (`\sin^2 x`, `\log_2 8`, `\ln(x)`), written with or without a backslash.

use super::lexer::Tok;
use super::{int, mul_of, Func, Node, Parser};
use crate::VerifyError;

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

impl Parser<'_, '_> {
    pub(super) fn word(&mut self, w: &str) -> Result<Node, VerifyError> {
        Ok(match w {
            "pi" => Node::Pi,
            "infty" | "inf" | "infinity" => Node::Inf,
            "sqrt" => self.command("sqrt")?,
            _ => match func_by_name(w) {
                Some(f) => self.function(f)?,
                None => {
                    if w.chars().all(|c| c.is_ascii_alphabetic()) && w.len() > 1 {
                        Node::Text(w.to_string())
                    } else {
                        return Err(self.err(format!("unknown operator `{w}`")));
                    }
                }
            },
        })
    }

    pub(super) fn command(&mut self, name: &str) -> Result<Node, VerifyError> {
        Ok(match name {
            "frac" => {
                let a = self.script_arg()?;
                let b = self.script_arg()?;
                Node::Div(Box::new(a), Box::new(b))
            }
            "binom" => {
                let a = self.script_arg()?;
                let b = self.script_arg()?;
                Node::Binom(Box::new(a), Box::new(b))
            }
            "sqrt" => {
                let index = if self.eat_ch('[') {
                    let i = self.expr()?;
                    self.expect_ch(']')?;
                    i
                } else {
                    int(2)
                };
                let arg = self.script_arg()?;
                Node::Root(Box::new(index), Box::new(arg))
            }
            "pi" => Node::Pi,
            "infty" | "infin" => Node::Inf,
            "imath" => Node::I,
            "emptyset" | "varnothing" => Node::Set(vec![]),
            "{" | "lbrace" => {
                let close = if name == "{" { "}" } else { "rbrace" };
                let mut items = Vec::new();
                if !self.eat_cmd(close) {
                    items.push(self.union()?);
                    while self.eat_ch(',') || self.eat_ch(';') {
                        items.push(self.union()?);
                    }
                    if !self.eat_cmd(close) {
                        return Err(self.err("unclosed \\{"));
                    }
                }
                Node::Set(items)
            }
            "langle" => {
                let mut items = vec![self.union()?];
                while self.eat_ch(',') {
                    items.push(self.union()?);
                }
                if !self.eat_cmd("rangle") {
                    return Err(self.err("unclosed \\langle"));
                }
                Node::Tuple(items)
            }
            "lfloor" | "lceil" => {
                let inner = self.expr()?;
                let (close, f) = if name == "lfloor" {
                    ("rfloor", Func::Floor)
                } else {
                    ("rceil", Func::Ceil)
                };
                if !self.eat_cmd(close) {
                    return Err(self.err(format!("unclosed \\{name}")));
                }
                Node::Func(f, Box::new(inner))
            }
            "|" => {
                let inner = self.expr()?;
                if !self.eat_cmd("|") {
                    return Err(self.err("unclosed \\|"));
                }
                Node::Func(Func::Abs, Box::new(inner))
            }
            "log" => self.function(FuncName::Log)?,
            "lg" => self.function(FuncName::Log)?,
            g if GREEK.contains(&g) => {
                if self.eat_ch('_') {
                    let sub = self.subscript_name()?;
                    Node::Sym(format!("{g}_{sub}"))
                } else {
                    Node::Sym(g.to_string())
                }
            }
            "cdots" | "ldots" | "dots" | "cdot" | "vdots" => {
                return Err(self.err(format!("`\\{name}` here cannot be checked")))
            }
            other => match func_by_name(other) {
                Some(f) => self.function(f)?,
                // Any other command names a quantity (`\hbar`, `\odot`, `\prime`): a symbol,
                // so both sides must use the same one.
                None if other.chars().all(|c| c.is_ascii_alphabetic()) => {
                    Node::Sym(format!("\\{other}"))
                }
                None => return Err(self.err(format!("unknown command `\\{other}`"))),
            },
        })
    }

    /// `\sin x`, `\sin^2(x)`, `\sin^{-1} x`, `\log_2 8`, `\ln(x)`.
    fn function(&mut self, f: FuncName) -> Result<Node, VerifyError> {
        self.enter()?;
        let mut power = None;
        let mut base = None;
        let mut f = f;
        for _ in 0..2 {
            if self.eat_ch('^') {
                let p = self.script_arg()?;
                if p == Node::Neg(Box::new(int(1))) {
                    f = match f {
                        FuncName::F(Func::Sin) => FuncName::F(Func::Asin),
                        FuncName::F(Func::Cos) => FuncName::F(Func::Acos),
                        FuncName::F(Func::Tan) => FuncName::F(Func::Atan),
                        _ => {
                            power = Some(p);
                            f
                        }
                    };
                } else {
                    power = Some(p);
                }
            } else if self.eat_ch('_') {
                base = Some(self.script_arg()?);
            }
        }
        let arg = if matches!(self.peek(), Some(Tok::Ch('('))) {
            self.pos += 1;
            let a = self.expr()?;
            self.expect_ch(')')?;
            a
        } else {
            // `\sin 2x`: a number then letters form the argument, as in handwriting.
            let mut factors = vec![self.power()?];
            while matches!(self.peek(), Some(Tok::Letter(_))) {
                factors.push(self.power()?);
            }
            mul_of(factors)
        };
        let node = match f {
            FuncName::F(func) => Node::Func(func, Box::new(arg)),
            FuncName::Log => match base {
                Some(b) => Node::Log(Box::new(b), Box::new(arg)),
                // Math-Verify (sympy) reads a bare `\log` as the natural logarithm.
                None => Node::Func(Func::Ln, Box::new(arg)),
            },
        };
        self.depth -= 1;
        Ok(match power {
            Some(p) => Node::Pow(Box::new(node), Box::new(p)),
            None => node,
        })
    }
}

#[derive(Clone, Copy)]
enum FuncName {
    F(Func),
    Log,
}

fn func_by_name(n: &str) -> Option<FuncName> {
    Some(FuncName::F(match n {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" => Func::Tan,
        "cot" => Func::Cot,
        "sec" => Func::Sec,
        "csc" => Func::Csc,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "ln" => Func::Ln,
        "exp" => Func::Exp,
        "log" => return Some(FuncName::Log),
        _ => return None,
    }))
}
