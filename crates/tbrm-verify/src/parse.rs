//! A LaTeX / plain-text math parser producing [`Node`] trees: numbers as exact rationals,
//! symbols, constants (`\pi`, `e`, `i`, `\infty`), arithmetic with implicit multiplication,
//! powers, roots, functions, factorials, percent, `\pm`, relations, and the answer structures
//! (bare lists, sets, tuples, intervals, unions, matrices, text). Recursive descent with a depth
//! cap and a budget tick per token, so hostile inputs end in an error rather than a stack overflow
//! or a hang. TeX argument rules are followed: `\frac12`, `\sqrt2` and `x^23` take one character.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

use crate::budget::Budget;
use crate::VerifyError;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
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

/// Relation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

/// Elementary functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Exp,
    Abs,
    Floor,
    Ceil,
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A number literal; `decimal` marks literals written with a decimal point, which
    /// Math-Verify compares after rounding to 6 places.
    Num {
        val: BigRational,
        decimal: bool,
    },
    Sym(String),
    Pi,
    E,
    I,
    Inf,
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Neg(Box<Node>),
    Div(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    /// `Log(base, arg)`; `\ln` is `Func(Ln)`.
    Log(Box<Node>, Box<Node>),
    /// `Root(index, radicand)`.
    Root(Box<Node>, Box<Node>),
    Fact(Box<Node>),
    Binom(Box<Node>, Box<Node>),
    Percent(Box<Node>),
    /// `±x`, expanded into a set before comparison.
    PlusMinus(Box<Node>),
    Tuple(Vec<Node>),
    Set(Vec<Node>),
    Interval {
        lo: Box<Node>,
        hi: Box<Node>,
        lo_closed: bool,
        hi_closed: bool,
    },
    Union(Vec<Node>),
    Matrix(Vec<Vec<Node>>),
    /// `operands[0] ops[0] operands[1] ops[1] ...`
    Rel(Vec<Node>, Vec<RelOp>),
    Text(String),
}

const WORDS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "ln", "log", "exp", "sqrt", "pi", "infty", "inf",
];

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

fn parse_err(text: &str, msg: impl Into<String>) -> VerifyError {
    let mut t: String = text.chars().take(80).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    VerifyError::Parse {
        text: t,
        msg: msg.into(),
    }
}

fn tokenize(s: &str, budget: &Budget) -> Result<Vec<Tok>, VerifyError> {
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
fn decimal_value(s: &str) -> Option<BigRational> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = format!("{int}{frac}");
    let num = BigInt::parse_bytes(digits.as_bytes(), 10)?;
    let den = num_traits::pow(BigInt::from(10), frac.len());
    Some(BigRational::new(num, den))
}

struct Parser<'a, 'b> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    src: &'a str,
    budget: &'b Budget<'b>,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_ch(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Ch(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_cmd(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Cmd(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn err(&self, msg: impl Into<String>) -> VerifyError {
        parse_err(self.src, msg)
    }

    fn enter(&mut self) -> Result<(), VerifyError> {
        self.budget.tick()?;
        self.depth += 1;
        if self.depth > self.budget.limits.max_depth {
            return Err(VerifyError::TooDeep(self.budget.limits.max_depth));
        }
        Ok(())
    }

    fn expect_ch(&mut self, c: char) -> Result<(), VerifyError> {
        if self.eat_ch(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected `{c}`, found {:?}", self.peek())))
        }
    }

    /// Top level: a comma-separated list (a bare list is a set of answers).
    fn list(&mut self) -> Result<Node, VerifyError> {
        let mut items = vec![self.union()?];
        while self.eat_ch(',') || self.eat_ch(';') {
            // `6, 8, , 10` (from "6, 8, and 10"): empty items are skipped.
            while self.eat_ch(',') {}
            if self.peek().is_none() {
                break;
            }
            items.push(self.union()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::Set(vec![]))
        } else {
            Node::Set(items)
        })
    }

    fn union(&mut self) -> Result<Node, VerifyError> {
        let mut parts = vec![self.relation()?];
        while self.eat_cmd("cup") {
            parts.push(self.relation()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Node::Set(vec![]))
        } else {
            Node::Union(parts)
        })
    }

    fn rel_op(&mut self) -> Option<RelOp> {
        let op = match self.peek()? {
            Tok::Ch('=') => RelOp::Eq,
            Tok::Ch('<') => RelOp::Lt,
            Tok::Ch('>') => RelOp::Gt,
            Tok::Cmd(n) => match n.as_str() {
                "le" | "leq" | "leqslant" => RelOp::Le,
                "ge" | "geq" | "geqslant" => RelOp::Ge,
                "lt" => RelOp::Lt,
                "gt" => RelOp::Gt,
                "ne" | "neq" => RelOp::Ne,
                "equiv" => RelOp::Eq,
                "in" => RelOp::In,
                _ => return None,
            },
            _ => return None,
        };
        self.pos += 1;
        // `<=`, `>=`, `!=` written in ASCII.
        Some(match op {
            RelOp::Lt if self.eat_ch('=') => RelOp::Le,
            RelOp::Gt if self.eat_ch('=') => RelOp::Ge,
            o => o,
        })
    }

    fn relation(&mut self) -> Result<Node, VerifyError> {
        let first = self.expr()?;
        let mut operands = vec![first];
        let mut ops = Vec::new();
        loop {
            if self.eat_cmd("approx") || self.eat_cmd("simeq") || self.eat_cmd("thickapprox") {
                // An approximation: the exact value before it counts (`x = 1/3 \approx 0.33` is
                // `x = 1/3`, `\frac13 \approx 0.33` is 1/3), except after a lone name
                // (`x \approx 11` gives the value 11), as Math-Verify reads it.
                let approx = self.expr()?;
                if ops.is_empty() && is_label(&operands[0]) {
                    ops.push(RelOp::Eq);
                    operands.push(approx);
                }
                continue;
            }
            let Some(op) = self.rel_op() else { break };
            ops.push(op);
            operands.push(self.expr()?);
        }
        Ok(if ops.is_empty() {
            operands.pop().unwrap_or(Node::Set(vec![]))
        } else {
            Node::Rel(operands, ops)
        })
    }

    fn expr(&mut self) -> Result<Node, VerifyError> {
        self.enter()?;
        let mut terms = vec![self.term()?];
        loop {
            if self.eat_ch('+') {
                terms.push(self.term()?);
            } else if self.eat_ch('-') {
                terms.push(Node::Neg(Box::new(self.term()?)));
            } else if self.eat_cmd("pm") || self.eat_cmd("mp") {
                terms.push(Node::PlusMinus(Box::new(self.term()?)));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Node::Set(vec![]))
        } else {
            Node::Add(terms)
        })
    }

    /// Whether the next token can begin an implicitly multiplied factor.
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Letter(_) | Tok::Word(_) | Tok::Begin(_)) => true,
            Some(Tok::Ch('(' | '{' | '[')) => true,
            Some(Tok::Cmd(n)) => !matches!(
                n.as_str(),
                "cdot"
                    | "times"
                    | "div"
                    | "pm"
                    | "mp"
                    | "cup"
                    | "le"
                    | "leq"
                    | "ge"
                    | "geq"
                    | "lt"
                    | "gt"
                    | "ne"
                    | "neq"
                    | "in"
                    | "approx"
                    | "simeq"
                    | "thickapprox"
                    | "equiv"
                    | "leqslant"
                    | "geqslant"
                    | "}"
                    | "\\"
                    | "rbrace"
                    | "rangle"
                    | "rfloor"
                    | "rceil"
            ),
            _ => false,
        }
    }

    fn term(&mut self) -> Result<Node, VerifyError> {
        self.enter()?;
        let mut factors = vec![self.unary()?];
        loop {
            self.budget.tick()?;
            if self.eat_ch('*') || self.eat_cmd("cdot") || self.eat_cmd("times") {
                factors.push(self.unary()?);
            } else if self.eat_ch('/') || self.eat_cmd("div") || self.eat_ch(':') {
                // A ratio `1:4` is read as the quotient, as latex2sympy does.
                let den = self.unary()?;
                let num = mul_of(std::mem::take(&mut factors));
                factors.push(Node::Div(Box::new(num), Box::new(den)));
            } else if self.starts_factor() {
                let is_frac = matches!(self.peek(), Some(Tok::Cmd(n)) if n == "frac");
                let f = self.power()?;
                // Mixed number `2\frac{1}{2}` = 2 + 1/2 (MATH writes `1\frac{4}{5}`).
                if is_frac && factors.len() == 1 {
                    if let Some(m) = mixed_number(&factors[0], &f) {
                        factors[0] = m;
                        continue;
                    }
                }
                factors.push(f);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(mul_of(factors))
    }

    fn unary(&mut self) -> Result<Node, VerifyError> {
        self.enter()?;
        let n = if self.eat_ch('-') {
            Node::Neg(Box::new(self.unary()?))
        } else if self.eat_ch('+') {
            self.unary()?
        } else if self.eat_cmd("pm") || self.eat_cmd("mp") {
            Node::PlusMinus(Box::new(self.unary()?))
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(n)
    }

    fn power(&mut self) -> Result<Node, VerifyError> {
        let base = self.postfix()?;
        if self.eat_ch('^') {
            let e = self.exponent_chain()?;
            let p = Node::Pow(Box::new(base), Box::new(e));
            return self.postfix_ops(p);
        }
        Ok(base)
    }

    /// `2^3^4` (invalid TeX, common in plain text) is read right-associatively; each level
    /// counts against the depth cap.
    fn exponent_chain(&mut self) -> Result<Node, VerifyError> {
        let e = self.script_arg()?;
        if self.eat_ch('^') {
            self.enter()?;
            let rest = self.exponent_chain()?;
            self.depth -= 1;
            return Ok(Node::Pow(Box::new(e), Box::new(rest)));
        }
        Ok(e)
    }

    fn postfix(&mut self) -> Result<Node, VerifyError> {
        let p = self.primary()?;
        self.postfix_ops(p)
    }

    fn postfix_ops(&mut self, mut p: Node) -> Result<Node, VerifyError> {
        loop {
            if self.eat_ch('!') {
                p = Node::Fact(Box::new(p));
            } else if self.eat_ch('%') {
                p = Node::Percent(Box::new(p));
            } else {
                return Ok(p);
            }
        }
    }

    /// The argument of `^`, `_`, `\frac`, `\sqrt`: a braced group or one TeX token.
    fn script_arg(&mut self) -> Result<Node, VerifyError> {
        self.enter()?;
        let n = match self.peek().cloned() {
            Some(Tok::Ch('{')) => {
                self.pos += 1;
                let inner = self.list()?;
                self.expect_ch('}')?;
                inner
            }
            Some(Tok::Num(s)) if s.len() > 1 => {
                // TeX reads one character: `x^23` is `x^2 3`, `\frac12` is `\frac{1}{2}`.
                let (first, rest) = s.split_at(1);
                self.toks[self.pos] = Tok::Num(rest.to_string());
                if first == "." {
                    return Err(self.err("a lone `.` as an argument"));
                }
                Node::Num {
                    val: decimal_value(first).ok_or_else(|| self.err("bad digit"))?,
                    decimal: false,
                }
            }
            Some(Tok::Ch('-')) => {
                self.pos += 1;
                Node::Neg(Box::new(self.script_arg()?))
            }
            Some(Tok::Ch('(')) => self.primary()?,
            Some(_) => self.primary()?,
            None => return Err(self.err("missing argument at the end")),
        };
        self.depth -= 1;
        Ok(n)
    }

    fn subscript_name(&mut self) -> Result<String, VerifyError> {
        // The subscript only names a symbol (`x_1`, `a_{n+1}`): keep its tokens as text.
        let start = self.pos;
        self.script_arg()?;
        Ok(self.toks[start..self.pos]
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(""))
    }

    fn primary(&mut self) -> Result<Node, VerifyError> {
        self.enter()?;
        let tok = self
            .next()
            .ok_or_else(|| self.err("unexpected end of answer"))?;
        let n = match tok {
            Tok::Num(s) => {
                let val = decimal_value(&s).ok_or_else(|| self.err("bad number"))?;
                if self.eat_ch('_') {
                    // A base subscript the normaliser did not remove: the digits stay.
                    self.script_arg()?;
                }
                Node::Num {
                    val,
                    decimal: s.contains('.'),
                }
            }
            Tok::Letter(c) => {
                if self.eat_ch('_') {
                    let sub = self.subscript_name()?;
                    Node::Sym(format!("{c}_{sub}"))
                } else {
                    match c {
                        'e' => Node::E,
                        'i' => Node::I,
                        _ => Node::Sym(c.to_string()),
                    }
                }
            }
            Tok::Word(w) => self.word(&w)?,
            Tok::Text(t) => Node::Text(t),
            Tok::Cmd(name) => self.command(&name)?,
            Tok::Ch('(') => self.bracket('(')?,
            Tok::Ch('[') => self.bracket('[')?,
            Tok::Ch('{') => {
                let inner = self.list()?;
                self.expect_ch('}')?;
                inner
            }
            Tok::Ch('|') => {
                let inner = self.expr()?;
                self.expect_ch('|')?;
                Node::Func(Func::Abs, Box::new(inner))
            }
            Tok::Begin(env) => self.matrix(&env)?,
            t => return Err(self.err(format!("unexpected {t:?}"))),
        };
        self.depth -= 1;
        Ok(n)
    }

    fn word(&mut self, w: &str) -> Result<Node, VerifyError> {
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

    fn command(&mut self, name: &str) -> Result<Node, VerifyError> {
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

    fn bracket(&mut self, open: char) -> Result<Node, VerifyError> {
        if self.eat_ch(')') || self.eat_ch(']') {
            return Ok(Node::Tuple(vec![]));
        }
        let mut items = vec![self.union()?];
        // `(0;-2;6)`: coordinates separated by semicolons, as in the European convention.
        while self.eat_ch(',') || self.eat_ch(';') {
            items.push(self.union()?);
        }
        let close = match self.next() {
            Some(Tok::Ch(c @ (')' | ']'))) => c,
            other => return Err(self.err(format!("expected a closing bracket, found {other:?}"))),
        };
        Ok(match items.len() {
            1 if open == '(' && close == ')' || open == '[' && close == ']' => {
                items.pop().unwrap_or(Node::Set(vec![]))
            }
            _ if (open == '(') != (close == ')') && items.len() != 2 => {
                return Err(self.err("mismatched brackets around a list"))
            }
            2 if !(open == '(' && close == ')') => {
                let hi = items.pop().unwrap_or(Node::Set(vec![]));
                let lo = items.pop().unwrap_or(Node::Set(vec![]));
                Node::Interval {
                    lo: Box::new(lo),
                    hi: Box::new(hi),
                    lo_closed: open == '[',
                    hi_closed: close == ']',
                }
            }
            _ => Node::Tuple(items),
        })
    }

    fn matrix(&mut self, env: &str) -> Result<Node, VerifyError> {
        if !matches!(
            env,
            "pmatrix" | "bmatrix" | "matrix" | "Bmatrix" | "vmatrix" | "smallmatrix" | "array"
        ) {
            return Err(self.err(format!("environment `{env}` cannot be checked")));
        }
        if env == "array" && self.eat_ch('{') {
            // Column specification such as `{cc}`.
            while let Some(t) = self.next() {
                self.budget.tick()?;
                if t == Tok::Ch('}') {
                    break;
                }
            }
        }
        let mut rows = Vec::new();
        loop {
            let mut row = vec![self.union()?];
            while self.eat_ch('&') {
                row.push(self.union()?);
            }
            rows.push(row);
            if self.eat_cmd("\\") {
                if matches!(self.peek(), Some(Tok::End(_))) {
                    break;
                }
                continue;
            }
            break;
        }
        match self.next() {
            Some(Tok::End(e)) if e == env => {}
            other => return Err(self.err(format!("expected \\end{{{env}}}, found {other:?}"))),
        }
        let w = rows[0].len();
        if rows.iter().any(|r| r.len() != w) {
            return Err(self.err("matrix rows of different lengths"));
        }
        Ok(Node::Matrix(rows))
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

/// A name standing for a value: `x`, `AB` (a product of letters), `(p,q)` (a tuple of names),
/// as on the left of `x = 5`, `(p,q) = (3,2)`.
pub(crate) fn is_label(n: &Node) -> bool {
    match n {
        Node::Sym(_) => true,
        Node::Mul(fs) => fs.iter().all(|f| matches!(f, Node::Sym(_))),
        Node::Tuple(xs) => !xs.is_empty() && xs.iter().all(|x| matches!(x, Node::Sym(_))),
        _ => false,
    }
}

pub(crate) fn int(v: i64) -> Node {
    Node::Num {
        val: BigRational::from_integer(BigInt::from(v)),
        decimal: false,
    }
}

fn mul_of(mut factors: Vec<Node>) -> Node {
    if factors.len() == 1 {
        factors.pop().unwrap_or(Node::Set(vec![]))
    } else {
        Node::Mul(factors)
    }
}

fn int_literal(n: &Node) -> Option<&BigRational> {
    match n {
        Node::Num {
            val,
            decimal: false,
        } if val.is_integer() && !val.is_zero() => Some(val),
        _ => None,
    }
}

/// `2\frac{1}{2}` → 5/2 and `-2\frac12` → -5/2, only for integer literals.
fn mixed_number(whole: &Node, frac: &Node) -> Option<Node> {
    let Node::Div(a, b) = frac else { return None };
    let (a, b) = (int_literal(a)?, int_literal(b)?);
    if a >= b {
        return None;
    }
    let f = a / b;
    match whole {
        Node::Neg(w) => {
            let w = int_literal(w)?;
            Some(Node::Neg(Box::new(Node::Num {
                val: w + f,
                decimal: false,
            })))
        }
        w => {
            let w = int_literal(w)?;
            (w > &BigRational::zero()).then(|| Node::Num {
                val: w + f,
                decimal: false,
            })
        }
    }
}

/// Parses a normalised answer.
pub(crate) fn parse(s: &str, budget: &Budget) -> Result<Node, VerifyError> {
    let toks = tokenize(s, budget)?;
    if toks.is_empty() {
        return Err(parse_err(s, "empty answer"));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        src: s,
        budget,
    };
    let n = p.list()?;
    if p.pos < p.toks.len() {
        return Err(p.err(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn p(s: &str) -> Node {
        let l = Limits::default();
        let b = Budget::new(&l);
        parse(s, &b).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn perr(s: &str) -> VerifyError {
        let l = Limits::default();
        let b = Budget::new(&l);
        parse(s, &b).expect_err(s)
    }

    fn q(a: i64, b: i64) -> Node {
        Node::Num {
            val: BigRational::new(a.into(), b.into()),
            decimal: false,
        }
    }

    #[test]
    fn tex_single_token_arguments() {
        assert_eq!(p("\\frac12"), Node::Div(Box::new(int(1)), Box::new(int(2))));
        assert_eq!(
            p("\\frac 59"),
            Node::Div(Box::new(int(5)), Box::new(int(9)))
        );
        assert_eq!(
            p("\\frac{270}7"),
            Node::Div(Box::new(int(270)), Box::new(int(7)))
        );
        assert_eq!(
            p("x^23"),
            Node::Mul(vec![
                Node::Pow(Box::new(Node::Sym("x".into())), Box::new(int(2))),
                int(3)
            ])
        );
    }

    #[test]
    fn mixed_numbers_and_decimals() {
        assert_eq!(p("2\\frac{1}{2}"), q(5, 2));
        assert_eq!(p("137 \\frac{1}{2}"), q(275, 2));
        assert_eq!(p("-1\\frac{4}{5}"), Node::Neg(Box::new(q(9, 5))));
        assert_eq!(
            p(".5"),
            Node::Num {
                val: BigRational::new(1.into(), 2.into()),
                decimal: true
            }
        );
        // Not a mixed number: the fraction has a variable.
        assert!(matches!(p("2\\frac{x}{3}"), Node::Mul(_)));
    }

    #[test]
    fn structures() {
        assert!(matches!(
            p("(3,4]"),
            Node::Interval {
                lo_closed: false,
                hi_closed: true,
                ..
            }
        ));
        assert!(matches!(p("(1,2)"), Node::Tuple(v) if v.len() == 2));
        assert!(matches!(p("(6,31,-1)"), Node::Tuple(v) if v.len() == 3));
        assert!(matches!(p("3, 5, 7"), Node::Set(v) if v.len() == 3));
        assert!(matches!(p("\\{1,2\\}"), Node::Set(v) if v.len() == 2));
        assert!(matches!(p("(0,9) \\cup (9,36)"), Node::Union(v) if v.len() == 2));
        assert!(matches!(p("x=5"), Node::Rel(_, ops) if ops == [RelOp::Eq]));
        assert!(matches!(p("1 < x \\le 2"), Node::Rel(_, ops) if ops == [RelOp::Lt, RelOp::Le]));
        assert!(
            matches!(p("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"), Node::Matrix(r) if r.len() == 2 && r[0].len() == 2)
        );
        assert!(
            matches!(p("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}"), Node::Matrix(r) if r.len() == 3)
        );
    }

    #[test]
    fn functions_and_constants() {
        assert!(matches!(p("\\sin^2 x"), Node::Pow(..)));
        assert!(matches!(p("\\sin^{-1}(x)"), Node::Func(Func::Asin, _)));
        assert!(matches!(p("\\log_2 8"), Node::Log(..)));
        assert!(matches!(p("\\ln(x)"), Node::Func(Func::Ln, _)));
        assert!(matches!(p("\\cot x"), Node::Func(Func::Cot, _)));
        assert!(matches!(p("\\sqrt[3]{x}"), Node::Root(..)));
        assert_eq!(p("e"), Node::E);
        assert_eq!(p("\\pi"), Node::Pi);
        assert!(matches!(p("x_1 + x_{2}"), Node::Add(_)));
        assert!(matches!(p("5!"), Node::Fact(_)));
        assert!(matches!(p("50%"), Node::Percent(_)));
        assert!(matches!(p("|x-1|"), Node::Func(Func::Abs, _)));
    }

    #[test]
    fn errors_not_panics() {
        assert!(matches!(perr("\\frac{1}{"), VerifyError::Parse { .. }));
        assert!(matches!(perr("(1,2"), VerifyError::Parse { .. }));
        assert!(matches!(perr("\\frac{2}"), VerifyError::Parse { .. }));
        assert!(matches!(perr("1+"), VerifyError::Parse { .. }));
        assert!(matches!(perr(&"(".repeat(5000)), VerifyError::TooDeep(_)));
        assert!(matches!(perr(&"9".repeat(5000)), VerifyError::TooLarge(_)));
    }
}
