//! The HTTP server loop: hyper with the bounds axum's default `serve` leaves
//! open. A client must finish sending its request head within
//! `headerTimeoutSeconds` (slowloris, and sockets opened and left idle, including
//! between keep-alive requests), and a head is at most [`MAX_HEAD_BYTES`].

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use super::listener::StallGuardedListener;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

pub async fn serve(mut listener: StallGuardedListener, app: Router, header_timeout: Duration) {
    // HTTP/1.1 only: it is what WebSocket upgrades use, TLS and HTTP/2 end at
    // the ingress, and hyper's own HTTP/1 timer starts as soon as a connection
    // waits for a head (a sniffing auto-builder would wait for a first byte).
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    loop {
        let (stream, _address) = axum::serve::Listener::accept(&mut listener).await;
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            // A connection's end, by the client or by a timeout, is not an error
            // of the server's.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
