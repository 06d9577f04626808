//! What every HTTP response goes through: a request id (taken from
//! `x-request-id` or made, and sent back), request metrics by route, CORS from
//! the spec, compression, and a bound on request bodies.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::SharedState;
use crate::metrics::{RequestLabel, RouteLabel};
use crate::spec::CorsSpec;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the API router. Layers run outside in: the request id is set first,
/// so everything after (metrics, logs, handlers) sees it.
pub fn wrap(router: Router, state: SharedState) -> Router {
    let api = &state.experience.spec.api;
    let mut router = router
        .layer(DefaultBodyLimit::max(api.limits.max_message_bytes as usize))
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), count));
    if let Some(cors) = &api.cors {
        router = router.layer(cors_layer(cors));
    }
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// CORS as the spec declares it (the compiler has checked the origins).
pub fn cors_layer(cors: &CorsSpec) -> CorsLayer {
    let origins: Vec<HeaderValue> = cors
        .allowed_origins
        .iter()
        .filter(|o| *o != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let any = cors.allowed_origins.iter().any(|o| o == "*");
    CorsLayer::new()
        .allow_origin(match any {
            true => AllowOrigin::any(),
            false => AllowOrigin::list(origins),
        })
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // Exactly the request headers docs/protocol.md documents: reads
        // (conditional, resumed), commands (idempotency, waiting, trace context).
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([header::ETAG, REQUEST_ID, header::RETRY_AFTER])
        .allow_credentials(cors.allow_credentials)
        .max_age(std::time::Duration::from_secs(u64::from(
            cors.max_age_seconds,
        )))
}

/// Counts each request by the route it matched, with the time to its response head.
async fn count(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .http_duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabel {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
