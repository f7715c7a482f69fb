//! `tbrm-verify`: the `tbrm verify` command as a binary of its own. `tbrm` links libtorch, whose
//! start-up (~0.4 s) every `tbrm` command pays; checking answers needs none of it, so this binary
//! depends on `tbrm-verify` alone.
//!
//! Same flags, output and exit status as `tbrm verify`: the command's module is compiled here
//! from its one source file in `tbrm-cli` rather than copied, so the two cannot drift apart. That
//! file must therefore keep to `tbrm_verify`, `clap`, `anyhow`, `serde_json` and `std`.

use clap::Parser;

#[path = "../../../tbrm-cli/src/cmd/verify.rs"]
mod verify;

/// Check math answers against gold answers (`tbrm verify` without libtorch).
#[derive(Parser)]
#[command(name = "tbrm-verify", version)]
struct Cli {
    #[command(flatten)]
    args: verify::Args,
}

fn main() {
    let cli = Cli::parse();
    // Reported as `tbrm`'s main reports a failed command.
    if let Err(e) = verify::run(cli.args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
