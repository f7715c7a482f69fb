//! Bounded work: pathological inputs answer "not equivalent" with a reason, quickly, and
//! random or mutated LaTeX never panics. This is the in-suite stand-in for the cargo-fuzz
//! target in `fuzz/` (same input generator idea, fixed seed, a few thousand cases).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tbrm_verify::{verify, verify_with, Limits, Outcome};

/// Generous enough for a debug build on a loaded 2-core machine; the release-build worst case
/// is measured in BENCHMARKS.md.
const SLOW: Duration = Duration::from_millis(500);

fn timed(gold: &str, resp: &str) -> (tbrm_verify::Verdict, Duration) {
    let t = Instant::now();
    let v = verify(gold, resp);
    (v, t.elapsed())
}

#[test]
fn tower_of_powers_is_refused_quickly() {
    for resp in [
        "\\boxed{10^{10^{10^{10}}}}",
        "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}",
        "\\boxed{(10^{100})!}",
        "\\boxed{\\binom{10^{9}}{10^{8}}}",
        "\\boxed{9^{9^{9}} - 9^{9^{9}}}",
    ] {
        let (v, dt) = timed("5", resp);
        assert!(!v.correct, "{resp}: {}", v.reason);
        assert!(dt < SLOW, "{resp} took {dt:?}");
    }
    let (v, _) = timed("3", "\\boxed{10^{10^{10^{10}}}}");
    assert!(v.reason.contains("too large"), "{}", v.reason);
    // Identical huge expressions are still recognised, by text.
    assert!(verify("10^{10^{10^{10}}}", "\\boxed{10^{10^{10^{10}}}}").correct);
}

#[test]
fn deep_nesting_is_refused_quickly() {
    // Within the answer size cap: refused by the depth cap.
    let deep_braces = format!("\\boxed{{{}1{}}}", "{".repeat(1500), "}".repeat(1500));
    let deep_parens = format!("\\boxed{{{}1{}}}", "(".repeat(1500), ")".repeat(1500));
    let deep_frac = format!(
        "\\boxed{{{}1{}}}",
        "\\frac{1}{".repeat(300),
        "}".repeat(300)
    );
    let deep_sqrt = format!("\\boxed{{{}2{}}}", "\\sqrt{".repeat(500), "}".repeat(500));
    let minus = format!("\\boxed{{{}1}}", "-".repeat(3000));
    let power = format!("\\boxed{{{}2}}", "2^".repeat(1000));
    for resp in [
        &deep_braces,
        &deep_parens,
        &deep_frac,
        &deep_sqrt,
        &minus,
        &power,
    ] {
        let (v, dt) = timed("7", resp);
        assert!(!v.correct);
        assert!(v.reason.contains("nesting"), "{}", v.reason);
        assert!(dt < SLOW, "took {dt:?}");
    }
    // Over the answer size cap: refused before parsing.
    let deeper = format!("\\boxed{{{}1{}}}", "{".repeat(50_000), "}".repeat(50_000));
    let (v, dt) = timed("1", &deeper);
    assert!(!v.correct && v.reason.contains("limit"), "{}", v.reason);
    assert!(dt < SLOW, "took {dt:?}");
}

#[test]
fn huge_inputs_are_bounded() {
    // A megabyte of prose with the answer at the end.
    let mut big = "All work and no play makes Jack a dull boy. ".repeat(20_000);
    big.push_str("The answer is \\boxed{7}.");
    let (v, dt) = timed("7", &big);
    assert!(v.correct, "{}", v.reason);
    assert!(dt < SLOW, "took {dt:?}");
    // Over the response cap: refused with the reason, without scanning.
    let huge = "x".repeat(2 << 20);
    let (v, dt) = timed("7", &huge);
    assert!(!v.correct && v.reason.contains("limit"), "{}", v.reason);
    assert!(dt < SLOW);
    // A boxed answer of 100 kB: over the answer cap.
    let long_answer = format!("\\boxed{{{}}}", "1+".repeat(50_000) + "1");
    let (v, _) = timed("50001", &long_answer);
    assert!(!v.correct && v.reason.contains("limit"), "{}", v.reason);
    // Many unmatched dollars and braces.
    let junk = "$ { \\( \\[ $$ \\boxed{ \\text{ ".repeat(30_000);
    let (v, dt) = timed("1", &junk);
    assert!(!v.correct);
    assert!(dt < SLOW, "took {dt:?}");
}

#[test]
fn new_answer_scanners_stay_linear() {
    // A long answer line full of spans and numbers (the prose candidates, span joining).
    let line = format!("The answer is {}7.", "$1$ and 2, ".repeat(40_000));
    let (v, dt) = timed("7", &line);
    assert!(dt < SLOW, "took {dt:?}: {}", v.reason);
    let line = format!("Final Answer: {}", "$n$ is 3. ".repeat(40_000));
    let (_, dt) = timed("3", &line);
    assert!(dt < SLOW, "took {dt:?}");
    // Joined spans: many `$1$, ` in a row.
    let spans = format!("so {}$2$", "$1$, ".repeat(100_000));
    let (_, dt) = timed("2", &spans);
    assert!(dt < SLOW, "took {dt:?}");
    // Doubled backslashes everywhere, and runs of backslashes.
    let doubled = format!(
        "{}\\\\boxed{{\\\\frac{{1}}{{5}}}}",
        "\\\\frac{1}{5} ".repeat(60_000)
    );
    let (v, dt) = timed("\\frac{1}{5}", &doubled);
    assert!(v.correct, "{}", v.reason);
    assert!(dt < SLOW, "took {dt:?}");
    let runs = "\\".repeat(500_000);
    let (_, dt) = timed("1", &runs);
    assert!(dt < SLOW, "took {dt:?}");
    // Decimal commas and `!=` everywhere in a plain-text answer.
    let commas = format!("The total is {}", "1,5 ".repeat(100_000));
    let (_, dt) = timed("1.5", &commas);
    assert!(dt < SLOW, "took {dt:?}");
    let ne = format!("\\boxed{{{}}}", "x != ".repeat(600) + "3");
    let (_, dt) = timed("x \\neq 3", &ne);
    assert!(dt < SLOW, "took {dt:?}");
    // Approximations chained.
    let approx = format!("\\boxed{{x = 1 {}}}", "\\approx 1 ".repeat(500));
    let (v, dt) = timed("1", &approx);
    assert!(dt < SLOW, "took {dt:?}: {}", v.reason);
}

#[test]
fn long_lists_and_many_variables_stay_bounded() {
    let list: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
    let rev: Vec<String> = (0..1500).rev().map(|i| i.to_string()).collect();
    let (v, dt) = timed(&list.join(","), &format!("\\boxed{{{}}}", rev.join(",")));
    // Either decided or refused by the step budget, but fast.
    assert!(dt < SLOW, "took {dt:?}: {}", v.reason);
    let vars: String = (0..300).map(|i| format!("x_{{{i}}}+")).collect::<String>() + "1";
    let (_, dt) = timed(&vars, &format!("\\boxed{{{vars}}}+0"));
    assert!(dt < SLOW, "took {dt:?}");
}

#[test]
fn step_budget_gives_a_reason() {
    let limits = Limits {
        max_steps: 50,
        ..Limits::default()
    };
    let (v, o) = verify_with("x^2+2x+1", "\\boxed{(x+1)^2}", &limits);
    assert!(!v.correct);
    assert!(v.reason.contains("steps"), "{}", v.reason);
    assert_ne!(o, Outcome::Correct);
}

const PIECES: &[&str] = &[
    "\\frac",
    "\\sqrt",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\\{",
    "\\}",
    "^",
    "_",
    "+",
    "-",
    "*",
    "/",
    "=",
    "<",
    ">",
    "\\le",
    ",",
    "1",
    "23",
    "0.5",
    ".",
    "x",
    "y",
    "e",
    "i",
    "\\pi",
    "\\infty",
    "\\pm",
    "\\cup",
    "\\in",
    "\\sin",
    "\\log",
    "\\ln",
    "!",
    "%",
    "\\%",
    "$",
    "\\boxed{",
    "\\text{",
    "\\left(",
    "\\right)",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "&",
    "\\\\",
    " ",
    "\\,",
    "\\!",
    "\\dfrac",
    "\\cdot",
    "|",
    "\\$",
    "^\\circ",
    "°",
    "π",
    "√",
    "\\binom",
    "\\mathrm{",
    "answer is",
    "\\",
    "ä",
    "\u{0}",
    "9^{9^{9}}",
    "\\fbox",
    "\\tfrac12",
    "\\begin{array}",
    "\\end",
    "\\\\frac",
    "\\\\boxed{",
    "!=",
    ";",
    "1,5",
    " pct",
    " percentage",
    "\\approx",
    "\\neq",
    "Final Answer: The largest $n$ is ",
    "(p,q)=",
    " and ",
];

fn random_latex(rng: &mut ChaCha8Rng) -> String {
    let n = rng.gen_range(0..40);
    (0..n)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

fn mutate(s: &str, rng: &mut ChaCha8Rng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..rng.gen_range(1..4) {
        let piece: Vec<char> = PIECES[rng.gen_range(0..PIECES.len())].chars().collect();
        match rng.gen_range(0..3) {
            0 if !chars.is_empty() => {
                let i = rng.gen_range(0..chars.len());
                chars.remove(i);
            }
            1 => {
                let i = rng.gen_range(0..=chars.len());
                chars.splice(i..i, piece);
            }
            _ => {
                let i = rng.gen_range(0..=chars.len());
                chars.truncate(i);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_and_mutated_latex_never_panics() {
    let golds = [
        "\\frac{14}{3}",
        "(3,4]",
        "1 \\pm \\sqrt{19}",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "x^5 - x^4 + x^3",
        "\\text{(C)}",
        "y = 2x + 3",
        "(-\\infty, 2) \\cup (3, \\infty)",
        "10,\\!080",
        "50\\%",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(20240611);
    let mut worst = Duration::ZERO;
    for round in 0..3000 {
        let gold = if round % 2 == 0 {
            golds[rng.gen_range(0..golds.len())].to_string()
        } else {
            random_latex(&mut rng)
        };
        let pred = if rng.gen_bool(0.5) {
            mutate(&gold, &mut rng)
        } else {
            random_latex(&mut rng)
        };
        let resp = format!("so \\boxed{{{pred}}}");
        for r in [&pred, &resp] {
            let t = Instant::now();
            let v = verify(&gold, r);
            worst = worst.max(t.elapsed());
            assert!(!v.reason.is_empty());
            if v.correct {
                // Anything judged correct must also be judged correct again (determinism).
                assert!(verify(&gold, r).correct);
            }
        }
    }
    assert!(worst < SLOW, "slowest random case took {worst:?}");
}
