//! GraphQL requests are bounded before async-graphql runs them: depth, fields
//! (fragments counted each time they are spread), aliases, document size, body
//! size, batches, and, when set, the safelist. On HTTP and on graphql-transport-ws.

mod support;

use std::time::{Duration, Instant};

use facet_bff::spec::GraphqlLimits;
use serde_json::{json, Value};

fn post(base: &str, content_type: &str, body: String) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("{base}/graphql"))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or_default())
}

fn query(base: &str, query: &str) -> (u16, Value) {
    post(
        base,
        "application/json",
        json!({"query": query}).to_string(),
    )
}

/// The one error of a refused operation: its code and message.
fn refusal(response: &Value) -> (String, String) {
    let error = &response["errors"][0];
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        error["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// 2^20 fields once expanded: fragment Fi spreads F(i+1) twice.
fn fragment_bomb() -> String {
    let mut document = String::from("query { postPageList { items { ...F0 } } }\n");
    for i in 0..20 {
        document += &format!(
            "fragment F{i} on PostPage {{ ...F{} ...F{} }}\n",
            i + 1,
            i + 1
        );
    }
    document + "fragment F20 on PostPage { id }\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_queries_are_bounded_before_they_run() {
    let running = support::start("blog-post", |_| {}).await;
    running.wait_ready().await;
    let base = running.base();
    let limits = GraphqlLimits::default();
    tokio::task::spawn_blocking(move || {
        // What is within the limits runs.
        let (status, ok) = query(&base, "{ postPageList { items { id author { name } } } }");
        assert_eq!(status, 200);
        assert!(ok["data"]["postPageList"]["items"].is_array(), "{ok}");

        let started = Instant::now();
        let (_, bomb) = query(&base, &fragment_bomb());
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert_eq!(
            refusal(&bomb),
            (
                "QUERY_LIMIT".into(),
                format!(
                    "the query may resolve {} fields (a list's fields once per row of its page, fragments each time they are spread); at most {} are allowed",
                    1 + 100 * ((1 << 20) + 1),
                    limits.max_complexity
                )
            )
        );

        let aliases: String = (0..1000)
            .map(|i| format!("a{i}: postPageList(first: 1000) {{ items {{ id }} }} "))
            .collect();
        let (_, aliased) = query(&base, &format!("{{ {aliases} }}"));
        assert_eq!(refusal(&aliased).0, "QUERY_LIMIT");
        assert!(refusal(&aliased).1.starts_with("the document is "), "{aliased}");
        let aliases: String = (0..31).map(|i| format!("a{i}: postPageList {{ next }} ")).collect();
        let (_, aliased) = query(&base, &format!("{{ {aliases} }}"));
        assert_eq!(
            refusal(&aliased).1,
            format!("the query has 31 aliases; at most {} are allowed", limits.max_aliases)
        );

        let deep = format!("{{ {} id {} }}", "a { ".repeat(10), "}".repeat(10));
        let (_, deep) = query(&base, &deep);
        assert_eq!(
            refusal(&deep).1,
            format!("the query nests 11 levels deep; at most {} are allowed", limits.max_depth)
        );

        // Batches are off unless asked for.
        let batch = json!([{"query": "{ __typename }"}, {"query": "{ __typename }"}]);
        let (status, refused) = post(&base, "application/json", batch.to_string());
        assert_eq!(status, 400);
        assert_eq!(
            refused["error"]["message"],
            "batched requests are not accepted (graphqlLimits.maxBatch is 1)"
        );
        // Bodies are bounded by maxMessageBytes, and uploads are not taken at all.
        let big = json!({"query": "{ __typename }", "variables": {"pad": "x".repeat(100_000)}});
        let (status, _) = post(&base, "application/json", big.to_string());
        assert_eq!(status, 413);
        let (status, _) = post(&base, "multipart/form-data; boundary=x", "--x--".into());
        assert_eq!(status, 415);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_safelists_when_asked_for() {
    const DOCUMENT: &str = "{ postPageList { items { id } } }";
    let running = support::start("blog-post", |spec| {
        spec.api.graphql_limits.max_batch = 2;
        spec.api.graphql_limits.safelist = vec![DOCUMENT.into()];
    })
    .await;
    running.wait_ready().await;
    let base = running.base();
    tokio::task::spawn_blocking(move || {
        let (status, listed) = query(&base, DOCUMENT);
        assert_eq!(status, 200);
        assert!(
            listed["data"]["postPageList"]["items"].is_array(),
            "{listed}"
        );
        // By hash alone, as persisted-query clients send it.
        let hash = facet_bff::spec::compile::sha256_hex(DOCUMENT.as_bytes());
        let by_hash = json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        let (_, by_hash) = post(&base, "application/json", by_hash.to_string());
        assert_eq!(by_hash["data"], listed["data"]);

        let (_, other) = query(&base, "{ postPageList { items { title } } }");
        assert_eq!(
            refusal(&other),
            (
                "PERSISTED_QUERY_NOT_ALLOWED".into(),
                "only the documents of this experience's safelist are served".into()
            )
        );
        // A batch of two: each operation is admitted on its own.
        let batch = json!([{"query": DOCUMENT}, {"query": "{ __typename }"}]);
        let (status, answers) = post(&base, "application/json", batch.to_string());
        assert_eq!(status, 200);
        assert_eq!(answers[0]["data"], listed["data"]);
        assert_eq!(refusal(&answers[1]).0, "PERSISTED_QUERY_NOT_ALLOWED");
        let three = json!([{"query": DOCUMENT}, {"query": DOCUMENT}, {"query": DOCUMENT}]);
        let (status, refused) = post(&base, "application/json", three.to_string());
        assert_eq!(status, 400);
        assert_eq!(
            refused["error"]["message"],
            "3 operations in one request; at most 2 (graphqlLimits.maxBatch)"
        );
    })
    .await
    .unwrap();
}

fn next_text<S: std::io::Read + std::io::Write>(socket: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_operations_are_bounded_too() {
    let running = support::start("blog-post", |_| {}).await;
    running.wait_ready().await;
    let address = running.runtime.http_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let (mut socket, _) = tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
        socket
            .send(tungstenite::Message::text(r#"{"type":"connection_init"}"#))
            .unwrap();
        assert_eq!(next_text(&mut socket)["type"], "connection_ack");
        let bomb = fragment_bomb().replace("query {", "subscription {");
        // 31 aliases of a subscription the live core would plan: refused first.
        let aliases: String = (0..31).map(|i| format!("a{i}: postPage {{ key }} ")).collect();
        let aliases = format!("subscription {{ {aliases} }}");
        for (id, document) in [("bomb", bomb.as_str()), ("aliases", aliases.as_str())] {
            let subscribe = json!({"id": id, "type": "subscribe", "payload": {"query": document}});
            socket.send(tungstenite::Message::text(subscribe.to_string())).unwrap();
            let answer = next_text(&mut socket);
            assert_eq!(answer["type"], "error", "{answer}");
            assert_eq!(answer["id"], id);
            assert_eq!(answer["payload"][0]["extensions"]["code"], "QUERY_LIMIT", "{answer}");
        }
        // The connection goes on serving what is within the limits.
        let subscribe = json!({"id": "ok", "type": "subscribe", "payload": {"query": "subscription { postPage { key } }"}});
        socket.send(tungstenite::Message::text(subscribe.to_string())).unwrap();
        let answer = next_text(&mut socket);
        assert_eq!(answer["type"], "next", "{answer}");
    })
    .await
    .unwrap();
}
