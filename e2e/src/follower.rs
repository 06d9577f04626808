//! A live client that follows one projection through a Service, as a frontend
//! would: over the native WebSocket, SSE or graphql-transport-ws, reconnecting
//! to whichever pod the Service offers with the last position it was given, and
//! keeping the rows it holds from the snapshot, changes and removals it receives.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::service_proxy::ServiceEndpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
    GraphqlWs,
}

/// What a follower holds and has been told.
#[derive(Debug, Default, Clone)]
pub struct Followed {
    /// Key → row (for GraphQL, the selected fields).
    pub rows: BTreeMap<String, Value>,
    pub position: Option<String>,
    /// Every `reset` it was sent.
    pub resets: Vec<Value>,
    /// Connections opened, the first included.
    pub connections: usize,
    /// Whether a first snapshot has arrived.
    pub synced: bool,
}

impl Followed {
    /// Applies one update in the native/SSE shape.
    fn apply(&mut self, message: &Value) {
        match message["type"].as_str() {
            Some("snapshot") => {
                self.rows = message["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| (r["key"].as_str().unwrap().to_string(), r["row"].clone()))
                    .collect();
                self.synced = true;
            }
            Some("change") => self.change(message),
            Some("reset") => self.resets.push(message.clone()),
            _ => return,
        }
        if let Some(position) = message["position"].as_str() {
            self.position = Some(position.to_string());
        }
    }

    /// A change: `op`, `key`, `row`.
    fn change(&mut self, change: &Value) {
        let key = change["key"].as_str().unwrap_or_default().to_string();
        match change["op"].as_str() {
            Some("upsert") => {
                self.rows.insert(key, change["row"].clone());
            }
            Some("delete") | Some("remove") => {
                self.rows.remove(&key);
            }
            _ => {}
        }
    }

    /// Applies one GraphQL subscription event (`op key position row`); the rows of
    /// a snapshot arrive one event each.
    fn apply_graphql(&mut self, event: &Value, in_snapshot: &mut bool) {
        match event["op"].as_str() {
            Some("snapshot") => {
                if !*in_snapshot {
                    self.rows.clear();
                    *in_snapshot = true;
                }
                if let Some(key) = event["key"].as_str().filter(|k| !k.is_empty()) {
                    self.rows.insert(key.to_string(), event["row"].clone());
                }
                self.synced = true;
            }
            Some("reset") => self.resets.push(event.clone()),
            _ => {
                *in_snapshot = false;
                self.change(event);
            }
        }
        if let Some(position) = event["position"].as_str().filter(|p| !p.is_empty()) {
            self.position = Some(position.to_string());
        }
    }
}

/// A follower running on its own thread until dropped.
pub struct Follower {
    pub transport: Transport,
    state: Arc<Mutex<Followed>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Follows `projection` (GraphQL: selecting `fields` of each row).
    pub fn start(
        transport: Transport,
        endpoints: Arc<ServiceEndpoints>,
        projection: &str,
        fields: &str,
    ) -> Follower {
        let state: Arc<Mutex<Followed>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (state, stop) = (state.clone(), stop.clone());
            let (projection, fields) = (projection.to_string(), fields.to_string());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(endpoint) = endpoints.pick() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let since = state.lock().unwrap().position.clone();
                    let connected = match transport {
                        Transport::WebSocket => {
                            websocket(&endpoint, &projection, since, &state, &stop)
                        }
                        Transport::Sse => sse(&endpoint, &projection, since, &state, &stop),
                        Transport::GraphqlWs => {
                            graphql_ws(&endpoint, &projection, &fields, since, &state, &stop)
                        }
                    };
                    if !connected {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        });
        Follower {
            transport,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// What it holds now.
    pub fn followed(&self) -> Followed {
        self.state.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const READ_TIMEOUT: Duration = Duration::from_millis(300);

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads WebSocket text messages until the connection ends or `stop`; false when
/// it could not connect.
fn read_socket(
    request: tungstenite::handshake::client::Request,
    first: Vec<String>,
    stop: &AtomicBool,
    mut each: impl FnMut(Value),
) -> bool {
    let Ok((mut socket, _)) = tungstenite::connect(request) else {
        return false;
    };
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_mut() {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    }
    for message in first {
        if socket.send(tungstenite::Message::text(message)).is_err() {
            return true;
        }
    }
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                if let Ok(value) = serde_json::from_str(&text) {
                    each(value);
                }
            }
            Ok(tungstenite::Message::Close(_)) => return true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if timed_out(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
}

fn websocket(
    endpoint: &str,
    projection: &str,
    since: Option<String>,
    state: &Mutex<Followed>,
    stop: &AtomicBool,
) -> bool {
    use tungstenite::client::IntoClientRequest;
    let mut subscribe =
        serde_json::json!({"type": "subscribe", "id": "f", "projection": projection});
    if let Some(since) = since {
        subscribe["since"] = since.into();
    }
    let request = format!("ws://{endpoint}/ws").into_client_request().unwrap();
    state.lock().unwrap().connections += 1;
    read_socket(request, vec![subscribe.to_string()], stop, |message| {
        state.lock().unwrap().apply(&message)
    })
}

fn graphql_ws(
    endpoint: &str,
    projection: &str,
    fields: &str,
    since: Option<String>,
    state: &Mutex<Followed>,
    stop: &AtomicBool,
) -> bool {
    let arguments = since
        .map(|s| format!("(since: {})", serde_json::json!(s)))
        .unwrap_or_default();
    let query = format!(
        "subscription {{ {projection}{arguments} {{ op key position row {{ {fields} }} }} }}"
    );
    let subscribe =
        serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    state.lock().unwrap().connections += 1;
    let mut in_snapshot = false;
    read_socket(
        crate::graphql_ws_request(endpoint),
        vec![
            r#"{"type":"connection_init","payload":{}}"#.to_string(),
            subscribe.to_string(),
        ],
        stop,
        |message| {
            if message["type"] == "next" {
                let event = &message["payload"]["data"][projection];
                state.lock().unwrap().apply_graphql(event, &mut in_snapshot);
            }
        },
    )
}

fn sse(
    endpoint: &str,
    projection: &str,
    since: Option<String>,
    state: &Mutex<Followed>,
    stop: &AtomicBool,
) -> bool {
    let Ok(mut stream) = TcpStream::connect(endpoint) else {
        return false;
    };
    let resume = since
        .map(|p| format!("Last-Event-ID: {p}\r\n"))
        .unwrap_or_default();
    // HTTP/1.0: the event stream comes without chunked encoding.
    if write!(
        stream,
        "GET /sse/{projection} HTTP/1.0\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .is_err()
    {
        return false;
    }
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    state.lock().unwrap().connections += 1;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return true,
            Ok(_) if line.ends_with('\n') => {
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    if let Ok(message) = serde_json::from_str::<Value>(data) {
                        state.lock().unwrap().apply(&message);
                    }
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e) if timed_out(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
}
