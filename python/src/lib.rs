//! `tbrm_verify._tbrm_verify`: the Python extension module over the `tbrm-verify` crate.
//! `verify` and `verify_batch` release the GIL while they work; `verify_batch` runs on a worker
//! pool built for the call (no pool outlives it, so a process that forks afterwards, as
//! `multiprocessing` and data loaders do, inherits no thread pool it cannot use). The pure-Python
//! package `tbrm_verify` re-exports these and adds the verl and TRL reward functions.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use rayon::prelude::*;

/// The judgement on one (gold, response) pair.
#[pyclass(module = "tbrm_verify", frozen, eq, get_all, skip_from_py_object)]
#[derive(Clone, PartialEq)]
struct Verdict {
    /// Whether the extracted answer is equivalent to the gold answer.
    correct: bool,
    /// The answer text extracted from the response, or None.
    extracted: Option<String>,
    /// Why: which comparison decided, or what failed.
    reason: String,
}

#[pymethods]
impl Verdict {
    #[new]
    #[pyo3(signature = (correct, extracted=None, reason=String::new()))]
    fn new(correct: bool, extracted: Option<String>, reason: String) -> Self {
        Self {
            correct,
            extracted,
            reason,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let repr = |s: &str| -> PyResult<String> {
            Ok(PyString::new(py, s).repr()?.to_string_lossy().into_owned())
        };
        let extracted = match &self.extracted {
            Some(e) => repr(e)?,
            None => "None".into(),
        };
        let correct = if self.correct { "True" } else { "False" };
        Ok(format!(
            "Verdict(correct={correct}, extracted={extracted}, reason={})",
            repr(&self.reason)?
        ))
    }

    /// Pickling support: the constructor's arguments.
    fn __getnewargs__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (self.correct, self.extracted.clone(), self.reason.clone()).into_pyobject(py)
    }
}

impl From<tbrm_verify::Verdict> for Verdict {
    fn from(v: tbrm_verify::Verdict) -> Self {
        Self {
            correct: v.correct,
            extracted: v.extracted,
            reason: v.reason,
        }
    }
}

/// The text of a `str` argument. Lone surrogates (text that is not valid Unicode) are replaced
/// rather than raising, so such an input gets a verdict like any other.
fn text<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, str>> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_string_lossy()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be str, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// The texts of a sequence of `str` (a bare `str` is refused rather than read as characters).
fn texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a sequence of str, not a str"
        )));
    }
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, item) in obj.try_iter()?.enumerate() {
        out.push(text(&item?, &format!("{what}[{i}]"))?.into_owned());
    }
    Ok(out)
}

/// One verification; a panic inside the verifier (a bug) becomes an incorrect verdict with the
/// panic message as its reason instead of unwinding into Python.
fn verify_one(gold: &str, response: &str) -> tbrm_verify::Verdict {
    catch_unwind(AssertUnwindSafe(|| tbrm_verify::verify(gold, response))).unwrap_or_else(|e| {
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tbrm_verify::Verdict {
            correct: false,
            extracted: None,
            reason: format!("internal error: {msg}"),
        }
    })
}

/// Verifies `response` (a full model response or a bare answer) against `gold`.
#[pyfunction]
fn verify(
    py: Python<'_>,
    gold: &Bound<'_, PyAny>,
    response: &Bound<'_, PyAny>,
) -> PyResult<Verdict> {
    let gold = text(gold, "gold")?;
    let response = text(response, "response")?;
    let (gold, response) = (gold.as_ref(), response.as_ref());
    Ok(py.detach(|| verify_one(gold, response)).into())
}

/// Verifies `responses[i]` against `golds[i]` for every i, on `threads` worker threads (None or
/// 0: one per core); the verdicts come back in input order.
#[pyfunction]
#[pyo3(signature = (golds, responses, threads=None))]
fn verify_batch(
    py: Python<'_>,
    golds: &Bound<'_, PyAny>,
    responses: &Bound<'_, PyAny>,
    threads: Option<usize>,
) -> PyResult<Vec<Verdict>> {
    let golds = texts(golds, "golds")?;
    let responses = texts(responses, "responses")?;
    if golds.len() != responses.len() {
        return Err(PyValueError::new_err(format!(
            "golds and responses differ in length: {} and {}",
            golds.len(),
            responses.len()
        )));
    }
    let threads = threads.unwrap_or(0);
    let verdicts = py.detach(|| {
        let sequential = || {
            golds
                .iter()
                .zip(&responses)
                .map(|(g, r)| verify_one(g, r))
                .collect::<Vec<_>>()
        };
        if threads == 1 || golds.len() <= 1 {
            return Ok(sequential());
        }
        tbrm_verify::jsonl::with_threads(threads, || {
            golds
                .par_iter()
                .zip(responses.par_iter())
                .map(|(g, r)| verify_one(g, r))
                .collect::<Vec<_>>()
        })
        .map_err(|e| e.to_string())
    });
    let verdicts = verdicts.map_err(PyValueError::new_err)?;
    Ok(verdicts.into_iter().map(Verdict::from).collect())
}

#[pymodule]
fn _tbrm_verify(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Verdict>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
