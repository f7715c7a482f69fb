//! Parser unit tests: TeX argument rules, mixed numbers, structures, functions, errors.

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
