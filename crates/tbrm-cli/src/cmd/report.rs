//! `tbrm report RUN_DIR [RUN_DIR ...] [--output DIR]`: training curves of one or several runs
//! (reward, held-out accuracy, KL, response length, step time, ...) as PNG and SVG charts with
//! one line per run, and an `index.html` showing them next to each run's last sample
//! generations. The work is in `tbrm_eval::report`.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Run folders, each with a `metrics.jsonl` (and optionally `samples.jsonl`, `config.toml`).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where to write the charts and index.html. Default: `RUN_DIR/report` for one run,
    /// `./report` for several.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Per-step curves (reward, loss, KL, ...) are drawn as a moving average over this many
    /// logged steps, over the faint raw values; 1 draws the raw values only.
    #[arg(long, default_value_t = tbrm_eval::report::DEFAULT_SMOOTH)]
    pub smooth: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match (&args.output, args.runs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.join("report"),
        (None, _) => PathBuf::from("report"),
    };
    let runs = tbrm_eval::report::read_runs(&args.runs).context("reading runs")?;
    let files = tbrm_eval::report::write_report(&runs, &out, args.smooth)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    for r in &runs {
        let steps = r
            .last_step
            .map_or("no steps".to_string(), |s| format!("last step {s}"));
        println!("{}: {} ({steps})", r.label, r.dir.display());
    }
    println!(
        "wrote {} charts (PNG + SVG) and {}",
        files.charts.len(),
        files.index_html.display()
    );
    Ok(())
}
