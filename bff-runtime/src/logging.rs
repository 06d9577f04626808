//! Logging for both binaries: human-readable text by default (coloured only on a
//! terminal, so files and `kubectl logs` stay clean), or one JSON object per line
//! with `FACET_LOG_FORMAT=json` for log pipelines. `RUST_LOG` sets the levels.

use std::io::IsTerminal;

pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var(crate::contract::ENV_LOG_FORMAT).is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
}
