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

/// Logs an internal failure; returns the correlation id to give the client.
pub fn log_internal(error: impl std::fmt::Display) -> String {
    let id = correlation_id();
    tracing::error!(correlation_id = %id, error = %error, "request failed");
    id
}

/// A short random id that ties a client-visible error to its log line.
pub fn correlation_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}
