//! Unit tests: loading (fields, formats, errors), filters and dedup, benchmark lookup, and
//! the sampler's order and resume.

use std::fs;
use std::path::Path;

use super::*;
use crate::error::DataError;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn jsonl_default_fields_and_extras() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mini.jsonl",
        "{\"id\":\"a\",\"problem\":\"1+1?\",\"answer\":\"2\",\"source\":\"S\",\"level\":3}\n\n{\"problem\":\"2+2?\",\"answer\":4}\n",
    );
    let ds = load_dataset(&p, &LoadOptions::default()).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.report.rows, 2);
    let a = &ds.problems[0];
    assert_eq!(
        (a.id.as_str(), a.answer.as_str(), a.source.as_str()),
        ("a", "2", "S")
    );
    assert_eq!(a.prompt, PromptInput::Text("1+1?".into()));
    assert_eq!(a.extra, serde_json::json!({"level": 3}));
    let b = &ds.problems[1];
    // No id: the row index; no source: the file stem; numeric answer: its JSON text.
    assert_eq!(
        (b.id.as_str(), b.answer.as_str(), b.source.as_str()),
        ("1", "4", "mini")
    );
}

#[test]
fn field_map_with_dotted_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "x.jsonl",
        "{\"q\":\"Q\",\"meta\":{\"gt\":\"7\"},\"k\":1}\n",
    );
    let opts = LoadOptions {
        fields: Some(FieldMap {
            problem: "q".into(),
            answer: "meta.gt".into(),
            ..FieldMap::default()
        }),
        skip_malformed: false,
    };
    let ds = load_dataset(&p, &opts).unwrap();
    assert_eq!(ds.problems[0].answer, "7");
    assert_eq!(ds.problems[0].extra, serde_json::json!({"k": 1}));
}

#[test]
fn json_array_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.json",
        "[{\"problem\":\"p\",\"answer\":\"1\"},{\"problem\":\"q\"}]",
    );
    let err = load_dataset(&p, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.json: element 1: missing field `answer`"),
        "{err}"
    );
}

#[test]
fn unknown_extension_is_an_error() {
    let err = load_dataset(Path::new("data.csv"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
}

#[test]
fn dedup_trims_whitespace_and_keeps_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.jsonl",
        "{\"problem\":\"A\",\"answer\":\"1\"}\n{\"problem\":\" A\\n\",\"answer\":\"2\"}\n{\"problem\":\"B\",\"answer\":\"3\"}\n",
    );
    let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
    assert_eq!(ds.dedup(), 1);
    let answers: Vec<_> = ds.problems.iter().map(|p| p.answer.as_str()).collect();
    assert_eq!(answers, ["1", "3"]);
    assert_eq!(ds.report.removed_duplicates, 1);
}

#[test]
fn length_filters() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "l.jsonl",
        "{\"problem\":\"short\",\"answer\":\"1\"}\n{\"problem\":\"a much longer one\",\"answer\":\"2\"}\n",
    );
    let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
    assert_eq!(ds.filter_max_prompt_chars(5), 1);
    assert_eq!(ds.problems[0].answer, "1");
    // A token counter: whitespace-separated words.
    let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
    let removed = ds.filter_max_prompt_len(3, |p| p.prompt.question().split_whitespace().count());
    assert_eq!(removed, 1);
    assert_eq!(ds.report.removed_too_long, 1);
}

#[test]
fn benchmark_lookup_by_name_or_path_and_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let row = "{\"problem\":\"p\",\"answer\":\"1\"}\n";
    write(dir.path(), "amc23.jsonl", row);
    write(dir.path(), "toy.jsonl", row);
    let toy = dir.path().join("toy.jsonl");
    assert_eq!(
        resolve_benchmark(dir.path(), "amc23").unwrap(),
        ("amc23".to_string(), dir.path().join("amc23.jsonl"))
    );
    // Any file in the data folder is a benchmark by its stem; a path needs no folder.
    assert_eq!(
        resolve_benchmark(dir.path(), "toy").unwrap(),
        ("toy".to_string(), toy.clone())
    );
    assert_eq!(
        resolve_benchmark(Path::new("/nonexistent"), &toy.display().to_string()).unwrap(),
        ("toy".to_string(), toy)
    );
    assert_eq!(
        load_benchmark(dir.path(), "amc23", &LoadOptions::default())
            .unwrap()
            .problems
            .len(),
        1
    );
    let err = resolve_benchmark(dir.path(), "aime2024")
        .unwrap_err()
        .to_string();
    assert!(err.contains("benchmark `aime2024` not found"), "{err}");
    for want in ["aime2024.jsonl", "aime2024.parquet", "aime2024.json"] {
        assert!(
            err.contains(&dir.path().join(want).display().to_string()),
            "{err}"
        );
    }
    // The known names: the standard list plus the files present.
    assert!(
        err.contains("aime24") && err.contains("math500") && err.contains("toy"),
        "{err}"
    );
    let err = resolve_benchmark(dir.path(), "no/such.jsonl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("looked for no/such.jsonl"), "{err}");
}

#[test]
fn permutation_is_seeded_and_differs_between_epochs() {
    let a = epoch_permutation(50, 7, 0);
    assert_eq!(a, epoch_permutation(50, 7, 0));
    assert_ne!(a, epoch_permutation(50, 7, 1));
    assert_ne!(a, epoch_permutation(50, 8, 0));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
}

#[test]
fn sampler_covers_each_epoch_once_and_crosses_epochs() {
    let mut s = Sampler::new(5, 2, 1, true).unwrap();
    let got: Vec<usize> = (0..5).flat_map(|_| s.next_batch()).collect();
    let (e0, e1) = got.split_at(5);
    assert_eq!(e0, epoch_permutation(5, 1, 0).as_slice());
    assert_eq!(e1, epoch_permutation(5, 1, 1).as_slice());
    assert_eq!(
        s.position(),
        DataOrder {
            seed: 1,
            epoch: 2,
            cursor: 0
        }
    );
}

#[test]
fn sampler_resume_gives_the_same_batches() {
    let mut full = Sampler::new(7, 3, 42, true).unwrap();
    let reference: Vec<Vec<usize>> = (0..6).map(|_| full.next_batch()).collect();
    let mut first = Sampler::new(7, 3, 42, true).unwrap();
    let mut got: Vec<Vec<usize>> = (0..2).map(|_| first.next_batch()).collect();
    let saved = serde_json::to_string(&first.position()).unwrap();
    let order: DataOrder = serde_json::from_str(&saved).unwrap();
    let mut resumed = Sampler::resume(7, 3, true, order).unwrap();
    got.extend((0..4).map(|_| resumed.next_batch()));
    assert_eq!(got, reference);
}

#[test]
fn sampler_without_shuffle_and_bad_arguments() {
    let mut s = Sampler::new(3, 2, 0, false).unwrap();
    assert_eq!(s.next_batch(), [0, 1]);
    assert_eq!(s.next_batch(), [2, 0]);
    assert!(Sampler::new(0, 2, 0, true).is_err());
    assert!(Sampler::new(3, 0, 0, true).is_err());
    let err = Sampler::resume(
        3,
        1,
        true,
        DataOrder {
            seed: 0,
            epoch: 1,
            cursor: 3,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("cursor 3"), "{err}");
}
