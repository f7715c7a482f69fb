//! One module per subcommand. Helpers shared by several subcommands live here.

pub mod bench;
pub mod eval;
pub mod generate;
pub mod report;
pub mod score;
pub mod sft;
pub mod train;
pub mod verify;

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
