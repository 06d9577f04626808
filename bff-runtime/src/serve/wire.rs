//! Facet's native JSON messages (WebSocket `/ws` and SSE; see docs/protocol.md).
//! A change's row, patch, key and position are written once per change and shared
//! by every client it goes to; only the subscription id is per client.

use crate::live::change::json_string;
use crate::live::{Op, Update};

/// The JSON of one update; `id` names the subscription on a WebSocket, where one
/// connection carries many.
pub fn native_json(id: Option<&str>, update: &Update) -> String {
    let write_id = |text: &mut String| {
        if let Some(id) = id {
            text.push_str(",\"id\":");
            text.push_str(&json_string(id));
        }
    };
    match update {
        Update::Change { op, change } => {
            let mut text = String::with_capacity(96 + change.row_json().len());
            text.push_str("{\"type\":\"change\"");
            write_id(&mut text);
            text.push_str(",\"op\":\"");
            text.push_str(op.as_str());
            text.push_str("\",\"key\":");
            text.push_str(change.key_json());
            text.push_str(",\"position\":");
            text.push_str(change.position_json());
            match op {
                Op::Upsert => {
                    text.push_str(",\"row\":");
                    text.push_str(change.row_json());
                }
                Op::Patch => {
                    text.push_str(",\"patch\":");
                    text.push_str(change.patch_json());
                }
                Op::Delete | Op::Remove => {}
            }
            text.push('}');
            text
        }
        Update::Snapshot { position, rows } => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|(key, row)| serde_json::json!({"key": key, "row": row}))
                .collect();
            let mut value =
                serde_json::json!({"type": "snapshot", "position": position, "rows": rows});
            with_id(&mut value, id);
            value.to_string()
        }
        Update::Reset { reason } => {
            let mut value = serde_json::json!({"type": "reset", "reason": reason});
            with_id(&mut value, id);
            value.to_string()
        }
    }
}

fn with_id(value: &mut serde_json::Value, id: Option<&str>) {
    if let Some(id) = id {
        value["id"] = id.into();
    }
}

/// The position a client resumes from after this update, if it moves it.
pub fn position(update: &Update) -> Option<&str> {
    match update {
        Update::Change { change, .. } => Some(&change.position),
        Update::Snapshot { position, .. } => Some(position),
        Update::Reset { .. } => None,
    }
}
