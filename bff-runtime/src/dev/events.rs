//! Sample event files: JSON lines of `{"source": ..., "key": ..., "value": {...}}`,
//! kept beside each sample spec as `<sample>.events.jsonl`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One event of a sample file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEvent {
    /// The spec source (not the topic) the event belongs to.
    pub source: String,
    /// The Kafka message key; events with the same key keep their order.
    #[serde(default)]
    pub key: Option<String>,
    /// The message value.
    pub value: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The events file that belongs to a sample spec: `x.yaml` → `x.events.jsonl`.
pub fn events_file_for(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("events.jsonl")
}

/// Reads an events file; blank lines and lines starting with `#` are skipped.
pub fn read_events(path: &Path) -> Result<Vec<SampleEvent>, EventsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EventsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_events(path, &text)
}

pub fn parse_events(path: &Path, text: &str) -> Result<Vec<SampleEvent>, EventsFileError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| EventsFileError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}
