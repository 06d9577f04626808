//! Fuzz target for the WebSocket protocols: sequences of client messages, most
//! shaped like the protocol's own with random fields, some not JSON at all, sent
//! to a running runtime on `/ws` and `/graphql/ws`. Whatever arrives, the server
//! answers or closes with a code it documents, never panics (a panic hook counts
//! panics on every thread), and keeps serving others. Bounded: 48 sequences per
//! protocol per run.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Close codes the server may use: its own (docs/protocol.md), graphql-ws's, and
/// the WebSocket protocol's for a bad frame or a message that is too big.
const KNOWN_CLOSE_CODES: &[u16] = &[
    1000, 1002, 1007, 1009, 4008, 4401, 4408, 1011, 4400, 4403, 4409, 4429, 4500, 4499,
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9_~.\\-]{0,24}",
        Just("postPage".to_string()),
        Just("p-1".to_string()),
        Just("0~0.0.1".to_string()),
        any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A GraphQL-ish document: tokens of the language in any order.
fn document() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "subscription",
        "query",
        "{",
        "}",
        "(",
        ")",
        "postPage",
        "key",
        "row",
        "op",
        "id",
        "where:",
        "since:",
        "\"x\"",
        "...",
        "fragment",
        "F",
        "on",
        "PostPage",
        "a:",
        "$v",
        "@include(if: true)",
        "__typename",
        "position",
        " ",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

fn native_message() -> impl Strategy<Value = Frame> {
    let typed = (
        prop::sample::select(vec!["subscribe", "unsubscribe", "auth", "ping", "command", "other"]),
        text(),
        text(),
        value(),
        prop::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(kind, id, projection, filter, since, delta)| {
            let mut message = json!({"type": kind, "id": id, "projection": projection, "where": filter, "delta": delta});
            if let Some(since) = since {
                message["since"] = since.into();
            }
            Frame::Text(message.to_string())
        });
    prop_oneof![
        6 => typed,
        1 => value().prop_map(|v| Frame::Text(v.to_string())),
        1 => any::<String>().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Binary),
    ]
}

fn graphql_message() -> impl Strategy<Value = Frame> {
    let typed = (
        prop::sample::select(vec![
            "connection_init",
            "subscribe",
            "complete",
            "ping",
            "pong",
            "start",
            "stop",
            "other",
        ]),
        text(),
        prop_oneof![
            document(),
            Just("subscription { postPage { op key } }".to_string())
        ],
        value(),
    )
        .prop_map(|(kind, id, query, variables)| {
            Frame::Text(
                json!({"type": kind, "id": id, "payload": {"query": query, "variables": variables}})
                    .to_string(),
            )
        });
    prop_oneof![
        6 => typed,
        1 => value().prop_map(|v| Frame::Text(v.to_string())),
        1 => any::<String>().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Binary),
    ]
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// Sends the frames, then reads until quiet or closed. A close must carry a known
/// code; an open connection must still answer.
fn exchange(mut socket: Socket, frames: &[Frame], probe: &str) -> Result<(), TestCaseError> {
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    for frame in frames {
        let sent = match frame {
            Frame::Text(text) => socket.send(tungstenite::Message::text(text.clone())),
            Frame::Binary(bytes) => socket.send(tungstenite::Message::binary(bytes.clone())),
        };
        if sent.is_err() {
            break; // closed by the server: its code is read below
        }
    }
    let _ = socket.send(tungstenite::Message::text(probe.to_string()));
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                let code = u16::from(frame.code);
                prop_assert!(
                    KNOWN_CLOSE_CODES.contains(&code),
                    "close code {code}: {frame:?}"
                );
                return Ok(());
            }
            Ok(_) => continue,
            // Quiet for 300 ms: the connection is open and idle.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Ok(())
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(())
            }
            Err(e) => {
                // A reset after the server closed is the server ending a connection
                // it refused; anything else is reported.
                let message = e.to_string();
                prop_assert!(message.contains("reset"), "{message}");
                return Ok(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocols_survive_any_client_messages() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let running = support::start("blog-post", |spec| {
        spec.api.limits.max_message_bytes = 4096;
    })
    .await;
    running.wait_ready().await;
    let address = running.runtime.http_addr.to_string();
    let base = running.base();
    tokio::task::spawn_blocking(move || {
        let config = Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&prop::collection::vec(native_message(), 1..12), |frames| {
                let (socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
                exchange(socket, &frames, r#"{"type":"ping"}"#)
            })
            .unwrap();
        let mut runner = TestRunner::new(config);
        runner
            .run(&prop::collection::vec(graphql_message(), 1..12), |frames| {
                let (socket, _) =
                    tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
                exchange(socket, &frames, r#"{"type":"ping"}"#)
            })
            .unwrap();
        // Still serving.
        assert_eq!(support::get(&format!("{base}/healthz"), &[]).0, 200);
        let (mut socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        socket
            .send(tungstenite::Message::text(r#"{"type":"ping"}"#))
            .unwrap();
        let pong = loop {
            if let tungstenite::Message::Text(t) = socket.read().unwrap() {
                break t.to_string();
            }
        };
        assert_eq!(pong, r#"{"type":"pong"}"#);
    })
    .await
    .unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}
