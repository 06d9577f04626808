//! Admission of a GraphQL operation, on HTTP and on both WebSocket protocols:
//! the safelist (persisted queries) and the limits of `api.graphqlLimits`, applied
//! before async-graphql parses, validates or runs anything.

use async_graphql::{BatchRequest, ErrorExtensions, Pos, Request, ServerError};
use axum::http::{header, StatusCode};

use crate::serve::ApiError;
use crate::spec::graphql_query;
use crate::spec::{ApiSpec, CompiledExperience};

/// Refused because the document costs more than the limits allow.
pub const LIMIT_CODE: &str = "QUERY_LIMIT";
/// Refused because a safelist is set and the document is not on it.
pub const NOT_ALLOWED_CODE: &str = "PERSISTED_QUERY_NOT_ALLOWED";

fn refused(code: &str, message: String) -> ServerError {
    async_graphql::Error::new(message)
        .extend_with(|_, e| e.set("code", code))
        .into_server_error(Pos::default())
}

/// Admits `request` or says why not. A request that names a safelisted document
/// by its hash alone gets the document's text. The parsed document is kept in the
/// request, so async-graphql does not parse it again.
pub fn admit(experience: &CompiledExperience, request: &mut Request) -> Result<(), ServerError> {
    let limits = &experience.spec.api.graphql_limits;
    if !experience.graphql_safelist.is_empty() {
        let hash = request
            .extensions
            .get("persistedQuery")
            .and_then(|p| p.clone().into_json().ok())
            .and_then(|p| p["sha256Hash"].as_str().map(str::to_string));
        let known = match (request.query.trim().is_empty(), hash) {
            (true, Some(hash)) => experience.graphql_safelist.get(&hash).cloned(),
            _ => {
                let hash = crate::spec::compile::sha256_hex(request.query.as_bytes());
                experience.graphql_safelist.get(&hash).cloned()
            }
        };
        match known {
            Some(document) => request.query = document,
            None => {
                return Err(refused(
                    NOT_ALLOWED_CODE,
                    "only the documents of this experience's safelist are served".into(),
                ))
            }
        }
    }
    graphql_query::check_text(&request.query, limits).map_err(|r| refused(LIMIT_CODE, r.0))?;
    let document = request.parsed_query()?;
    graphql_query::check_document(document, limits).map_err(|r| refused(LIMIT_CODE, r.0))
}

/// Admits the `payload` of a WebSocket `subscribe` (or `start`) message. Gives
/// the payload to pass on when it changed (a safelisted document named by hash).
pub fn admit_payload(
    experience: &CompiledExperience,
    payload: &serde_json::Value,
) -> Result<Option<serde_json::Value>, ServerError> {
    let Ok(mut request) = serde_json::from_value::<Request>(payload.clone()) else {
        return Ok(None); // malformed: async-graphql answers it as the protocol says
    };
    let query = request.query.clone();
    admit(experience, &mut request)?;
    if request.query == query {
        return Ok(None);
    }
    let mut payload = payload.clone();
    payload["query"] = request.query.into();
    Ok(Some(payload))
}

/// Reads the operations of a `POST /graphql`: JSON only, at most
/// `maxMessageBytes`, at most `maxBatch` operations. Gives them and whether
/// they came as a batch (the answer then is a list).
pub async fn read_requests(
    request: axum::extract::Request,
    api: &ApiSpec,
) -> Result<(Vec<Request>, bool), ApiError> {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !json {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "send GraphQL requests as application/json".into(),
        });
    }
    let max_body = api.limits.max_message_bytes as usize;
    let body = axum::body::to_bytes(request.into_body(), max_body)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: format!("the request body is larger than {max_body} bytes (maxMessageBytes)"),
        })?;
    let batch: BatchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("unreadable GraphQL request: {e}")))?;
    match batch {
        BatchRequest::Single(request) => Ok((vec![request], false)),
        BatchRequest::Batch(requests) => {
            let max_batch = api.graphql_limits.max_batch as usize;
            if requests.len() > max_batch {
                return Err(ApiError::bad_request(match max_batch {
                    1 => "batched requests are not accepted (graphqlLimits.maxBatch is 1)".into(),
                    n => format!(
                        "{} operations in one request; at most {n} (graphqlLimits.maxBatch)",
                        requests.len()
                    ),
                }));
            }
            Ok((requests, true))
        }
    }
}
