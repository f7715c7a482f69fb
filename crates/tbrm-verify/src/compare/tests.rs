//! Unit tests of the comparison steps: sample points, inequalities as intervals, `\pm`
//! limits, exact before numeric comparison.

use super::numeric::sample;
use super::relation::inequality_interval;
use super::sets::is_infinite;
use super::*;

#[test]
fn samples_are_deterministic_and_spread() {
    assert_eq!(sample("x", 3), sample("x", 3));
    assert_ne!(sample("x", 0), sample("y", 0));
    let vals: Vec<f64> = (0..50).map(|t| sample("k", t)).collect();
    assert!(vals.iter().all(|v| (0.37..=2.27).contains(&v.abs())));
    assert!(vals.iter().any(|v| *v < 0.0) && vals.iter().any(|v| *v > 0.0));
}

#[test]
fn inequalities_become_intervals() {
    let l = Limits::default();
    let b = Budget::new(&l);
    let interval = |s: &str| match canon(parse(s, &b).unwrap(), &b).unwrap() {
        Node::Rel(xs, ops) => inequality_interval(&xs, &ops),
        other => panic!("{s}: not kept as a relation: {other:?}"),
    };
    assert!(matches!(
        interval("x \\ge 3"),
        Some(Node::Interval {
            lo_closed: true,
            hi_closed: false,
            ..
        })
    ));
    assert!(matches!(
        interval("5 > x"),
        Some(Node::Interval { lo_closed: false, hi_closed: false, ref lo, .. }) if is_infinite(lo)
    ));
    // `-x > -1` is `x < 1`.
    assert!(matches!(
        interval("-x > -1"),
        Some(Node::Interval { hi_closed: false, ref lo, .. }) if is_infinite(lo)
    ));
    assert_eq!(interval("x + y > 1"), None);
    let n = canon(parse("1 \\pm \\sqrt{2}", &b).unwrap(), &b).unwrap();
    assert!(matches!(n, Node::Set(v) if v.len() == 2));
    let n = canon(parse("x \\in [1,2)", &b).unwrap(), &b).unwrap();
    assert!(matches!(n, Node::Interval { .. }));
}

#[test]
fn too_many_pm_is_an_error() {
    let l = Limits::default();
    let b = Budget::new(&l);
    let n = parse("1\\pm2\\pm3\\pm4\\pm5\\pm6", &b).unwrap();
    assert!(matches!(canon(n, &b), Err(VerifyError::TooLarge(_))));
}

#[test]
fn exact_before_numeric() {
    // Differ by 1 in 10^30: exact rationals tell them apart where floats could not.
    assert!(!crate::verify("10^{30}+1", "10^{30}").correct);
    assert!(crate::verify("10^{30}", "1000000000000000000000000000000").correct);
}
