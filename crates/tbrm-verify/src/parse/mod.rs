//! A LaTeX / plain-text math parser producing [`Node`] trees: numbers as exact rationals,
//! symbols, constants (`\pi`, `e`, `i`, `\infty`), arithmetic with implicit multiplication,
//! powers, roots, functions, factorials, percent, `\pm`, relations, and the answer structures
//! (bare lists, sets, tuples, intervals, unions, matrices, text). Recursive descent with a depth
//! cap and a budget tick per token, so hostile inputs end in an error rather than a stack overflow
//! or a hang. TeX argument rules are followed: `\frac12`, `\sqrt2` and `x^23` take one character.
//!
//! The pieces: `lexer` turns the text into tokens, `grammar` is the recursive descent from a
//! list down to a primary (brackets, intervals, matrices), `commands` reads LaTeX commands and
//! function names, and this file holds the tree types, the entry point and the `Parser` state.

mod commands;
mod grammar;
mod lexer;
#[cfg(test)]
mod tests;

use num_bigint::BigInt;
use num_rational::BigRational;

use crate::budget::Budget;
use crate::VerifyError;

use lexer::{tokenize, Tok};

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

/// Parser state: the tokens, the position in them, the nesting depth (capped) and the budget.
struct Parser<'a, 'b> {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    src: &'a str,
    budget: &'b Budget<'b>,
}

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
