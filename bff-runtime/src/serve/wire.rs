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
        Update::Snapshot {
            position,
            rows,
            more,
        } => {
            let mut text = String::from("{\"type\":\"snapshot\"");
            write_id(&mut text);
            // A page before the last gives no position: the client has not got
            // everything up to it yet.
            match more {
                true => text.push_str(",\"more\":true"),
                false => {
                    text.push_str(",\"position\":");
                    text.push_str(&json_string(position));
                }
            }
            text.push_str(",\"rows\":[");
            for (n, (key, row)) in rows.iter().enumerate() {
                if n > 0 {
                    text.push(',');
                }
                text.push_str("{\"key\":");
                text.push_str(&json_string(key));
                text.push_str(",\"row\":");
                text.push_str(&serde_json::to_string(row).unwrap_or_else(|_| "null".into()));
                text.push('}');
            }
            text.push_str("]}");
            text
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
        Update::Snapshot {
            position,
            more: false,
            ..
        } => Some(position),
        Update::Snapshot { more: true, .. } => None,
        Update::Reset { .. } => None,
    }
}
