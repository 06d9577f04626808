//! Who a request or connection acts for, and which rows that viewer may see: what
//! the live core and the command path need of identity, whatever the transport that
//! authenticated it (`serve/access.rs`).

use crate::projection::Row;
use crate::spec::expr::Bound;
use crate::spec::CompiledProjection;

/// How far past `exp` (and before `nbf`) a token is still taken: verification and
/// the expiry close of a streaming connection use the same leeway.
pub const TOKEN_LEEWAY_SECONDS: u64 = 30;

/// The client a request or connection acts for.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// The development console: no access rule applies.
    Console,
    /// A client with these claims, checked by each projection's `access` rule.
    Claims(serde_json::Value),
}

impl Viewer {
    /// The OAuth client the token was issued to (`azp`, else `client_id`), which
    /// names the client in field usage.
    pub fn client(&self) -> Option<&str> {
        let Viewer::Claims(claims) = self else {
            return None;
        };
        ["azp", "client_id"]
            .iter()
            .find_map(|claim| claims.get(claim).and_then(|v| v.as_str()))
    }

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
        let until = exp.saturating_add(TOKEN_LEEWAY_SECONDS);
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
