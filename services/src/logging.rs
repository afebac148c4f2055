//! Logging for the binaries: `RUST_LOG` when set, a default filter otherwise.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber writing to `writer`, filtered by `RUST_LOG` or `default`.
/// Colours only when `terminal` says the output is a terminal.
pub fn init(
    default: &str,
    writer: impl for<'w> MakeWriter<'w> + Send + Sync + 'static,
    terminal: bool,
) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_ansi(terminal)
        .with_writer(writer)
        .with_env_filter(filter)
        .init();
}
