//! Who is asking, and which rows they may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

use crate::projection::Row;
use crate::spec::expr::Bound;
use crate::spec::CompiledProjection;

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

/// The client a request or connection acts for.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// The development console: no access rule applies.
    Console,
    /// A client with these claims, checked by each projection's `access` rule.
    Claims(serde_json::Value),
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
                let Some(token) = token else {
                    return Err(Refused {
                        status: StatusCode::UNAUTHORIZED,
                        reason: "missing",
                        message: "a bearer token is required".into(),
                    });
                };
                verifier
                    .verify(&token)
                    .await
                    .map(Viewer::Claims)
                    .map_err(|e| Refused {
                        status: StatusCode::UNAUTHORIZED,
                        reason: e.reason,
                        message: e.message,
                    })
            }
        }
    }
}

impl Viewer {
    /// Time left before the viewer's token expires, if it has an `exp`: with the
    /// same leeway verification allows, so a token accepted inside the leeway is
    /// not closed at once.
    pub fn expires_in(&self) -> Option<std::time::Duration> {
        let Viewer::Claims(claims) = self else {
            return None;
        };
        let exp = claims.get("exp")?.as_u64()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let until = exp.saturating_add(super::jwt::LEEWAY_SECONDS);
        Some(std::time::Duration::from_secs(until.saturating_sub(now)))
    }

    /// The token's subject (`sub`), if it has one.
    fn subject(&self) -> Option<&str> {
        match self {
            Viewer::Console => None,
            Viewer::Claims(claims) => claims.get("sub")?.as_str(),
        }
    }

    /// A token sent in-band to keep a connection open: accepted only for the same
    /// subject. Its subscriptions' rows were chosen for this viewer, and moving them
    /// to another identity without a new snapshot would mix two users' views; a
    /// client that changes user reconnects.
    pub fn refreshed_by(&self, fresh: Viewer) -> Result<Viewer, String> {
        match self.subject() == fresh.subject() {
            true => Ok(fresh),
            false => Err(
                "a token sent in-band must be for the same subject (sub); reconnect to change user"
                    .into(),
            ),
        }
    }

    /// Whether the projection's access rule lets this viewer see `row`. A rule that
    /// fails (e.g. a claim the token lacks) hides the row: access fails closed.
    pub fn can_see(&self, projection: &CompiledProjection, row: &Row) -> bool {
        let (Viewer::Claims(claims), Some(access)) = (self, &projection.access) else {
            return true;
        };
        let row = Bound::row(row);
        let auth = Bound::json(claims);
        matches!(
            access.eval(&[("row", &row), ("auth", &auth)]),
            Ok(cel::Value::Bool(true))
        )
    }
}
