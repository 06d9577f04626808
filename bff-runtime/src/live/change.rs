//! A change on its way to clients: shared by every subscription that receives it,
//! so its JSON is written once, however many clients it goes to.

use std::sync::OnceLock;

use parking_lot::Mutex;

use bytes::Bytes;

use crate::projection::{Row, RowOp};
use crate::store::Change;

/// What a change means for one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The row, whole: new to this client, or changed.
    Upsert,
    /// A JSON merge patch from the row the client has (subscriptions with `delta`).
    Patch,
    /// The row is gone.
    Delete,
    /// The row still exists, but this client no longer sees it.
    Remove,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Patch => "patch",
            Op::Delete => "delete",
            Op::Remove => "remove",
        }
    }

    /// Rows the change sends the client (a patch counts as its row, sent in part).
    pub fn row_count(self) -> usize {
        match self {
            Op::Upsert | Op::Patch => 1,
            Op::Delete | Op::Remove => 0,
        }
    }
}

pub struct LiveChange {
    /// The store's commit order; 0 for rows read from the store in a catch-up.
    pub seq: u64,
    pub projection: String,
    pub key: String,
    /// The row after the change (`None`: deleted).
    pub row: Option<Row>,
    /// The row before it.
    pub previous: Option<Row>,
    /// The client position after this change.
    pub position: String,
    pub event_time_ms: Option<i64>,
    json: Encoded,
    /// Whole messages, for clients whose message for this change is the same bytes
    /// (the same subscription id and op): written once, sent to all of them.
    frames: Mutex<Vec<(Op, String, Bytes)>>,
}

/// How many distinct whole messages a change keeps; past that they are written per
/// client (the fragments are still shared).
const FRAMES_KEPT: usize = 4;

/// JSON fragments, each written the first time a client needs it.
#[derive(Default)]
struct Encoded {
    key: OnceLock<String>,
    position: OnceLock<String>,
    row: OnceLock<String>,
    patch: OnceLock<String>,
}

impl LiveChange {
    pub fn committed(change: Change) -> LiveChange {
        LiveChange {
            seq: change.seq,
            projection: change.projection,
            key: change.key,
            row: match change.op {
                RowOp::Upsert(row) => Some(row),
                RowOp::Delete => None,
            },
            previous: change.previous,
            position: change.position,
            event_time_ms: change.event_time_ms,
            json: Encoded::default(),
            frames: Mutex::default(),
        }
    }

    /// A row as a catch-up sends it: where it is now, whatever happened before.
    pub fn catch_up(projection: &str, key: String, row: Option<Row>, position: String) -> Self {
        LiveChange {
            seq: 0,
            projection: projection.to_string(),
            key,
            row,
            previous: None,
            position,
            event_time_ms: None,
            json: Encoded::default(),
            frames: Mutex::default(),
        }
    }

    pub fn key_json(&self) -> &str {
        self.json.key.get_or_init(|| json_string(&self.key))
    }

    pub fn position_json(&self) -> &str {
        self.json
            .position
            .get_or_init(|| json_string(&self.position))
    }

    /// The row as JSON (`null` when deleted).
    pub fn row_json(&self) -> &str {
        self.json
            .row
            .get_or_init(|| serde_json::to_string(&self.row).unwrap_or_else(|_| "null".into()))
    }

    /// The merge patch from the previous row to this one.
    pub fn patch_json(&self) -> &str {
        self.json.patch.get_or_init(|| {
            let empty = Row::new();
            let patch = merge_patch(
                self.previous.as_ref().unwrap_or(&empty),
                self.row.as_ref().unwrap_or(&empty),
            );
            patch.to_string()
        })
    }

    /// The whole message for `op` on subscription `id` (a transport's encoding),
    /// written by `write` the first time and shared after that.
    pub fn frame(&self, op: Op, id: &str, write: impl FnOnce() -> String) -> Bytes {
        let mut frames = self.frames.lock();
        if let Some((_, _, bytes)) = frames.iter().find(|(o, i, _)| *o == op && i == id) {
            return bytes.clone();
        }
        let bytes = Bytes::from(write());
        if frames.len() < FRAMES_KEPT {
            frames.push((op, id.to_string(), bytes.clone()));
        }
        bytes
    }

    /// Seconds from the event's production to now, if known.
    pub fn delivery_latency(&self) -> Option<f64> {
        let produced = self.event_time_ms?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        Some((now - produced).max(0) as f64 / 1000.0)
    }
}

pub fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The JSON merge patch (RFC 7396) that turns `from` into `to`.
pub fn merge_patch(from: &Row, to: &Row) -> serde_json::Value {
    let mut patch = serde_json::Map::new();
    for (key, new) in to {
        match (from.get(key), new) {
            (Some(old), _) if old == new => {}
            (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => {
                patch.insert(key.clone(), merge_patch(old, new));
            }
            _ => {
                patch.insert(key.clone(), new.clone());
            }
        }
    }
    for key in from.keys().filter(|k| !to.contains_key(*k)) {
        patch.insert(key.clone(), serde_json::Value::Null);
    }
    serde_json::Value::Object(patch)
}
