//! Who is asking, and which rows they may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

pub use crate::viewer::Viewer;

/// How the runtime identifies clients.
#[derive(Clone)]
pub enum AuthMode {
    /// The spec says `anonymous: true`: every client has empty claims.
    Anonymous,
    /// Bearer JWTs from the `Authorization` header, or the `access_token` query
    /// parameter where a client cannot set headers (EventSource, browser WebSocket).
    Jwt(Arc<super::jwt::JwtVerifier>),
    /// `facet-bff dev` only: a client names the user it acts as (`?as=alice` or the
    /// `X-Facet-Dev-User` header); without one it is the console and sees every row.
    Dev,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl AuthMode {
    pub async fn viewer(
        &self,
        headers: &HeaderMap,
        query: &BTreeMap<String, String>,
    ) -> Result<Viewer, Refused> {
        match self {
            AuthMode::Anonymous => Ok(Viewer::Claims(serde_json::json!({}))),
            AuthMode::Dev => {
                let named = query.get("as").cloned().or_else(|| {
                    headers
                        .get("x-facet-dev-user")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                });
                Ok(match named.filter(|n| !n.is_empty()) {
                    Some(sub) => Viewer::Claims(serde_json::json!({ "sub": sub })),
                    None => Viewer::Console,
                })
            }
            AuthMode::Jwt(verifier) => {
                let token = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::to_string)
                    .or_else(|| query.get("access_token").cloned());
                match token {
                    Some(token) => verify(verifier, &token).await,
                    None => Err(Refused {
                        status: StatusCode::UNAUTHORIZED,
                        reason: "missing",
                        message: "a bearer token is required".into(),
                    }),
                }
            }
        }
    }

    /// The viewer a token sent in-band stands for (a refresh on an open
    /// connection): checked as a bearer token is, with no header around it.
    pub async fn viewer_for_token(&self, token: &str) -> Result<Viewer, Refused> {
        match self {
            AuthMode::Anonymous => Ok(Viewer::Claims(serde_json::json!({}))),
            // Dev mode names users by query or header, never by token.
            AuthMode::Dev => Ok(Viewer::Console),
            AuthMode::Jwt(verifier) => verify(verifier, token).await,
        }
    }
}

async fn verify(verifier: &super::jwt::JwtVerifier, token: &str) -> Result<Viewer, Refused> {
    verifier
        .verify(token)
        .await
        .map(Viewer::Claims)
        .map_err(|e| Refused {
            status: StatusCode::UNAUTHORIZED,
            reason: e.reason,
            message: e.message,
        })
}
