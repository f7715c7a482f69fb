//! The harder answer styles, each with equivalent pairs and near misses: decimal commas,
//! percent words, relations compared as relations, approximation chains, labelled tuples,
//! semicolon-separated coordinates, doubled backslashes, answers stated in prose after
//! "Final Answer:", gold answers that are whole solutions, lists of tuples in any order,
//! tuples against sets, and thousands separators against two-item lists. Expected verdicts
//! follow Math-Verify 0.9.0 (checked case by case against it, `parse("$gold$")` and
//! `parse(response)`), except where a comment marks a deliberate difference.

use tbrm_verify::verify;

/// (gold, response, expected verdict)
type Table = &'static [(&'static str, &'static str, bool)];

fn run(name: &str, table: Table) {
    let mut failures = Vec::new();
    for (gold, resp, want) in table {
        let v = verify(gold, resp);
        if v.correct != *want {
            failures.push(format!(
                "gold={gold:?} response={resp:?} want={want} got={} extracted={:?} reason={}",
                v.correct, v.extracted, v.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    assert!(
        table.iter().any(|c| c.2) && table.iter().any(|c| !c.2),
        "{name}: needs both equivalent and near-miss cases"
    );
}

#[test]
fn decimal_commas() {
    run(
        "decimal commas",
        &[
            // Plain text: a comma between digits that is not a thousands separator.
            ("1.22", "The answer is 1,22.", true),
            ("1.22", "1,22", true),
            ("1000.99", "1000,99", true),
            ("1000.99", "The total is 1000,99 euros.", true),
            ("2.74", "Soucis : 2,74 $ a..", true),
            ("2.74", "The price is 2,74 $", true),
            ("27.39", "Final Answer: 27,39", true),
            ("27.39", "the result is approximately 27,39 m", true),
            (
                "27.39",
                "Final Answer: The mass of the sample is 27,39 kg.",
                true,
            ),
            ("0.111", "The answer is 0,111.", true),
            ("1880", "The answer is 1880,00.", true),
            ("1.5", "x = 1,5", true),
            // Near misses.
            ("1.22", "The answer is 1,23.", false),
            ("2.74", "The price is 2,75 $", false),
            ("1000.99", "The total is 1000,98 euros.", false),
            (
                "27.39",
                "Final Answer: The mass of the sample is 27,38 kg.",
                false,
            ),
            ("1880", "The answer is 1880,5.", false),
            ("1.22", "The answer is 122.", false),
            // A thousands separator stays one (`1,222` is 1222, not 1.222).
            ("1222", "The answer is 1,222.", true),
            ("1.222", "The answer is 1,222.", false),
            ("1.325", "Final Answer: 1,325", false),
            // In LaTeX a comma separates list items (Math-Verify reads a set there too).
            ("5.15", "\\boxed{5,15}", false),
            ("1.5", "$1,5$", false),
            // Inside brackets the comma separates coordinates or interval ends (deliberate:
            // Math-Verify's plain-number pattern reads the bare response `(1,2)` as 1.2).
            ("1.2", "(1,2)", false),
            ("(1,2)", "(1,2)", true),
            // A gold list: the same digits are the list (deliberate: Math-Verify reads the
            // plain `5,15` as 5.15 whatever the gold).
            ("5,15", "The answer is 5,15.", true),
            ("5,15", "The answer is 5,16.", false),
        ],
    );
}

#[test]
fn percent_words() {
    run(
        "percent words",
        &[
            ("28\\%", "28 pct", true),
            ("28\\%", "28 percentage", true),
            ("28\\%", "28 percent", true),
            ("28\\%", "The answer is 28 pct", true),
            ("28\\%", "\\boxed{28 pct}", true),
            ("28\\%", "\\boxed{28 percentage}", true),
            ("28\\%", "\\boxed{28 percent}", true),
            ("28\\%", "$28$ pct", true),
            ("28\\%", "$\\boxed{28}$ pct", true),
            ("28\\%", "\\boxed{28\\text{ pct}}", true),
            (
                "28\\%",
                "Final Answer: The price went up by 28 percentage.",
                true,
            ),
            ("28", "28 pct", true),
            ("28", "\\boxed{28 percent}", true),
            ("0.28", "28 pct", true),
            ("0.28", "$28$ percent", true),
            ("0.28", "so $\\boxed{28}$ pct", true),
            ("28\\%", "0.28", true),
            ("28\\%", "29 pct", false),
            ("28\\%", "\\boxed{29 percentage}", false),
            ("28\\%", "$27$ percent", false),
            ("0.28", "\\boxed{29 pct}", false),
            ("0.28", "\\boxed{28}", false),
            ("28", "2.8 pct", false),
        ],
    );
}

#[test]
fn relations_compared_as_relations() {
    run(
        "relations",
        &[
            ("x < 1", "$-x > -1$", true),
            ("x <= 1", "$-x >= -1$", true),
            ("x \\le 1", "$-x \\ge -1$", true),
            ("x < 1", "$1 > x$", true),
            ("x \\geq 5", "$5 \\leq x$", true),
            ("x >= 5", "Therefore $x \\geq 5$ is the solution.", true),
            ("x > 5", "$x \\gt 5$", true),
            // Deliberate: a positive multiple of an inequality is the same inequality
            // (Math-Verify only accepts scaled equations).
            ("x + y > 1", "$2x + 2y > 2$", true),
            ("x != 3", "We find that $x \\neq 3$.", true),
            ("x \\neq 3", "The solution is $x != 3$", true),
            ("x \\neq 3", "$x \\ne 3$", true),
            ("x \\neq 3", "$x ≠ 3$", true),
            ("x \\ne 3", "\\boxed{x \\neq 3}", true),
            ("x < 1", "$x > -1$", false),
            ("x < 1", "$x \\le 1$", false),
            ("x < 1", "$-x > 1$", false),
            ("x \\geq 5", "$x \\leq 5$", false),
            ("x \\neq 3", "$x \\neq 4$", false),
            ("x \\neq 3", "$x = 3$", false),
            ("x \\neq 3", "$3$", false),
            ("x != 3", "$x < 3$", false),
            // `!=` after a letter or a space is "not equal"; after a digit or a bracket it is a
            // factorial (deliberate: Math-Verify reads `5!=120` as 5 ≠ 120).
            ("x \\neq 3", "$x!=3$", true),
            ("120", "$5!=120$", true),
            ("120", "$5! = 120$", true),
            ("5", "$3!/2!+2\\cdot 2!/2!=3+2=5$", true),
            ("121", "$5!=120$", false),
            // Deliberate: `3 \neq x` is `x \neq 3` (Math-Verify compares `x - 3` with `3 - x`).
            ("x \\neq 3", "$3 \\neq x$", true),
            // Kept leniency: an inequality matches the interval it describes.
            ("(-\\infty, 1)", "$x < 1$", true),
            ("(-\\infty, 1)", "$-x > -1$", true),
            ("(-\\infty, 1)", "$-x > 1$", false),
            ("x < 1", "$(-\\infty, 1)$", true),
            ("x < 1", "$(-\\infty, 1]$", false),
        ],
    );
}

#[test]
fn approximation_chains() {
    run(
        "approximations",
        &[
            ("\\frac{1}{3}", "$x = \\frac{1}{3} \\approx 0.33$", true),
            (
                "\\frac{1}{3}",
                "The answer is $\\frac{1}{3} \\approx 0.33$.",
                true,
            ),
            ("\\frac{1}{3}", "\\boxed{\\frac{1}{3} \\approx 0.33}", true),
            ("\\frac{1}{3}", "\\boxed{\\frac13 ≈ 0.333}", true),
            ("x = 1/3", "$x = 5+5+1 = 1/3 \\approx 11$", true),
            ("1/3", "$x=1/3\\approx1.3$", true),
            ("11", "$x\\approx11$", true),
            ("x = 11", "$x \\approx 11$", true),
            ("\\sqrt{2}", "$x = \\sqrt{2} \\approx 1.414$", true),
            ("8.24", "\\boxed{\\approx 8.24}", true),
            ("\\frac{1}{3}", "\\boxed{0.33}", false),
            ("\\frac{1}{3}", "\\boxed{\\approx 0.33}", false),
            (
                "\\frac{1}{3}",
                "\\boxed{x = \\frac{1}{4} \\approx 0.33}",
                false,
            ),
            ("\\frac{1}{3}", "\\boxed{0.33 \\approx \\frac{1}{3}}", false),
            ("0.33", "\\boxed{\\frac{1}{3} \\approx 0.33}", false),
            ("\\sqrt{2}", "$x = 1.414 \\approx \\sqrt{2}$", false),
            ("\\frac{27}{2}", "\\boxed{13.50}", true),
            (
                "\\frac{27}{2}",
                "\\boxed{\\frac{28}{2} \\approx 13.50}",
                false,
            ),
        ],
    );
}

#[test]
fn labelled_tuples() {
    run(
        "labelled tuples",
        &[
            ("(3,2)", "$(p,q)=(3,2)$", true),
            ("(3,2)", "Thus $(p,q) = \\boxed{(3,2)}$.", true),
            ("(3,2)", "\\boxed{(p,q)=(3,2)}", true),
            ("(3,2)", "\\boxed{(x, y) = (3, 2)}", true),
            ("(3,2)", "\\boxed{p=3, q=2}", true),
            ("(p,q)=(3,2)", "\\boxed{(3,2)}", true),
            ("(p,q)=(3,2)", "\\boxed{(p, q) = (3, 2)}", true),
            ("(a,b,c)=(2,251,252)", "\\boxed{(2,251,252)}", true),
            (
                "\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)",
                "Thus, $(t,u) = \\boxed{\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)}.$",
                true,
            ),
            ("(3,2)", "\\boxed{(p,q)=(2,3)}", false),
            ("(p,q)=(3,2)", "\\boxed{(2,3)}", false),
            ("(p,q)=(3,2)", "\\boxed{(p,q)=(3,3)}", false),
            ("(a,b,c)=(2,251,252)", "\\boxed{(252,251,2)}", false),
            ("(3,2)", "$(p,q)=(3,2,1)$", false),
        ],
    );
}

#[test]
fn semicolon_coordinates() {
    run(
        "semicolons",
        &[
            ("(0,-2,6)", "\\boxed{(0;-2;6)}", true),
            ("(0,-2,6)", "The point is $(0;-2;6)$.", true),
            ("(0,-2,6)", "The point is $(0; -2; 6)$.", true),
            ("(0;-2;6)", "\\boxed{(0,-2,6)}", true),
            ("(1,2)", "\\boxed{(1;2)}", true),
            ("1,2", "\\boxed{1;2}", true),
            ("(1,1), (3,2)", "\\boxed{(3,2); (1,1)}", true),
            ("(0,-2,6)", "\\boxed{(0;2;6)}", false),
            ("(0,-2,6)", "\\boxed{(0;-2)}", false),
            ("(1,2)", "\\boxed{(2;1)}", false),
            ("(0;-2;6)", "\\boxed{(0,-2,7)}", false),
        ],
    );
}

#[test]
fn doubled_backslashes() {
    run(
        "doubled backslashes",
        &[
            ("\\frac{1}{5}", "\\\\boxed{\\\\frac{1}{5}}", true),
            ("\\frac{1}{5}", "$\\\\frac{1}{5}$", true),
            ("\\frac{1}{5}", "\\boxed{\\\\frac{1}{5}}", true),
            ("\\\\frac{1}{5}", "\\boxed{\\frac{1}{5}}", true),
            ("\\sqrt{2}", "\\\\boxed{\\\\sqrt{2}}", true),
            ("2\\sqrt{3}", "$\\\\boxed{2\\\\sqrt{3}}$", true),
            ("\\frac{\\pi}{2}", "\\\\boxed{\\\\frac{\\\\pi}{2}}", true),
            (
                "\\frac{3}{4}",
                "The final answer is $\\\\frac{3}{4}$. I hope it is correct.",
                true,
            ),
            // A doubled matrix: the `\\\\` row separator is a doubled `\\` (deliberate:
            // Math-Verify leaves backslashes alone in any text that mentions a matrix).
            (
                "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                "\\\\boxed{\\\\begin{pmatrix} 1 \\\\\\\\ 2 \\\\end{pmatrix}}",
                true,
            ),
            // An ordinary matrix keeps its row separator.
            (
                "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
                true,
            ),
            ("\\frac{1}{5}", "\\\\boxed{\\\\frac{1}{6}}", false),
            ("\\\\frac{1}{5}", "\\boxed{\\frac{1}{6}}", false),
            ("\\sqrt{2}", "\\\\boxed{\\\\sqrt{3}}", false),
            ("\\frac{\\pi}{2}", "\\\\boxed{\\\\frac{\\\\pi}{3}}", false),
            (
                "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                "\\\\boxed{\\\\begin{pmatrix} 2 \\\\\\\\ 1 \\\\end{pmatrix}}",
                false,
            ),
        ],
    );
}

#[test]
fn prose_after_final_answer() {
    run(
        "final answer prose",
        &[
            ("34", "Final Answer: The largest $n$ is 34.", true),
            ("34", "Final Answer: The largest n is 34.", true),
            ("34", "**Final Answer:** The largest $n$ is 34.", true),
            ("34", "Final Answer: The answer is 34 apples.", true),
            ("34", "Final Answer: The minimum value of $f(x)$ is 34.", true),
            ("34", "Final Answer: The value of $n$ is $34$.", true),
            (
                "\\frac{3}{4}",
                "Final Answer: The probability that $A$ wins is $\\frac{3}{4}$.",
                true,
            ),
            (
                "3",
                "So on.\n\nFinal Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.",
                true,
            ),
            ("19", "Final Answer: The maximum number of points that could be in the domain of $f(x)$ is 19.", true),
            ("34", "Final Answer: The largest $n$ is 35.", false),
            ("34", "Final Answer: The largest n is 35.", false),
            ("34", "Final Answer: The minimum value of $f(x)$ is 43.", false),
            ("\\frac{3}{4}", "Final Answer: The probability that $A$ wins is $\\frac{4}{3}$.", false),
            // Deliberate: a lone variable after the number is what the sentence is about
            // (Math-Verify takes the rightmost candidate, `k`).
            ("12", "Final Answer: There are 12 ways to choose $k$.", true),
            ("12", "Final Answer: There are 13 ways to choose $k$.", false),
            // The text answers of the MATH set still come out whole (known difference:
            // Math-Verify extracts nothing usable from the plain-text sentence).
            ("\\text{Evelyn}", "The answer is evelyn.", true),
        ],
    );
}

#[test]
fn gold_is_a_whole_solution() {
    run(
        "gold solutions",
        &[
            (
                "Let the percentage be $x$. So $x=1/5$, or $\\boxed{20}$ percent.",
                "The answer is $\\boxed{20\\%}$",
                true,
            ),
            (
                "Let the percentage be $x$. So $x=1/5$, or $\\boxed{20}$ percent.",
                "The answer is $\\boxed{25\\%}$",
                false,
            ),
            ("We compute each term and add. Hence the answer is 42.", "\\boxed{42}", true),
            ("We compute each term and add. Hence the answer is 42.", "\\boxed{24}", false),
            (
                "Solving gives $x = 2$. Final Answer: The final answer is $\\frac{15}{2}$. I hope it is correct.",
                "\\boxed{7.5}",
                true,
            ),
            (
                "Solving gives $x = 2$. Final Answer: The final answer is $\\frac{15}{2}$. I hope it is correct.",
                "\\boxed{2}",
                false,
            ),
            (
                "By Kepler's law the period is $\\boxed{1.6}$ years.",
                "The answer is $1.6$.",
                true,
            ),
            (
                "By Kepler's law the period is $\\boxed{1.6}$ years.",
                "The answer is $1.7$.",
                false,
            ),
            (
                "We count the cases one by one and add them up. So there are 12 of them.",
                "\\boxed{12}",
                true,
            ),
        ],
    );
}

#[test]
fn lists_of_tuples_in_any_order() {
    run(
        "tuple lists",
        &[
            ("(1,1), (3,2)", "\\boxed{(3,2), (1,1)}", true),
            ("(1,1), (3,2)", "\\boxed{\\{(3,2), (1,1)\\}}", true),
            ("(1,1), (3,2)", "\\boxed{(1,1)}, \\boxed{(3,2)}", true),
            ("(1,1), (3,2)", "\\boxed{(3,2)} and \\boxed{(1,1)}", true),
            ("(1,1), (3,2)", "$(3,2)$ and $(1,1)$", true),
            (
                "(1,1), (3,2)",
                "The solutions are $(3,2)$ and $(1,1)$.",
                true,
            ),
            (
                "(1,8,19), (2,7,13), (4,5,7)",
                "\\boxed{(4,5,7), (1,8,19), (2,7,13)}",
                true,
            ),
            (
                "(6,3),(9,3),(9,5),(54,5)",
                "The solutions are $(54,5)$, $(9,5)$, $(9,3)$ and $(6,3)$.",
                true,
            ),
            ("(1,1), (3,2)", "\\boxed{(1,1), (2,3)}", false),
            ("(1,1), (3,2)", "\\boxed{(3,2)}", false),
            ("(1,1), (3,2)", "\\boxed{(1,1), (3,2), (2,3)}", false),
            (
                "(1,1), (3,2)",
                "The solutions are $(3,2)$ and $(1,2)$.",
                false,
            ),
            (
                "(1,8,19), (2,7,13), (4,5,7)",
                "\\boxed{(4,5,7), (1,8,19), (2,13,7)}",
                false,
            ),
            // Only the spans joined to the last one by "and" / "," count.
            (
                "(1,1), (3,2)",
                "We try $(3,2)$ first; the answer is then $(1,1)$",
                false,
            ),
        ],
    );
}

#[test]
fn a_tuple_is_not_a_set() {
    run(
        "tuple vs set",
        &[
            ("(3,1)", "${1,3}$", false),
            ("(3,1)", "$\\{1,3\\}$", false),
            ("(3,1)", "\\boxed{1,3}", false),
            ("(1,3,5)", "\\boxed{\\{5,3,1\\}}", false),
            ("(1,3)", "$\\{3,1\\}$", false),
            // A set written in the tuple's order compares element by element, as in
            // Math-Verify.
            ("(1,3)", "${1,3}$", true),
            ("(3,1)", "\\boxed{3,1}", true),
            ("(1,3,5)", "\\boxed{\\{1,3,5\\}}", true),
            // A gold set or list ignores order.
            ("\\{1,3\\}", "$(3,1)$", true),
            ("1,3,5", "\\boxed{(5,3,1)}", true),
            ("\\{1,3\\}", "$(3,2)$", false),
        ],
    );
}

#[test]
fn thousands_separator_or_list() {
    run(
        "thousands",
        &[
            ("32349", "is $\\boxed{32,349}$", true),
            ("32349", "is $\\boxed{32,\\! 349}$", true),
            ("32349", "is $\\boxed{32{,}349}$", true),
            ("32349", "The answer is 32,349.", true),
            (
                "11111111100",
                "is $\\boxed{11,\\! 111,\\! 111,\\! 100}$",
                true,
            ),
            ("32,349", "is $\\boxed{32349}$", true),
            ("32, 349", "is $\\boxed{32, 349}$", true),
            ("32349", "is $\\boxed{32, 349}$", false),
            ("32, 349", "is $\\boxed{32349}$", false),
            ("32,349", "is $\\boxed{32, 349}$", false),
            ("11111111100", "is $\\boxed{11, 111, 111, 100}$", false),
            ("1234", "is $\\boxed{1, 234}$", false),
            ("32349", "The answer is 32,348.", false),
        ],
    );
}

/// Deliberate leniencies kept from before (Math-Verify answers "not equivalent" to each of the
/// equivalent pairs here: it cannot parse `°`, does not convert a predicted inequality, and
/// reads the spaced `9 i` differently).
#[test]
fn kept_leniencies() {
    run(
        "leniencies",
        &[
            ("106^\\circ", "\\boxed{106°}", true),
            ("106°", "\\boxed{106^\\circ}", true),
            ("106^\\circ", "\\boxed{106}", true),
            ("106^\\circ", "\\boxed{107^\\circ}", false),
            ("(2,\\infty)", "\\boxed{x > 2}", true),
            ("(2,\\infty)", "\\boxed{x \\ge 2}", false),
            ("6 + 9 i", "\\boxed{6+9i}", true),
            ("6 + 9 i", "\\boxed{9i + 6}", true),
            ("6 + 9 i", "\\boxed{6 - 9i}", false),
        ],
    );
}
