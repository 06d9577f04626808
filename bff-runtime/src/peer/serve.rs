//! Serving this pod's store image to a peer: `GET /internal/image` on the metrics
//! port, with the experience's peer token, once the pod is ready.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use crate::contract::PEER_IMAGE_PATH;
use crate::ingest::Progress;
use crate::store::Store;

/// Images written at once: each reads the whole store, so a pod serving clients
/// does not also serve every new replica at the same time.
const CONCURRENT_IMAGES: usize = 2;
/// The size of each piece of the streamed body.
const CHUNK_BYTES: usize = 256 * 1024;

pub struct ImageSource {
    pub store: Arc<Store>,
    pub progress: Arc<Progress>,
    pub token_file: PathBuf,
    /// `FORMAT:hash`, as the image header names it.
    pub definition: String,
    slots: Arc<Semaphore>,
}

impl ImageSource {
    pub fn new(
        store: Arc<Store>,
        progress: Arc<Progress>,
        token_file: PathBuf,
        definition: String,
    ) -> Self {
        ImageSource {
            store,
            progress,
            token_file,
            definition,
            slots: Arc::new(Semaphore::new(CONCURRENT_IMAGES)),
        }
    }
}

pub fn router(source: Arc<ImageSource>) -> Router {
    Router::new()
        .route(PEER_IMAGE_PATH, get(image))
        .with_state(source)
}

#[derive(Deserialize)]
struct ImageQuery {
    /// The definition the asking pod runs: an image of another is of no use to it.
    definition: Option<String>,
}

async fn image(
    State(source): State<Arc<ImageSource>>,
    headers: HeaderMap,
    Query(query): Query<ImageQuery>,
) -> Response {
    let Some(token) = super::read_token(&source.token_file) else {
        return refuse(StatusCode::NOT_FOUND, "this pod has no peer token");
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| super::same_token(p, &token)) {
        return refuse(StatusCode::UNAUTHORIZED, "a peer token is needed");
    }
    if query.definition.as_deref() != Some(source.definition.as_str()) {
        return refuse(
            StatusCode::CONFLICT,
            &format!("this pod runs definition {}", source.definition),
        );
    }
    if !source.progress.is_ready() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: still replaying",
        );
    }
    let Ok(slot) = source.slots.clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy writing other images");
    };
    let (chunks, mut pieces) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let store = source.store.clone();
    info!("writing the store image for a peer");
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let out = std::io::BufWriter::with_capacity(CHUNK_BYTES, Chunks(chunks));
        match store.export(out) {
            Ok(summary) => info!(
                entries = summary.entries,
                sha256 = %summary.sha256,
                "served the store image to a peer"
            ),
            Err(error) => warn!(%error, "serving the store image to a peer stopped"),
        }
    });
    let stream = futures::stream::poll_fn(move |cx| pieces.poll_recv(cx));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

/// The body's writer: each write becomes a piece of the response. A peer that
/// goes away closes the channel, and the export stops with an error.
struct Chunks(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the peer left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
