//! Streaming transports in-process: SSE snapshot, changes and `Last-Event-ID`
//! resume; WebSocket resume with `since` and reset when the log no longer reaches
//! back; the connection limit.

mod support;

use std::io::BufRead;
use std::time::Duration;

use serde_json::json;

fn comment(post: &str, id: &str) -> serde_json::Value {
    json!({"type": "CommentAdded", "postId": post, "commentId": id, "text": "hi",
           "authorId": "u-ada", "at": "2026-11-23T00:00:00Z"})
}

/// Reads SSE events (name, id, data) until `count` have arrived.
fn sse_events(
    url: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Vec<(String, Option<String>, serde_json::Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut request = agent.get(url).header("Accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().unwrap();
    let reader = std::io::BufReader::new(response.body_mut().as_reader());
    // An event is its lines up to a blank line, in whatever order the fields come.
    let (mut events, mut name, mut id, mut data) = (Vec::new(), String::new(), None, None);
    for line in reader.lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push((std::mem::take(&mut name), id.take(), data));
                if events.len() == count {
                    break;
                }
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str(v.trim()).unwrap());
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_a_snapshot_then_changes_and_resumes_from_last_event_id() {
    let running = support::start("blog-post", |_| {}).await;
    let base = running.base();
    running.wait_ready().await;

    let url = format!("{base}/sse/postPage?key=p-1");
    let reader = tokio::task::spawn_blocking({
        let url = url.clone();
        move || sse_events(&url, &[], 2)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.send("comments", "p-1", &comment("p-1", "c-sse"));
    running.flush();
    let events = reader.await.unwrap();
    assert_eq!(events[0].0, "snapshot");
    let snapshot_position = events[0].1.clone().unwrap();
    assert_eq!(
        events[0].2["position"],
        snapshot_position.as_str(),
        "the event id is the position"
    );
    assert_eq!(events[0].2["rows"][0]["row"]["commentCount"], 3);
    assert_eq!(events[1].0, "change");
    assert_eq!(events[1].2["row"]["commentCount"], 4);
    assert_eq!(events[1].1.as_deref(), events[1].2["position"].as_str());
    assert_ne!(events[1].1, Some(snapshot_position.clone()));

    // A client that saw the snapshot resumes: it gets the change, and no snapshot.
    let resumed = tokio::task::spawn_blocking(move || {
        sse_events(&url, &[("Last-Event-ID", &snapshot_position)], 1)
    })
    .await
    .unwrap();
    assert_eq!(resumed[0].0, "change", "{resumed:?}");
    assert_eq!(resumed[0].2["row"]["commentCount"], 4);

    let metrics = running.runtime.state.metrics.encode();
    assert!(
        // The live change and the resumed one (snapshots are not changes).
        metrics.contains(r#"facet_deliveries_total{transport="sse"} 2"#),
        "{metrics}"
    );
    assert!(
        // Only the live change knows when its event was produced.
        metrics.contains(
            r#"facet_delivery_latency_seconds_count{transport="sse",projection="postPage"} 1"#
        ),
        "{metrics}"
    );
    // The live comment's batch, for each projection it changed (the replay before
    // readiness is not counted: its events are as old as the sample).
    for projection in ["postPage", "comment"] {
        let committed =
            format!(r#"facet_commit_freshness_seconds_count{{projection="{projection}"}} 1"#);
        assert!(metrics.contains(&committed), "{committed}: {metrics}");
    }
    // Every source partition is read to its end.
    for topic in ["blog.posts.v1", "blog.comments.v1", "blog.users.v1"] {
        for partition in 0..2 {
            let lag = format!(r#"facet_consumer_lag{{topic="{topic}",partition="{partition}"}} 0"#);
            assert!(metrics.contains(&lag), "{lag}: {metrics}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_resumes_with_since_or_resets_when_the_log_is_too_short() {
    let running = support::start("blog-post", |spec| {
        spec.store.change_log_length = 6;
        spec.api.limits.max_connections = 2;
    })
    .await;
    let base = running.base();
    let address = running.runtime.http_addr.to_string();
    running.wait_ready().await;
    let (status, list) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || support::get(&format!("{base}/v1/postPage"), &[])
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let position = list["position"].as_str().unwrap().to_string();
    // The same epoch, before any record: long trimmed from a six-change log (each comment is two changes: its row and the count).
    let beginning = position.split('~').next().unwrap().to_string();
    let metrics = running.runtime.state.metrics.encode();
    assert!(
        metrics.contains(
            // One per row listed (two posts).
            r#"facet_field_reads_total{projection="postPage",field="title",client="unknown",operation=""} 2"#
        ),
        "{metrics}"
    );
    running.send("comments", "p-2", &comment("p-2", "c-a"));
    running.send("comments", "p-2", &comment("p-2", "c-b"));
    running.flush();
    tokio::time::sleep(Duration::from_millis(500)).await;

    tokio::task::spawn_blocking(move || {
        let read = |socket: &mut tungstenite::WebSocket<_>| -> serde_json::Value {
            serde_json::from_str(socket_read(socket).as_str()).unwrap()
        };
        // Since the position of the list: the row the two changes after it touched,
        // as it is now.
        let (mut socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        let subscribe =
            json!({"type": "subscribe", "id": "s", "projection": "postPage", "since": position});
        socket
            .send(tungstenite::Message::text(subscribe.to_string()))
            .unwrap();
        let first = read(&mut socket);
        assert_eq!(first["type"], "change", "{first}");
        assert_eq!(
            (first["key"].as_str(), first["op"].as_str()),
            (Some("p-2"), Some("upsert"))
        );
        assert_eq!(first["row"]["commentCount"], 2);
        assert_ne!(first["position"].as_str(), Some(position.as_str()));

        // Since the beginning, long trimmed from the log: a reset, then a snapshot.
        let (mut old, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        let subscribe =
            json!({"type": "subscribe", "id": "s", "projection": "postPage", "since": beginning});
        old.send(tungstenite::Message::text(subscribe.to_string()))
            .unwrap();
        assert_eq!(read(&mut old)["type"], "reset");
        let snapshot = read(&mut old);
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["rows"].as_array().unwrap().len(), 2);

        // Two connections are the limit here: a third is refused.
        match tungstenite::connect(format!("ws://{address}/ws")) {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
            other => panic!("expected 503, got {:?}", other.map(|_| ())),
        }
    })
    .await
    .unwrap();
}

fn socket_read<S: std::io::Read + std::io::Write>(
    socket: &mut tungstenite::WebSocket<S>,
) -> String {
    loop {
        match socket.read().unwrap() {
            tungstenite::Message::Text(text) => return text.to_string(),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_reads_with_etags_sparse_fields_filters_and_cursors() {
    let running = support::start("scheduler", |spec| {
        spec.auth.jwt = None;
        spec.auth.anonymous = Some(true);
        spec.api.cache_control = Some("private, max-age=5".into());
    })
    .await;
    running.wait_ready().await;
    let base = running.base();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{base}/v1/slot/s-4?fields=providerName,timeZone");
        let response = agent.get(&url).call().unwrap();
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(response.headers()["cache-control"], "private, max-age=5");
        let body: serde_json::Value =
            serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"providerName": "Dr. Kim", "timeZone": "Asia/Tokyo"}),
            "sparse fields"
        );
        let again = agent
            .get(&url)
            .header("If-None-Match", &etag)
            .call()
            .unwrap();
        assert_eq!(again.status(), 304, "unchanged since the ETag");

        // Filters, a page of one, and the cursor to the next page.
        let (status, page) =
            support::get(&format!("{base}/v1/slot?providerId=dr-lee&limit=1"), &[]);
        assert_eq!(status, 200);
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        let next = page["next"].as_str().expect("a next cursor").to_string();
        let (_, rest) = support::get(
            &format!(
                "{base}/v1/slot?providerId=dr-lee&limit=1&after={}",
                next.replace('/', "%2F")
            ),
            &[],
        );
        let keys: Vec<&str> = [&page, &rest]
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap())
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["s-1", "s-2"]);

        let (status, error) = support::get(&format!("{base}/v1/slot?colour=red"), &[]);
        assert_eq!(status, 400);
        assert_eq!(
            error["error"]["message"],
            "cannot filter on `colour`: slot has no such field"
        );
        assert_eq!(support::get(&format!("{base}/v1/nothing"), &[]).0, 404);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_and_message_size_limits_hold_on_both_websockets() {
    let running = support::start("blog-post", |spec| {
        spec.api.limits.max_subscriptions_per_connection = 1;
        spec.api.limits.max_message_bytes = 1024;
    })
    .await;
    let address = running.runtime.http_addr.to_string();
    running.wait_ready().await;
    tokio::task::spawn_blocking(move || {
        let read = |socket: &mut tungstenite::WebSocket<_>| -> serde_json::Value {
            serde_json::from_str(socket_read(socket).as_str()).unwrap()
        };
        let too_big = tungstenite::Message::text(json!({"type": "ping", "pad": "x".repeat(2048)}).to_string());
        // Closed by the server within 5 s; a read that times out means still open.
        let ended = |socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>| {
            if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            }
            loop {
                match socket.read() {
                    Ok(tungstenite::Message::Close(_)) => return true,
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                    {
                        return false
                    }
                    Err(_) => return true,
                }
            }
        };

        let (mut native, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        for id in ["first", "second"] {
            let subscribe = json!({"type": "subscribe", "id": id, "projection": "postPage"});
            native.send(tungstenite::Message::text(subscribe.to_string())).unwrap();
        }
        assert_eq!(read(&mut native)["type"], "snapshot");
        let refused = read(&mut native);
        assert_eq!((refused["type"].as_str(), refused["id"].as_str()), (Some("error"), Some("second")), "{refused}");
        assert!(refused["message"].as_str().unwrap().contains("at most 1 subscriptions"), "{refused}");
        native.send(too_big.clone()).unwrap();
        assert!(ended(&mut native), "a message over maxMessageBytes ends the connection");
        let (mut graphql, _) = tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
        graphql.send(tungstenite::Message::text(r#"{"type":"connection_init"}"#)).unwrap();
        assert_eq!(read(&mut graphql)["type"], "connection_ack");
        for id in ["1", "2"] {
            let subscribe = json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { postPage { key } }"}});
            graphql.send(tungstenite::Message::text(subscribe.to_string())).unwrap();
            if id == "1" {
                assert_eq!(read(&mut graphql)["type"], "next", "the first subscription runs");
            }
        }
        let mut refused = None;
        while refused.is_none() {
            let message = read(&mut graphql);
            if message["type"] == "error" || message["payload"]["errors"].is_array() {
                refused = Some(message);
            }
        }
        let refused = refused.unwrap();
        assert_eq!(refused["id"], "2", "{refused}");
        assert!(refused.to_string().contains("at most 1 subscriptions"), "{refused}");
        graphql.send(too_big).unwrap();
        assert!(ended(&mut graphql), "a message over maxMessageBytes ends the connection");

        // A client that never sends connection_init is closed, as graphql-ws servers do.
        let (mut idle, _) = tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = idle.get_ref() {
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let close = loop {
            match idle.read() {
                Ok(tungstenite::Message::Close(frame)) => break frame.expect("a close code"),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(u16::from(close.code), 4408, "{close:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_subscriptions_resume_and_reset_like_the_other_transports() {
    let running = support::start("blog-post", |spec| {
        spec.store.change_log_length = 6;
    })
    .await;
    let base = running.base();
    let address = running.runtime.http_addr.to_string();
    running.wait_ready().await;
    let (_, list) =
        tokio::task::spawn_blocking(move || support::get(&format!("{base}/v1/postPage"), &[]))
            .await
            .unwrap();
    let position = list["position"].as_str().unwrap().to_string();
    let beginning = position.split('~').next().unwrap().to_string();
    running.send("comments", "p-2", &comment("p-2", "c-g"));
    running.flush();
    tokio::time::sleep(Duration::from_millis(500)).await;

    tokio::task::spawn_blocking(move || {
        // Every `next` payload's change, until `count` have arrived; `extra` is
        // more to select.
        let changes_with = |since: &str, count: usize, extra: &str| -> Vec<serde_json::Value> {
            let (mut socket, _) = tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
            socket.send(tungstenite::Message::text(r#"{"type":"connection_init"}"#)).unwrap();
            let query = format!("subscription {{ postPage(since: {}) {{ {extra} op key position row {{ commentCount }} }} }}", json!(since));
            let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
            socket.send(tungstenite::Message::text(subscribe.to_string())).unwrap();
            let mut changes = Vec::new();
            while changes.len() < count {
                let message: serde_json::Value = serde_json::from_str(&socket_read(&mut socket)).unwrap();
                if message["type"] == "next" {
                    changes.push(message["payload"]["data"]["postPage"].clone());
                }
            }
            changes
        };
        let changes = |since: &str, count: usize| changes_with(since, count, "");
        // From the list's position: the one row that changed since, as it is now.
        let resumed = changes(&position, 1);
        assert_eq!((resumed[0]["op"].as_str(), resumed[0]["key"].as_str()), (Some("upsert"), Some("p-2")));
        assert_eq!(resumed[0]["row"]["commentCount"], 1);
        // From before a log of three changes reaches: a reset, then the snapshot.
        let reset = changes(&beginning, 3);
        assert_eq!(reset[0]["op"], "reset", "{reset:?}");
        assert!(reset[1..].iter().all(|c| c["op"] == "snapshot"), "{reset:?}");
        // Those were answered by the live core; a selection it does not plan
        // (`__typename`) goes through the GraphQL executor, with the same result.
        let mut executed = changes_with(&beginning, 3, "__typename");
        for change in &mut executed {
            assert_eq!(change["__typename"], "PostPageChange");
            change.as_object_mut().unwrap().remove("__typename");
        }
        assert_eq!(executed, reset);
    })
    .await
    .unwrap();
    let metrics = running.runtime.state.metrics.encode();
    assert!(
        metrics.contains("facet_graphql_planned_subscriptions_total 2"),
        "{metrics}"
    );
}

/// SSE reads `?field=value` filters as REST does, by the field's declared type:
/// `?id=123` on a string field matches the row whose id is the text "123".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_rest_read_query_filters_alike() {
    let running = support::start("blog-post", |_| {}).await;
    running.send(
        "posts",
        "123",
        &json!({"type": "PostPublished", "postId": "123", "title": "Numbers", "body": "b",
                "authorId": "u-ada", "at": "2026-11-02T00:00:00Z"}),
    );
    running.flush();
    running.wait_ready().await;
    let base = running.base();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let rest = loop {
            let (status, body) = support::get(&format!("{base}/v1/postPage?id=123"), &[]);
            assert_eq!(status, 200, "{body}");
            if body["items"].as_array().unwrap().len() == 1 || std::time::Instant::now() > deadline
            {
                break body;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(rest["items"][0]["key"], "123", "{rest}");
        let sse = sse_events(&format!("{base}/sse/postPage?id=123"), &[], 1);
        let rows = sse[0].2["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{sse:?}");
        assert_eq!(rows[0]["key"], "123");
        // A field the projection does not have is refused by both.
        assert_eq!(
            support::get(&format!("{base}/sse/postPage?nope=1"), &[]).0,
            400
        );
        assert_eq!(
            support::get(&format!("{base}/v1/postPage?nope=1"), &[]).0,
            400
        );
    })
    .await
    .unwrap();
}

/// A pod going away ends every live connection with "going away" (1001), so
/// clients reconnect at once (to another pod) and resume, instead of waiting out a
/// dead TCP connection. SSE ends with a `close` event carrying the same code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_closes_every_live_connection_with_going_away() {
    let running = support::start("blog-post", |_| {}).await;
    let address = running.runtime.http_addr.to_string();
    let base = running.base();
    running.wait_ready().await;
    let (native, graphql, sse) = tokio::task::spawn_blocking(move || {
        let (mut native, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        let subscribe = json!({"type": "subscribe", "id": "s", "projection": "postPage"});
        native
            .send(tungstenite::Message::text(subscribe.to_string()))
            .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&socket_read(&mut native)).unwrap()["type"],
            "snapshot"
        );
        let (mut graphql, _) = tungstenite::connect(support::graphql_ws_request(&address)).unwrap();
        graphql
            .send(tungstenite::Message::text(r#"{"type":"connection_init"}"#))
            .unwrap();
        assert!(socket_read(&mut graphql).contains("connection_ack"));
        let sse = std::thread::spawn(move || sse_events(&format!("{base}/sse/postPage"), &[], 2));
        (native, graphql, sse)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.runtime.state.live.close_all();
    tokio::task::spawn_blocking(move || {
        for (name, mut socket) in [("native", native), ("graphql-transport-ws", graphql)] {
            let frame = loop {
                match socket.read() {
                    Ok(tungstenite::Message::Close(frame)) => break frame,
                    Ok(_) => continue,
                    Err(e) => panic!("{name}: closed without a close frame: {e}"),
                }
            };
            let frame = frame.unwrap_or_else(|| panic!("{name}: a close code"));
            assert_eq!(u16::from(frame.code), 1001, "{name}");
            assert!(
                frame.reason.starts_with("shutting down: reconnect"),
                "{name}: {}",
                frame.reason
            );
        }
        let events = sse.join().unwrap();
        assert_eq!(events[1].0, "close", "{events:?}");
        assert_eq!(events[1].2["code"], 1001);
    })
    .await
    .unwrap();
}

const USER_FIELDS: [&str; 3] = ["avatarUrl", "id", "name"];

/// The same selection (every user, every field) read over REST and a GraphQL
/// query, and subscribed to over the WebSocket, SSE and GraphQL (planned by the
/// live core, and through the executor): each client, named by its
/// `graphql-client-name`, is counted one per row and field delivered, so the
/// numbers agree: the rows of the read for a query, the snapshot's rows plus the
/// one pushed change for a subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_usage_counts_the_same_on_every_transport() {
    let running = support::start("blog-post", |_| {}).await;
    running.wait_ready().await;
    let base = running.base();
    let address = running.runtime.http_addr.to_string();
    let users = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let (status, list) = support::get(
                &format!("{base}/v1/user"),
                &[("graphql-client-name", "rest")],
            );
            assert_eq!(status, 200);
            list["items"].as_array().unwrap().len() as u64
        })
        .await
        .unwrap()
    };
    assert!(users >= 2, "the sample has users");
    let selected = USER_FIELDS.join(" ");
    let query = json!({"query": format!("query Users {{ userList {{ items {{ {selected} }} }} }}"),
                       "operationName": "Users"});
    let answer: serde_json::Value = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            ureq::post(format!("{base}/graphql"))
                .header("graphql-client-name", "graphql-query")
                .send_json(query)
                .unwrap()
                .body_mut()
                .read_json()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        answer["data"]["userList"]["items"]
            .as_array()
            .unwrap()
            .len() as u64,
        users
    );

    // Four subscribers; each says when it has its snapshot, then waits for one change.
    let (snapshots, snapshot_taken) = std::sync::mpsc::channel::<&str>();
    let mut subscribers = Vec::new();
    let ws = {
        let (address, snapshots) = (address.clone(), snapshots.clone());
        std::thread::spawn(move || {
            use tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{address}/ws").into_client_request().unwrap();
            request
                .headers_mut()
                .insert("graphql-client-name", "websocket".parse().unwrap());
            let (mut socket, _) = tungstenite::connect(request).unwrap();
            let subscribe = json!({"type": "subscribe", "id": "u", "projection": "user"});
            socket
                .send(tungstenite::Message::text(subscribe.to_string()))
                .unwrap();
            let read = |socket: &mut tungstenite::WebSocket<_>| -> serde_json::Value {
                serde_json::from_str(&socket_read(socket)).unwrap()
            };
            assert_eq!(read(&mut socket)["type"], "snapshot");
            snapshots.send("websocket").unwrap();
            assert_eq!(read(&mut socket)["type"], "change");
        })
    };
    subscribers.push(ws);
    let sse = {
        let (base, snapshots) = (base.clone(), snapshots.clone());
        std::thread::spawn(move || {
            let mut response = ureq::get(format!("{base}/sse/user"))
                .header("Accept", "text/event-stream")
                .header("graphql-client-name", "sse")
                .call()
                .unwrap();
            let reader = std::io::BufReader::new(response.body_mut().as_reader());
            let mut events = reader.lines().map(Result::unwrap).filter_map(|line| {
                line.strip_prefix("event:")
                    .map(|name| name.trim().to_string())
            });
            assert_eq!(events.next().as_deref(), Some("snapshot"));
            snapshots.send("sse").unwrap();
            assert_eq!(events.next().as_deref(), Some("change"));
        })
    };
    subscribers.push(sse);
    for (client, extra) in [("graphql-planned", ""), ("graphql-executed", "__typename")] {
        let (address, snapshots) = (address.clone(), snapshots.clone());
        let selected = selected.clone();
        subscribers.push(std::thread::spawn(move || {
            let mut request = support::graphql_ws_request(&address);
            request
                .headers_mut()
                .insert("graphql-client-name", client.parse().unwrap());
            let (mut socket, _) = tungstenite::connect(request).unwrap();
            socket
                .send(tungstenite::Message::text(r#"{"type":"connection_init"}"#))
                .unwrap();
            let query =
                format!("subscription Live {{ user {{ {extra} op row {{ {selected} }} }} }}");
            let subscribe = json!({"id": "1", "type": "subscribe",
                                   "payload": {"query": query, "operationName": "Live"}});
            socket
                .send(tungstenite::Message::text(subscribe.to_string()))
                .unwrap();
            let mut seen = 0;
            loop {
                let message: serde_json::Value =
                    serde_json::from_str(&socket_read(&mut socket)).unwrap();
                if message["type"] != "next" {
                    continue;
                }
                seen += 1;
                match message["payload"]["data"]["user"]["op"].as_str() {
                    Some("snapshot") if seen as u64 == users => snapshots.send(client).unwrap(),
                    Some("snapshot") => {}
                    _ => break,
                }
            }
        }));
    }
    drop(snapshots);
    tokio::task::spawn_blocking(move || {
        for _ in 0..4 {
            snapshot_taken
                .recv_timeout(Duration::from_secs(20))
                .unwrap();
        }
    })
    .await
    .unwrap();
    running.send(
        "users",
        "u-ada",
        &json!({"type": "UserRenamed", "userId": "u-ada", "name": "Ada L."}),
    );
    running.flush();
    tokio::task::spawn_blocking(move || subscribers.into_iter().for_each(|s| s.join().unwrap()))
        .await
        .unwrap();

    let usage = &running.runtime.state.metrics.usage;
    let count = |client: &str, operation: &str, field: &str| {
        let reader = usage.reader(Some(client), Some(operation));
        usage.counter("user", field, &reader).get()
    };
    // A live session adds what it delivered to the counters within a second.
    let pushed = || count("graphql-executed", "Live", "name") == users + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pushed() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for field in USER_FIELDS {
        assert_eq!(count("rest", "", field), users, "{field} over REST");
        assert_eq!(
            count("graphql-query", "Users", field),
            users,
            "{field} over a GraphQL query"
        );
        for client in ["websocket", "sse"] {
            assert_eq!(count(client, "", field), users + 1, "{field} over {client}");
        }
        for client in ["graphql-planned", "graphql-executed"] {
            assert_eq!(
                count(client, "Live", field),
                users + 1,
                "{field} over {client}"
            );
        }
    }
    // Fields nobody selected are not counted: the native protocols send the whole
    // row, and the user projection has no other field.
    assert_eq!(count("graphql-query", "Users", "nickname"), 0);
}
