//! The HTTP server bounds what a client may hold before it has sent a request:
//! the time to send a request head (slowloris, idle sockets), the size of a
//! WebSocket frame (refused by its header, before its payload arrives), and the
//! console, which is not served in run mode unless asked for.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until the server closes the connection; how long that took.
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_must_arrive_in_time() {
    let running = support::start("blog-post", |spec| {
        spec.api.limits.header_timeout_seconds = 1;
    })
    .await;
    running.wait_ready().await;
    let address = running.runtime.http_addr;
    tokio::task::spawn_blocking(move || {
        // A socket opened and left silent.
        let mut idle = TcpStream::connect(address).unwrap();
        let closed = time_to_close(&mut idle, Duration::from_secs(5));
        assert!(
            closed < Duration::from_secs(3),
            "idle socket closed after {closed:?}"
        );

        // Slowloris: a header line every 300 ms, never the blank line.
        let mut slow = TcpStream::connect(address).unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut ended = false;
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                ended = true;
                break;
            }
        }
        if !ended {
            time_to_close(&mut slow, Duration::from_secs(3));
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "slow head held for {:?}",
            started.elapsed()
        );

        // A keep-alive connection is fine while it keeps asking.
        let mut keep = TcpStream::connect(address).unwrap();
        for _ in 0..3 {
            keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 256];
            let n = keep.read(&mut answer).unwrap();
            assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
            std::thread::sleep(Duration::from_millis(500));
        }
        // ...and closed once it idles past the bound.
        let closed = time_to_close(&mut keep, Duration::from_secs(5));
        assert!(
            closed < Duration::from_secs(3),
            "idle keep-alive closed after {closed:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_message_bytes_is_refused_by_its_header() {
    let running = support::start("blog-post", |spec| {
        spec.api.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    running.wait_ready().await;
    let address = running.runtime.http_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let (socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
        let tungstenite::stream::MaybeTlsStream::Plain(mut tcp) = socket.into_inner() else {
            unreachable!()
        };
        // The header of a masked 15 MiB text frame, and 1 KiB of its payload.
        let length: u64 = 15 << 20;
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(0u8, 1024));
        tcp.write_all(&frame).unwrap();
        // The server ends the connection without waiting for the other 15 MiB.
        let closed = time_to_close(&mut tcp, Duration::from_secs(5));
        assert!(closed < Duration::from_secs(2), "closed after {closed:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_off_in_run_mode() {
    let running = support::start("blog-post", |_| {}).await;
    let base = running.base();
    tokio::task::spawn_blocking(move || {
        for path in ["/", "/console/info"] {
            assert_eq!(support::get(&format!("{base}{path}"), &[]).0, 404, "{path}");
        }
        assert_eq!(support::get(&format!("{base}/healthz"), &[]).0, 200);
    })
    .await
    .unwrap();
}

/// The head of a raw HTTP/1.1 exchange: status line and headers, lower-cased names.
fn head(address: std::net::SocketAddr, request: &str) -> (String, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed before the head");
        bytes.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&bytes).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_compression_request_ids_and_request_metrics() {
    let running = support::start("blog-post", |spec| {
        spec.api.cors = Some(facet_bff::spec::CorsSpec {
            allowed_origins: vec!["https://blog.example".into()],
            allow_credentials: true,
            max_age_seconds: 600,
        });
    })
    .await;
    running.wait_ready().await;
    let address = running.runtime.http_addr;
    let checks = tokio::task::spawn_blocking(move || {
        // A preflight from the declared origin is allowed, with credentials.
        let preflight = "OPTIONS /v1/postPage HTTP/1.1\r\nHost: x\r\nOrigin: https://blog.example\r\n\
             Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n";
        let (status, headers) = head(address, preflight);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://blog.example")
        );
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
        // A command's preflight allows every header the API documents for it.
        let command = "OPTIONS /v1/commands/x HTTP/1.1\r\nHost: x\r\nOrigin: https://blog.example\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type,idempotency-key,prefer,traceparent,tracestate\r\n\r\n";
        let (_, headers) = head(address, command);
        let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
        for needed in [
            "content-type",
            "idempotency-key",
            "prefer",
            "traceparent",
            "tracestate",
            "last-event-id",
        ] {
            assert!(
                allowed.split(',').any(|h| h.trim() == needed),
                "{needed} in {allowed}"
            );
        }
        // Another origin is not.
        let (_, headers) = head(address, &preflight.replace("blog.example", "evil.example"));
        assert_eq!(header(&headers, "access-control-allow-origin"), None);

        // Compressed when asked for; a request id is made, or the caller's kept.
        let get = "GET /v1/postPage HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nOrigin: https://blog.example\r\n\r\n";
        let (status, headers) = head(address, get);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://blog.example")
        );
        let made = header(&headers, "x-request-id").expect("a request id");
        assert_eq!(made.len(), 36, "a UUID: {made}");
        let (_, headers) = head(
            address,
            &get.replace("\r\n\r\n", "\r\nX-Request-Id: abc-123\r\n\r\n"),
        );
        assert_eq!(header(&headers, "x-request-id"), Some("abc-123"));
    });
    checks.await.unwrap();
    let metrics = running.runtime.state.metrics.encode();
    assert!(
        metrics.contains(
            r#"facet_http_requests_total{route="/v1/{projection}",method="GET",status="200"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"facet_http_request_duration_seconds_count{route="/v1/{projection}"} "#),
        "{metrics}"
    );
}
