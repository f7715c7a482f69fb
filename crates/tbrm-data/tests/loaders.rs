//! Loader tests on fixture files in `tests/resources/`: a JSONL file with malformed rows, a verl
//! parquet file written by pyarrow (`make_verl_parquet.py`), one written here by the parquet
//! crate with other Arrow types, and the real benchmark files in `../shared/data` when present.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float32Array, Int64Array, LargeStringArray, ListArray, RecordBatch,
    StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
use parquet::arrow::ArrowWriter;
use serde_json::json;
use tbrm_data::{
    load_benchmark, load_dataset, ChatMessage, DataError, LoadOptions, PromptInput, RowRef,
    BENCHMARKS,
};

fn resource(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/resources")
        .join(name)
}

fn skipping() -> LoadOptions {
    LoadOptions {
        skip_malformed: true,
        ..LoadOptions::default()
    }
}

#[test]
fn jsonl_first_malformed_row_is_an_error_naming_file_and_line() {
    let err = load_dataset(&resource("problems_small.jsonl"), &LoadOptions::default()).unwrap_err();
    match &err {
        DataError::Malformed { at, message, .. } => {
            assert_eq!(*at, RowRef::Line(3));
            assert!(message.starts_with("invalid JSON"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("problems_small.jsonl: line 3: invalid JSON"),
        "{err}"
    );
}

#[test]
fn jsonl_skip_malformed_counts_every_skipped_row() {
    let ds = load_dataset(&resource("problems_small.jsonl"), &skipping()).unwrap();
    assert_eq!(ds.report.rows, 6, "the blank line is not a row");
    let skipped: Vec<_> = ds
        .report
        .skipped
        .iter()
        .map(|s| (s.at, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped[1..],
        [
            (RowRef::Line(4), "missing field `answer`"),
            (
                RowRef::Line(6),
                "field `answer` must be a string or a number"
            ),
        ]
    );
    assert_eq!(skipped[0].0, RowRef::Line(3));
    let ids: Vec<_> = ds.problems.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p4", "6"]);
    let p4 = &ds.problems[1];
    assert_eq!(p4.answer, "12");
    assert_eq!(p4.prompt.question(), "What is 3*4?");
    assert_eq!(p4.source, "problems_small");
    assert_eq!(ds.problems[0].extra, json!({"level": 1}));
    assert_eq!(ds.problems[2].answer, "\\frac{5}{2}");
}

#[test]
fn pyarrow_verl_parquet_strict_and_skipping() {
    let path = resource("verl_small.parquet");
    let err = load_dataset(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("verl_small.parquet: row 2: missing field `reward_model.ground_truth`"),
        "{err}"
    );

    let ds = load_dataset(&path, &skipping()).unwrap();
    assert_eq!(ds.report.rows, 4);
    assert_eq!(ds.report.skipped.len(), 1);
    assert_eq!(ds.report.skipped[0].at, RowRef::Row(2));
    let ids: Vec<_> = ds.problems.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["0", "1", "3"],
        "ids come from extra_info.index, across row groups"
    );
    let p1 = &ds.problems[1];
    assert_eq!(
        p1.prompt,
        PromptInput::Chat(vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "What is 7*6?"),
        ])
    );
    assert_eq!(p1.answer, "42");
    assert_eq!(p1.source, "openai/gsm8k");
    assert_eq!(
        p1.extra,
        json!({"ability": "math", "extra_info": {"split": "test", "index": 1}})
    );
    assert_eq!(ds.problems[2].answer, "\\frac{1}{2}");
    assert_eq!(ds.problems[2].source, "lighteval/MATH");
}

/// A verl-shaped file with the Arrow types other writers produce: large strings, a dictionary
/// encoded `data_source`, floats, and no `extra_info.index` (ids fall back to the row index).
fn write_rust_parquet(path: &Path) {
    let msg_fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    let messages = StructArray::new(
        msg_fields.clone(),
        vec![
            Arc::new(StringArray::from(vec!["user", "user"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["Q zero", "Q one"])),
        ],
        None,
    );
    let item = Arc::new(Field::new("item", DataType::Struct(msg_fields), true));
    let prompt = ListArray::new(
        item,
        OffsetBuffer::new(vec![0, 1, 2].into()),
        Arc::new(messages),
        None,
    );
    let rm_fields = Fields::from(vec![Field::new("ground_truth", DataType::LargeUtf8, true)]);
    let reward_model = StructArray::new(
        rm_fields,
        vec![Arc::new(LargeStringArray::from(vec!["7", "x^2"])) as ArrayRef],
        None,
    );
    let source: DictionaryArray<Int32Type> = vec!["dapo", "dapo"].into_iter().collect();
    let ei_fields = Fields::from(vec![
        Field::new("difficulty", DataType::Float32, true),
        Field::new("n", DataType::Int64, true),
    ]);
    let extra_info = StructArray::new(
        ei_fields,
        vec![
            Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef,
            Arc::new(Int64Array::from(vec![Some(3), None])),
        ],
        None,
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(prompt),
        Arc::new(reward_model),
        Arc::new(source),
        Arc::new(extra_info),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", columns[0].data_type().clone(), true),
        Field::new("reward_model", columns[1].data_type().clone(), true),
        Field::new("data_source", columns[2].data_type().clone(), true),
        Field::new("extra_info", columns[3].data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn rust_written_parquet_with_other_arrow_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    write_rust_parquet(&path);
    let ds = load_dataset(&path, &LoadOptions::default()).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.problems[0].id, "0");
    assert_eq!(ds.problems[1].id, "1");
    assert_eq!(ds.problems[1].prompt.question(), "Q one");
    assert_eq!(ds.problems[1].answer, "x^2");
    assert_eq!(ds.problems[0].source, "dapo");
    assert_eq!(
        ds.problems[0].extra,
        json!({"extra_info": {"difficulty": 0.5, "n": 3}})
    );
    assert_eq!(
        ds.problems[1].extra,
        json!({"extra_info": {"difficulty": 1.5, "n": null}})
    );
}

#[test]
fn not_a_parquet_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.parquet");
    std::fs::write(&path, b"definitely not parquet").unwrap();
    let err = load_dataset(&path, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Parquet { .. }), "{err:?}");
    assert!(err.to_string().contains("fake.parquet"), "{err}");
}

/// The shared benchmark files (see `../shared/data/README.md` for the row counts).
#[test]
fn shared_benchmarks_load_with_documented_row_counts() {
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if !data_dir.is_dir() {
        eprintln!("skipping: {} not present", data_dir.display());
        return;
    }
    let expected = [
        ("aime24", 30),
        ("aime25", 30),
        ("amc23", 40),
        ("math500", 500),
        ("minerva_math", 272),
        ("olympiadbench", 675),
        ("gsm8k_test", 1319),
        ("dapo17k", 17398),
        ("math_train", 7500),
    ];
    assert_eq!(expected.map(|(n, _)| n), BENCHMARKS);
    for (name, rows) in expected {
        let mut ds = load_benchmark(&data_dir, name, &LoadOptions::default()).unwrap();
        assert_eq!(ds.len(), rows, "{name}");
        assert!(ds.problems.iter().all(|p| !p.answer.is_empty()), "{name}");
        if name == "dapo17k" {
            // README: 143 rows are whitespace-only duplicates of earlier rows.
            assert_eq!(ds.dedup(), 143);
        }
    }
}
