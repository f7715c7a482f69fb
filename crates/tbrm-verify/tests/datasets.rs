//! Checks against the shared MATH data: every MATH500 gold answer verifies against itself
//! written inside a response (the reference solution, a boxed sentence, the bare answer), and
//! near misses of integer answers do not. Reads `../../../shared/data` from this crate.

use std::path::PathBuf;

use tbrm_verify::verify;

fn data_file(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(name);
    assert!(
        p.exists(),
        "missing {}: the shared MATH data is expected at ../shared/data next to the workspace",
        p.display()
    );
    p
}

/// (answer, solution) of every row.
fn rows(name: &str) -> Vec<(String, String)> {
    let path = data_file(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            let field = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{}:{}: no string `{k}`", path.display(), i + 1))
                    .to_string()
            };
            (field("answer"), field("solution"))
        })
        .collect()
}

#[test]
fn every_math500_gold_verifies_against_itself() {
    let rows = rows("math500.jsonl");
    assert_eq!(rows.len(), 500);
    let mut failures = Vec::new();
    for (gold, solution) in &rows {
        let responses = [
            solution.clone(),
            format!("Putting it together, the answer is $\\boxed{{{gold}}}$."),
            format!("We get \\[\\boxed{{{gold}}}\\]"),
            gold.clone(),
        ];
        for r in &responses {
            let v = verify(gold, r);
            if !v.correct {
                let short: String = r
                    .chars()
                    .rev()
                    .take(80)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                failures.push(format!("{gold:?} in …{short:?}: {}", v.reason));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn math500_integer_answers_reject_off_by_one_and_sign() {
    let rows = rows("math500.jsonl");
    let mut checked = 0;
    for (gold, _) in &rows {
        let Ok(n) = gold.trim().parse::<i64>() else {
            continue;
        };
        for wrong in [n + 1, n - 1, -n, n * 10] {
            if wrong == n {
                continue;
            }
            let v = verify(gold, &format!("so the answer is \\boxed{{{wrong}}}"));
            assert!(!v.correct, "{gold} accepted {wrong}: {}", v.reason);
        }
        checked += 1;
    }
    assert!(checked > 250, "only {checked} integer answers");
}

#[test]
fn math_train_solutions_verify_against_their_answers() {
    let rows = rows("math_train.jsonl");
    let mut failures = Vec::new();
    for (gold, solution) in &rows {
        let v = verify(gold, solution);
        if !v.correct {
            failures.push(format!(
                "{gold:?}: extracted {:?}: {}",
                v.extracted, v.reason
            ));
        }
    }
    let rate = 1.0 - failures.len() as f64 / rows.len() as f64;
    assert!(
        rate >= 0.995,
        "self-verification rate {rate:.4} on {} rows; failures:\n{}",
        rows.len(),
        failures.join("\n")
    );
}
