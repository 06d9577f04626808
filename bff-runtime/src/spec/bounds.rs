//! The bounds of every number a tenant writes in a spec, in one place.
//!
//! The CRD schema carries them (`#[schemars(range(...))]` in `types.rs` names
//! these constants, so the API server refuses a value outside its bound), and
//! the compiler checks them again: `facet-bff validate` refuses them too, and so
//! does the operator for an object stored before a bound existed. Every bound
//! is listed in `docs/limits.md`.

use super::error::SpecError;

/// An inclusive range of allowed values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub min: i64,
    pub max: i64,
}

impl Bound {
    const fn new(min: i64, max: i64) -> Bound {
        Bound { min, max }
    }

    /// What is wrong with `value`, if it is outside the bound.
    pub fn refuse(self, value: i64) -> Option<String> {
        if value < self.min {
            Some(match self.min {
                0 => "must not be negative".into(),
                min => format!("must be at least {min}"),
            })
        } else if value > self.max {
            Some(format!("must be at most {}", self.max))
        } else {
            None
        }
    }
}

/// `spec.replicas`. Each pod is a consumer group reading every partition, and the
/// operator lists a group per pod in the status.
pub const REPLICAS: Bound = Bound::new(0, 100);
/// `spec.projections[].embeds.*.maxFanOut`.
pub const MAX_FAN_OUT: Bound = Bound::new(1, 1_000_000);
/// `spec.commands[].maxWaitMs`: a minute.
pub const COMMAND_MAX_WAIT_MS: Bound = Bound::new(0, 60_000);

/// `spec.api.graphqlLimits.maxDepth`: deeper cannot pass the text's own bracket
/// nesting bound (128) anyway.
pub const GRAPHQL_MAX_DEPTH: Bound = Bound::new(1, 128);
/// `spec.api.graphqlLimits.maxComplexity`.
pub const GRAPHQL_MAX_COMPLEXITY: Bound = Bound::new(1, 100_000);
/// `spec.api.graphqlLimits.maxAliases`.
pub const GRAPHQL_MAX_ALIASES: Bound = Bound::new(1, 10_000);
/// `spec.api.graphqlLimits.maxDocumentBytes`: 1 MiB.
pub const GRAPHQL_MAX_DOCUMENT_BYTES: Bound = Bound::new(1, 1 << 20);
/// `spec.api.graphqlLimits.maxBatch`.
pub const GRAPHQL_MAX_BATCH: Bound = Bound::new(1, 100);

/// `spec.api.limits.maxConnections` (per pod).
pub const MAX_CONNECTIONS: Bound = Bound::new(1, 1_000_000);
/// `spec.api.limits.maxSubscriptionsPerConnection`.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: Bound = Bound::new(1, 10_000);
/// `spec.api.limits.maxMessageBytes`: 16 MiB.
pub const MAX_MESSAGE_BYTES: Bound = Bound::new(1, 16 << 20);
/// `spec.api.limits.maxPendingRows`.
pub const MAX_PENDING_ROWS: Bound = Bound::new(1, 1_000_000);
/// `spec.api.limits.maxUnauthenticatedConnections` (per pod).
pub const MAX_UNAUTHENTICATED_CONNECTIONS: Bound = Bound::new(1, 100_000);
/// `spec.api.limits.headerTimeoutSeconds`: an hour.
pub const HEADER_TIMEOUT_SECONDS: Bound = Bound::new(1, 3_600);

/// `spec.api.limits.commandsPerUserPerMinute`.
pub const COMMANDS_PER_USER_PER_MINUTE: Bound = Bound::new(1, 1_000_000);
/// `spec.api.limits.commandBurst`.
pub const COMMAND_BURST: Bound = Bound::new(1, 100_000);

/// `spec.api.cors.maxAgeSeconds`: a day.
pub const CORS_MAX_AGE_SECONDS: Bound = Bound::new(0, 86_400);
/// `spec.auth.jwt.jwksRefreshSeconds`: a day.
pub const JWKS_REFRESH_SECONDS: Bound = Bound::new(1, 86_400);

/// `spec.store.changeLogLength` (per projection).
pub const CHANGE_LOG_LENGTH: Bound = Bound::new(1, 1_000_000);
/// `spec.store.batch.maxEvents`.
pub const BATCH_MAX_EVENTS: Bound = Bound::new(1, 100_000);
/// `spec.store.batch.maxDelayMs`: a minute.
pub const BATCH_MAX_DELAY_MS: Bound = Bound::new(0, 60_000);

/// Checks each `(path, value, bound)`: one error, naming the path, per value
/// outside its bound.
pub fn check<P: Into<String>>(
    values: impl IntoIterator<Item = (P, i64, Bound)>,
    errors: &mut Vec<SpecError>,
) {
    for (path, value, bound) in values {
        if let Some(message) = bound.refuse(value) {
            errors.push(SpecError::new(path, message));
        }
    }
}
