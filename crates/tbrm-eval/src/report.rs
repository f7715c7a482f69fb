//! `tbrm report`: training curves of one or several runs, side by side.
//!
//! Reads each run's `metrics.jsonl` (one object per step: `step` plus any of the metrics in
//! [`METRICS`]; other keys are ignored, `null` means "not measured at this step") and
//! `samples.jsonl` (`step`, `prompt`, `response`, `reward`), draws one chart per metric with one
//! line per run into `<metric>.png` and `<metric>.svg`, and writes `index.html` with the charts
//! and the last step's sample generations of each run.
//!
//! PNG text is drawn with plotters' pure-Rust `ab_glyph` renderer and a font compiled into the
//! binary (DejaVu Sans, `assets/`), so no system font library is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// Metric keys drawn, in page order, with chart titles.
pub const METRICS: [(&str, &str); 9] = [
    ("reward_mean", "Reward (mean)"),
    ("eval_accuracy", "Held-out accuracy"),
    ("kl", "KL to reference"),
    ("response_len", "Response length (tokens)"),
    ("step_s", "Seconds per step"),
    ("loss", "Loss"),
    ("lr", "Learning rate"),
    ("grad_norm", "Gradient norm"),
    ("tokens_per_s", "Tokens per second"),
];

/// Samples shown per run in the HTML page.
const MAX_SAMPLES_SHOWN: usize = 16;

/// Series with more points than this are per-step curves: drawn with markers off and, when
/// smoothing is on, as a faint raw line under its moving average.
const DENSE_POINTS: usize = 40;

/// Default `--smooth` window of `tbrm report`, in logged steps.
pub const DEFAULT_SMOOTH: usize = 10;

/// Trailing moving average over the last `window` points (fewer at the start), non-finite values
/// skipped; `window <= 1` returns the points unchanged. A per-step reward of 64 prompts is noisy
/// enough that the trend is hard to read without it.
pub fn moving_average(points: &[(u64, f64)], window: usize) -> Vec<(u64, f64)> {
    if window <= 1 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(points.len());
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut sum = 0.0;
    for &(step, v) in points {
        if !v.is_finite() {
            continue;
        }
        recent.push_back(v);
        sum += v;
        if recent.len() > window {
            sum -= recent.pop_front().unwrap_or(0.0);
        }
        out.push((step, sum / recent.len() as f64));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("no run folders given")]
    NoRuns,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SampleRow {
    pub step: u64,
    pub prompt: String,
    pub response: String,
    pub reward: f64,
}

/// What the report needs from one run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunData {
    pub dir: PathBuf,
    /// Legend label: the algorithm from `config.toml` when there is one, else the folder name.
    pub label: String,
    /// `algorithm` or `[algorithm] name` from `config.toml`.
    pub algorithm: Option<String>,
    /// Metric key -> (step, value), in file order.
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Highest step seen in `metrics.jsonl`.
    pub last_step: Option<u64>,
    /// The samples of the highest step in `samples.jsonl` (empty without that file).
    pub last_samples: Vec<SampleRow>,
}

fn folder_name(dir: &Path) -> String {
    // `canonicalize` turns `.` into a real name; fall back to the path as given.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// `algorithm = "tbrm"` or `[algorithm] name = "tbrm"` from `<dir>/config.toml`, if present.
fn read_algorithm(dir: &Path) -> Result<Option<String>, ReportError> {
    let path = dir.join("config.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ReportError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(match table.get("algorithm") {
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(toml::Value::Table(t)) => t.get("name").and_then(|v| v.as_str()).map(str::to_string),
        _ => None,
    })
}

/// Metric name -> (step, value) points, in file order.
type SeriesMap = BTreeMap<String, Vec<(u64, f64)>>;

fn read_metrics(path: &Path) -> Result<(SeriesMap, Option<u64>), ReportError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut series: SeriesMap = BTreeMap::new();
    let mut last_step = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ReportError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let obj: serde_json::Map<String, Value> =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let step = match obj.get("step") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad(format!("`step` must be a non-negative integer, got {v}")))?,
            None => return Err(bad("missing `step`".into())),
        };
        last_step = Some(last_step.map_or(step, |s: u64| s.max(step)));
        for (key, _) in METRICS {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let x = v
                        .as_f64()
                        .ok_or_else(|| bad(format!("`{key}` must be a number, got {v}")))?;
                    series.entry(key.to_string()).or_default().push((step, x));
                }
            }
        }
    }
    Ok((series, last_step))
}

fn read_last_samples(path: &Path) -> Result<Vec<SampleRow>, ReportError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: SampleRow = serde_json::from_str(line).map_err(|e| ReportError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        rows.push(row);
    }
    let last = rows.iter().map(|r| r.step).max();
    rows.retain(|r| Some(r.step) == last);
    Ok(rows)
}

/// Reads one run folder. `metrics.jsonl` is required; `samples.jsonl` and `config.toml` are
/// optional.
pub fn read_run(dir: &Path) -> Result<RunData, ReportError> {
    let (mut series, last_step) = read_metrics(&dir.join("metrics.jsonl"))?;
    if let Some(before) = read_eval_before(&dir.join("summary.json")) {
        // The accuracy before training is the held-out curve's step-0 point.
        let acc = series.entry("eval_accuracy".to_string()).or_default();
        if acc.first().is_none_or(|&(s, _)| s > 0) {
            acc.insert(0, (0, before));
        }
    }
    let last_samples = read_last_samples(&dir.join("samples.jsonl"))?;
    let algorithm = read_algorithm(dir)?;
    Ok(RunData {
        dir: dir.to_path_buf(),
        label: algorithm.clone().unwrap_or_else(|| folder_name(dir)),
        algorithm,
        series,
        last_step,
        last_samples,
    })
}

/// `eval_before` of a finished run's `summary.json`; absent while the run is going or when the
/// file is not a tbrm summary (the curve then simply starts at the first evaluation).
fn read_eval_before(path: &Path) -> Option<f64> {
    let text = fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("eval_before")?.as_f64()
}

/// Reads several runs and makes their labels unique: runs sharing an algorithm are told apart by
/// folder name, `tbrm (run-a)`.
pub fn read_runs(dirs: &[PathBuf]) -> Result<Vec<RunData>, ReportError> {
    if dirs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    let mut runs = dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in &mut runs {
        if labels.iter().filter(|l| **l == r.label).count() > 1 && r.algorithm.is_some() {
            r.label = format!("{} ({})", r.label, folder_name(&r.dir));
        }
    }
    Ok(runs)
}

/// Tableau 10 colours: distinguishable lines for up to ten runs, then they repeat.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType file compiled in; a failure here is a build mistake.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled DejaVuSans.ttf is not a valid font");
        }
    });
}

/// Tick labels that stay short for learning rates (1e-6) and token counts alike.
fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn padded_range(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad, hi + pad)
    }
}

type Series<'a> = (&'a str, &'a [(u64, f64)]);

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[Series<'_>],
    smooth: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let finite = || {
        lines
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(_, v)| v.is_finite())
    };
    let (xmin, xmax) = finite().fold((u64::MAX, 0), |(a, b), &(s, _)| (a.min(s), b.max(s)));
    let (ymin, ymax) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, v)| {
        (a.min(v), b.max(v))
    });
    if xmin > xmax {
        return Err("no finite values".into());
    }
    let (x0, x1) = if xmax > xmin {
        (xmin as f64, xmax as f64)
    } else {
        (xmin as f64 - 1.0, xmax as f64 + 1.0)
    };
    let (y0, y1) = padded_range(ymin, ymax);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| fmt_tick(*y))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let as_xy = |p: &[(u64, f64)]| -> Vec<(f64, f64)> {
            p.iter()
                .filter(|(_, v)| v.is_finite())
                .map(|&(s, v)| (s as f64, v))
                .collect()
        };
        let pts = as_xy(points);
        let dense = pts.len() > DENSE_POINTS;
        let main = if dense && smooth > 1 {
            // The raw values stay visible, faint, under the moving average.
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.mix(0.3)))
                .map_err(e)?;
            as_xy(&moving_average(points, smooth))
        } else {
            pts.clone()
        };
        let label = if dense && smooth > 1 {
            format!("{label} ({smooth}-step average)")
        } else {
            label.to_string()
        };
        chart
            .draw_series(LineSeries::new(main.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        // Sparse series (held-out evaluation every N steps, or one point) get markers so a
        // single value is still visible.
        if !dense {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Chart size in pixels (PNG) and user units (SVG).
const SIZE: (u32, u32) = (820, 480);

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The files a report consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub index_html: PathBuf,
    /// `(metric key, png, svg)` for every metric that some run recorded.
    pub charts: Vec<(String, PathBuf, PathBuf)>,
}

/// Draws the charts and writes `index.html` into `out_dir` (created if needed). Per-step
/// curves are drawn as a `smooth`-step moving average over the faint raw values (`smooth` <= 1:
/// raw values only).
pub fn write_report(
    runs: &[RunData],
    out_dir: &Path,
    smooth: usize,
) -> Result<ReportFiles, ReportError> {
    if runs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    register_font();
    let mut charts = Vec::new();
    for (key, title) in METRICS {
        let lines: Vec<Series<'_>> = runs
            .iter()
            .filter_map(|r| r.series.get(key).map(|s| (r.label.as_str(), s.as_slice())))
            .filter(|(_, s)| s.iter().any(|(_, v)| v.is_finite()))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let png = out_dir.join(format!("{key}.png"));
        let svg = out_dir.join(format!("{key}.svg"));
        let draw_err = |path: &Path| {
            let path = path.to_path_buf();
            move |message| ReportError::Draw { path, message }
        };
        draw_chart(
            &BitMapBackend::new(&png, SIZE).into_drawing_area(),
            title,
            &lines,
            smooth,
        )
        .map_err(draw_err(&png))?;
        draw_chart(
            &SVGBackend::new(&svg, SIZE).into_drawing_area(),
            title,
            &lines,
            smooth,
        )
        .map_err(draw_err(&svg))?;
        charts.push((key.to_string(), png, svg));
    }
    let index_html = out_dir.join("index.html");
    fs::write(&index_html, render_html(runs, &charts)).map_err(io_err(&index_html))?;
    Ok(ReportFiles { index_html, charts })
}

fn render_html(runs: &[RunData], charts: &[(String, PathBuf, PathBuf)]) -> String {
    let mut h = String::new();
    h.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>tbrm report</title>\n<style>\n\
         body { font-family: sans-serif; margin: 2em; max-width: 1700px; }\n\
         .charts { display: flex; flex-wrap: wrap; gap: 1em; }\n\
         figure { margin: 0; } figure img { width: 820px; max-width: 100%; border: 1px solid #ddd; }\n\
         table { border-collapse: collapse; margin-bottom: 2em; } td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }\n\
         pre { white-space: pre-wrap; margin: 0; max-width: 70em; }\n\
         </style>\n</head>\n<body>\n<h1>tbrm training report</h1>\n<h2>Runs</h2>\n<ul>\n",
    );
    for r in runs {
        let last = r
            .last_step
            .map_or("no steps".to_string(), |s| format!("last step {s}"));
        let _ = writeln!(
            h,
            "<li><b>{}</b>: <code>{}</code> ({last})</li>",
            html_escape(&r.label),
            html_escape(&r.dir.display().to_string())
        );
    }
    h.push_str("</ul>\n<h2>Curves</h2>\n");
    if charts.is_empty() {
        h.push_str("<p>No run recorded any of the plotted metrics.</p>\n");
    }
    h.push_str("<div class=\"charts\">\n");
    for (key, png, svg) in charts {
        let name = |p: &Path| html_escape(&p.file_name().unwrap_or_default().to_string_lossy());
        let title = METRICS
            .iter()
            .find(|(k, _)| k == key)
            .map_or(key.as_str(), |(_, t)| *t);
        let _ = writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{} (<code>{}</code>) <a href=\"{}\">PNG</a> <a href=\"{}\">SVG</a></figcaption></figure>",
            name(svg),
            html_escape(title),
            html_escape(title),
            html_escape(key),
            name(png),
            name(svg)
        );
    }
    h.push_str("</div>\n<h2>Samples at the last step</h2>\n");
    for r in runs {
        let _ = writeln!(h, "<h3>{}</h3>", html_escape(&r.label));
        if r.last_samples.is_empty() {
            h.push_str("<p>No samples.jsonl.</p>\n");
            continue;
        }
        let n = r.last_samples.len();
        let shown = n.min(MAX_SAMPLES_SHOWN);
        let _ = writeln!(
            h,
            "<p>step {}: {shown} of {n} samples</p>\n<table>\n<tr><th>reward</th><th>prompt</th><th>response</th></tr>",
            r.last_samples[0].step
        );
        for s in &r.last_samples[..shown] {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
                s.reward,
                html_escape(&s.prompt),
                html_escape(&s.response)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_run(root: &Path, name: &str, algorithm: Option<&str>, scale: f64) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut m = String::new();
        for step in 0..30u64 {
            let t = step as f64;
            let eval = if step % 10 == 9 {
                format!("{}", 0.2 + 0.01 * t * scale)
            } else {
                "null".into()
            };
            let _ = writeln!(
                m,
                "{{\"step\":{step},\"reward_mean\":{},\"loss\":{},\"kl\":{},\"response_len\":{},\"step_s\":1.5,\"lr\":2.5e-6,\"eval_accuracy\":{eval},\"unknown_key\":\"x\"}}",
                0.1 + 0.02 * t * scale,
                1.0 / (1.0 + t),
                0.001 * t,
                200.0 + 3.0 * t
            );
        }
        fs::write(dir.join("metrics.jsonl"), m).unwrap();
        let samples = "{\"step\":0,\"prompt\":\"old\",\"response\":\"old\",\"reward\":0}\n\
                       {\"step\":29,\"prompt\":\"What is 1<2?\",\"response\":\"<think>yes & no</think> \\\\boxed{1}\",\"reward\":1}\n";
        fs::write(dir.join("samples.jsonl"), samples).unwrap();
        if let Some(a) = algorithm {
            fs::write(
                dir.join("config.toml"),
                format!("[algorithm]\nname = \"{a}\"\nbeta = 0.002\n"),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn report_files_are_written_and_non_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fake_run(tmp.path(), "run-a", Some("tbrm"), 1.0);
        let b = fake_run(tmp.path(), "run-b", None, 0.5);
        let runs = read_runs(&[a, b]).unwrap();
        assert_eq!(runs[0].label, "tbrm");
        assert_eq!(runs[1].label, "run-b");
        assert_eq!(runs[0].last_samples.len(), 1);
        assert_eq!(runs[0].series["eval_accuracy"].len(), 3);
        assert!(!runs[0].series.contains_key("grad_norm"));

        let out = tmp.path().join("report");
        let files = write_report(&runs, &out, DEFAULT_SMOOTH).unwrap();
        let keys: Vec<_> = files.charts.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "reward_mean",
                "eval_accuracy",
                "kl",
                "response_len",
                "step_s",
                "loss",
                "lr"
            ]
        );
        for (_, png, svg) in &files.charts {
            let bytes = fs::read(png).unwrap();
            assert!(
                bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
                "{}",
                png.display()
            );
            let text = fs::read_to_string(svg).unwrap();
            assert!(
                text.contains("<svg") && text.contains("tbrm") && text.contains("run-b"),
                "{}",
                svg.display()
            );
        }
        let html = fs::read_to_string(&files.index_html).unwrap();
        assert!(html.contains("<img src=\"reward_mean.svg\""));
        assert!(html.contains("What is 1&lt;2?"), "prompt must be escaped");
        assert!(html.contains("&lt;think&gt;yes &amp; no&lt;/think&gt; \\boxed{1}"));
        assert!(
            !html.contains(">old<"),
            "only the last step's samples are shown"
        );
    }

    #[test]
    fn same_algorithm_labels_are_disambiguated() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fake_run(tmp.path(), "a", Some("grpo"), 1.0);
        let b = fake_run(tmp.path(), "b", Some("grpo"), 1.0);
        let runs = read_runs(&[a, b]).unwrap();
        assert_eq!(runs[0].label, "grpo (a)");
        assert_eq!(runs[1].label, "grpo (b)");
    }

    #[test]
    fn malformed_metrics_name_file_line_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("metrics.jsonl"),
            "{\"step\":0,\"loss\":1}\n{\"step\":1,\"loss\":\"high\"}\n",
        )
        .unwrap();
        let err = read_run(&dir).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl: line 2: `loss` must be a number"),
            "{err}"
        );
        fs::write(dir.join("metrics.jsonl"), "{\"loss\":1}\n").unwrap();
        let err = read_run(&dir).unwrap_err().to_string();
        assert!(err.contains("line 1: missing `step`"), "{err}");
        fs::write(dir.join("metrics.jsonl"), "{\"step\":0}\n{oops\n").unwrap();
        assert!(read_run(&dir).unwrap_err().to_string().contains("line 2"));
        let err = read_run(&tmp.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.jsonl"), "{err}");
    }

    #[test]
    fn moving_average_is_trailing_and_skips_non_finite() {
        let pts = [(1, 1.0), (2, 3.0), (3, f64::NAN), (4, 5.0), (5, 7.0)];
        assert_eq!(
            moving_average(&pts, 2),
            vec![(1, 1.0), (2, 2.0), (4, 4.0), (5, 6.0)]
        );
        assert_eq!(moving_average(&pts[..2], 1), pts[..2].to_vec());
        let long = moving_average(&pts, 10);
        assert_eq!(long.last(), Some(&(5, 4.0)));
    }

    #[test]
    fn tick_format() {
        assert_eq!(fmt_tick(2.5e-6), "2.5e-6");
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(1.0), "1");
        assert_eq!(fmt_tick(350.0), "350");
        assert_eq!(fmt_tick(0.0), "0");
    }
}
