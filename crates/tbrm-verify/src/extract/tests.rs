use super::*;

fn ex(s: &str) -> Option<String> {
    extract(s).map(|e| e.text)
}

#[test]
fn last_boxed_with_nested_braces() {
    assert_eq!(
        ex("first \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}} done").as_deref(),
        Some("\\frac{1}{\\sqrt{2}}")
    );
    assert_eq!(ex("\\fbox{7}").as_deref(), Some("7"));
    assert_eq!(ex("so \\boxed{\\{1,2\\}}.").as_deref(), Some("\\{1,2\\}"));
    assert_eq!(ex("\\boxed 5.").as_deref(), Some("5"));
}

#[test]
fn adjacent_boxed_are_merged() {
    assert_eq!(
        ex("$\\boxed{1}$ and $\\boxed{-2}$").as_deref(),
        Some("1, -2")
    );
    assert_eq!(ex("\\boxed{1}, \\boxed{2}").as_deref(), Some("1, 2"));
    // Far apart: only the last one counts.
    assert_eq!(
        ex("we get \\boxed{1} in step one. Then after more work \\boxed{2}").as_deref(),
        Some("2")
    );
}

#[test]
fn unbalanced_boxed_is_ignored() {
    assert_eq!(ex("\\boxed{1 and then $x=3$").as_deref(), Some("x=3"));
}

#[test]
fn final_answer_phrases() {
    assert_eq!(
        ex("Work... The final answer is $\\frac{3}{4}$. I hope it is correct.").as_deref(),
        Some("\\frac{3}{4}")
    );
    assert_eq!(ex("So the answer is 12.").as_deref(), Some("12"));
    assert_eq!(ex("Answer: 5 apples").as_deref(), Some("5 apples"));
    assert_eq!(
        ex("The final answer is:\n\n$$ x+1 $$").as_deref(),
        Some("x+1")
    );
}

#[test]
fn latex_spans_and_fallbacks() {
    assert_eq!(ex("we find $x=2$ and so $y=3$").as_deref(), Some("y=3"));
    assert_eq!(ex("thus \\[ 4\\pi \\] ok").as_deref(), Some("4\\pi"));
    assert_eq!(ex("thus \\( 4 \\) ok").as_deref(), Some("4"));
    assert_eq!(ex("costs \\$5 and \\$6").as_deref(), Some("6"));
    assert_eq!(ex("\\frac{1}{2}").as_deref(), Some("\\frac{1}{2}"));
    assert_eq!(
        ex("So in total we have 1,250 marbles").as_deref(),
        Some("1,250")
    );
    assert_eq!(ex("the result is -3.5.").as_deref(), Some("-3.5"));
    assert_eq!(ex("no numbers here at all"), None);
    assert_eq!(ex(""), None);
}

#[test]
fn prose_after_answer_phrases() {
    assert_eq!(
        ex("Final Answer: The largest $n$ is 34.").as_deref(),
        Some("34")
    );
    assert_eq!(
        ex("Final Answer: The value of $n$ is $34$.").as_deref(),
        Some("34")
    );
    assert_eq!(
        ex("Final Answer: The minimum of $f(x)$ is 7 here.").as_deref(),
        Some("7")
    );
    assert_eq!(
        ex("Final Answer: There are 12 ways to choose $k$.").as_deref(),
        Some("12")
    );
    // Not prose: the span, or the line.
    assert_eq!(
        ex("The answer is $12$ and $13$.").as_deref(),
        Some("12, 13")
    );
    assert_eq!(ex("The answer is 1,22.").as_deref(), Some("1,22"));
    let e = extract("Final Answer: it went up by 28 pct.").unwrap();
    assert_eq!((e.text.as_str(), e.plain, e.percent), ("28", true, true));
}

#[test]
fn percent_after_the_answer() {
    for r in [
        "$\\boxed{28}$ pct",
        "\\boxed{28} percent",
        "$28$\\%",
        "$28$ percentage",
    ] {
        let e = extract(r).unwrap();
        assert_eq!((e.text.as_str(), e.percent), ("28", true), "{r}");
    }
    let e = extract("\\boxed{28\\%} pct").unwrap();
    assert!(!e.percent);
    let e = extract("$28$ people").unwrap();
    assert!(!e.percent);
    assert_eq!(split_percent("28 pct"), ("28".to_string(), true));
    assert_eq!(split_percent("the pct"), ("the pct".to_string(), false));
}

#[test]
fn joined_spans() {
    assert_eq!(
        ex("so $(3,2)$ and $(1,1)$").as_deref(),
        Some("(3,2), (1,1)")
    );
    assert_eq!(ex("so $1$, $2$ or $3$").as_deref(), Some("1, 2, 3"));
    // Not joined: prose between, `, and`, or a span that ends a clause.
    assert_eq!(ex("we get $1$ and so $2$").as_deref(), Some("2"));
    assert_eq!(ex("$1$, and $2$").as_deref(), Some("2"));
    assert_eq!(ex("so $c = 3,$ and $d = 11.$").as_deref(), Some("d = 11."));
    // Runs are cut in sixes from their start, as Math-Verify's pattern does.
    let seven = (1..=7)
        .map(|i| format!("${i}$"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(ex(&seven).as_deref(), Some("7"));
}

#[test]
fn bare_answers_and_sentences() {
    assert!(looks_like_bare_answer("5 apples"));
    assert!(looks_like_bare_answer("28 pct"));
    assert!(!looks_like_bare_answer("Soucis : 2,74 $ a.."));
    assert!(looks_like_prose(
        "We add them all up. Hence the answer is 42."
    ));
    assert!(!looks_like_prose("\\text{Evelyn}"));
    assert!(!looks_like_prose(
        "f(x)=a x+b$, where $b$ is an arbitrary integer"
    ));
}

#[test]
fn choices() {
    assert_eq!(choice_letter("\\text{(C)}"), Some('C'));
    assert_eq!(choice_letter("(b)"), Some('B'));
    assert_eq!(choice_letter("F"), None);
    assert_eq!(choice_letter("CD"), None);
    assert_eq!(
        extract_choice("so \\boxed{\\text{(D)}}").map(|x| x.0),
        Some('D')
    );
    assert_eq!(
        extract_choice("The answer is (A) because").map(|x| x.0),
        Some('A')
    );
    assert_eq!(
        extract_choice("options (A) or maybe (E)").map(|x| x.0),
        Some('E')
    );
    assert_eq!(extract_choice("nothing"), None);
}
