//! The recursive descent, from the top-level list down to a primary: relations, sums,
//! products with implicit multiplication and mixed numbers, powers, postfix `!` and `%`, TeX
//! arguments, brackets (tuples and intervals) and matrix environments. The token-stepping helpers
//! come first; LaTeX commands and function names are read in [`super::commands`].

use num_rational::BigRational;
use num_traits::Zero;

use super::lexer::{decimal_value, Tok};
use super::{is_label, mul_of, parse_err, Func, Node, Parser, RelOp};
use crate::VerifyError;

impl Parser<'_, '_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    pub(super) fn eat_ch(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Ch(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn eat_cmd(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Cmd(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn err(&self, msg: impl Into<String>) -> VerifyError {
        parse_err(self.src, msg)
    }

    pub(super) fn enter(&mut self) -> Result<(), VerifyError> {
        self.budget.tick()?;
        self.depth += 1;
        if self.depth > self.budget.limits.max_depth {
            return Err(VerifyError::TooDeep(self.budget.limits.max_depth));
        }
        Ok(())
    }

    pub(super) fn expect_ch(&mut self, c: char) -> Result<(), VerifyError> {
        if self.eat_ch(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected `{c}`, found {:?}", self.peek())))
        }
    }

    /// Top level: a comma-separated list (a bare list is a set of answers).
    pub(super) fn list(&mut self) -> Result<Node, VerifyError> {
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

    pub(super) fn union(&mut self) -> Result<Node, VerifyError> {
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

    pub(super) fn expr(&mut self) -> Result<Node, VerifyError> {
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

    pub(super) fn power(&mut self) -> Result<Node, VerifyError> {
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
    pub(super) fn script_arg(&mut self) -> Result<Node, VerifyError> {
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

    pub(super) fn subscript_name(&mut self) -> Result<String, VerifyError> {
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
