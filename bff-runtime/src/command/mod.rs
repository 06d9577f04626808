//! Commands: the write path. A command is checked (its input, then its
//! `validate` rules, then `allow`, over the input, the caller and the rows it
//! looks up), produced to its Kafka topic as one record with the command id,
//! the user and a trace context as headers, and, when the caller waits, followed
//! until an event carrying its id has been applied ([`correlate`]).

pub mod correlate;
mod idempotency;
pub mod input;
mod rate;

use std::sync::Arc;
use std::time::Duration;

use idempotency::Claim;
use tracing::info;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::Value;

use crate::spec::command::CompiledCommand;
use crate::spec::expr::{cel_to_json, Bound, Expr, Variable};
use crate::spec::CompiledExperience;
use crate::store::Store;
use correlate::{Correlations, COMMAND_ID_HEADER};

/// How long producing may take before the command is refused as unavailable.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client sends.
pub struct CommandRequest {
    pub name: String,
    pub input: Value,
    /// The caller's verified claims (`{}` when anonymous).
    pub claims: Value,
    /// A retry with the same key returns the first result without producing again.
    pub idempotency_key: Option<String>,
    /// How long the caller waits for the effect (capped by the command's `maxWaitMs`).
    pub wait: Duration,
    /// The caller's W3C `traceparent`, continued in the record.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Produced; its effect was not seen within the wait (or the caller did not wait).
    Accepted,
    /// An event carrying the command id has been applied: read from `position`.
    Visible,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub command_id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("no command named `{0}`")]
    Unknown(String),
    #[error("this experience declares no commands")]
    NoCommands,
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("Kafka is unavailable, nothing was sent: {0}")]
    Unavailable(String),
    /// An expression of the spec failed on this input (e.g. a value that is not an object).
    #[error("{0}")]
    Failed(String),
    /// An idempotency key sent again with another input.
    #[error("idempotency key `{0}` was already used with another input")]
    KeyReused(String),
    /// The user sent more commands than `commandsPerUserPerMinute` allows.
    #[error("too many commands: try again in {} s", retry_after_seconds(*.0))]
    RateLimited(Duration),
}

/// Whole seconds, rounded up, as `Retry-After` says them.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl CommandError {
    /// A short label, for API error codes and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Unknown(_) | CommandError::NoCommands => "not_found",
            CommandError::Invalid { .. } => "invalid_input",
            CommandError::Forbidden(_) => "forbidden",
            CommandError::Unavailable(_) => "unavailable",
            CommandError::Failed(_) => "command_failed",
            CommandError::KeyReused(_) => "idempotency_key_reused",
            CommandError::RateLimited(_) => "rate_limited",
        }
    }
}

pub struct Commands {
    experience: Arc<CompiledExperience>,
    /// `namespace/name`, so equal idempotency keys of two experiences never meet.
    experience_name: String,
    store: Arc<Store>,
    producer: FutureProducer,
    correlations: Arc<Correlations>,
    keys: idempotency::Keys,
    limits: rate::RateLimits,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Commands {
    pub fn new(
        experience: Arc<CompiledExperience>,
        experience_name: String,
        store: Arc<Store>,
        producer: FutureProducer,
        correlations: Arc<Correlations>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let limits = &experience.spec.api.limits;
        let limits =
            rate::RateLimits::new(limits.commands_per_user_per_minute, limits.command_burst);
        Commands {
            experience,
            experience_name,
            store,
            producer,
            correlations,
            keys: idempotency::Keys::default(),
            limits,
            metrics,
        }
    }

    /// Sends a command: counted by outcome and logged, one line per command.
    pub async fn send(&self, request: CommandRequest) -> Result<Outcome, CommandError> {
        let name = request.name.clone();
        let user = request.claims["sub"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let keyed = request.idempotency_key.is_some();
        let result = self.send_once(request, &user).await;
        let outcome = match &result {
            Ok(outcome) if outcome.status == Status::Visible => "visible",
            Ok(_) => "accepted",
            Err(e) => e.code(),
        };
        // An unknown name is the client's to choose: not a label value.
        let label = match &result {
            Err(CommandError::Unknown(_)) => "unknown",
            _ => name.as_str(),
        };
        self.metrics.command(label, outcome);
        let command_id = result.as_ref().map(|o| o.command_id.as_str()).ok();
        info!(command = label, outcome, command_id, user, keyed, "command");
        result
    }

    async fn send_once(
        &self,
        request: CommandRequest,
        user: &str,
    ) -> Result<Outcome, CommandError> {
        let command = self
            .experience
            .command(&request.name)
            .ok_or_else(|| CommandError::Unknown(request.name.clone()))?;
        self.limits
            .take(user, std::time::Instant::now())
            .map_err(CommandError::RateLimited)?;
        let input = Value::Object(input::check(command, request.input)?);
        let wait = request.wait.min(command.max_wait);
        let (command_id, first) = match &request.idempotency_key {
            Some(key) => {
                let command_id = idempotent_id(&self.experience_name, &command.name, user, key);
                let digest = crate::spec::compile::sha256_hex(input.to_string().as_bytes());
                match self.keys.claim(&command_id, &digest).await {
                    Claim::First(first) => (command_id, Some(first)),
                    Claim::Produced => return Ok(self.follow(&command_id, wait).await),
                    Claim::Conflict => return Err(CommandError::KeyReused(key.clone())),
                }
            }
            None => (random_id(), None),
        };
        let bound = self.bind(command, &input, &request.claims).await?;
        self.check(command, &bound)?;
        let key = string_of(&command.key, &bound)?;
        let value =
            cel_to_json(&eval(&command.value, &bound)?).map_err(|e| failed(&command.value, e))?;
        if !value.is_object() {
            return Err(failed(&command.value, "must give an object".into()));
        }
        let traceparent = request
            .traceparent
            .filter(|t| is_traceparent(t))
            .unwrap_or_else(new_traceparent);
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: COMMAND_ID_HEADER,
                value: Some(&command_id),
            })
            .insert(Header {
                key: "facet-command",
                value: Some(&command.name),
            })
            .insert(Header {
                key: "facet-user",
                value: Some(user),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(&traceparent),
            });
        for (name, expr) in &command.headers {
            let text = string_of(expr, &bound)?;
            headers = headers.insert(Header {
                key: name,
                value: Some(&text),
            });
        }
        let payload = value.to_string();
        let record = FutureRecord::to(&command.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        self.producer
            .send(record, PRODUCE_TIMEOUT)
            .await
            .map_err(|(e, _)| CommandError::Unavailable(e.to_string()))?;
        if let Some(first) = first {
            first.produced();
        }
        Ok(self.follow(&command_id, wait).await)
    }

    /// Waits up to `wait` for the command's effect.
    pub async fn follow(&self, command_id: &str, wait: Duration) -> Outcome {
        let accepted = Outcome {
            command_id: command_id.to_string(),
            status: Status::Accepted,
            position: None,
        };
        let visible = |position| Outcome {
            status: Status::Visible,
            position: Some(position),
            ..accepted.clone()
        };
        if wait.is_zero() {
            return self
                .correlations
                .position(command_id)
                .map_or(accepted.clone(), visible);
        }
        match self.correlations.watch(command_id) {
            Ok(position) => visible(position),
            Err(receiver) => match tokio::time::timeout(wait, receiver).await {
                Ok(Ok(position)) => visible(position),
                _ => {
                    self.correlations.forget_closed(command_id);
                    accepted
                }
            },
        }
    }

    /// `input`, `auth` and `lookup` as the command's expressions see them.
    async fn bind(
        &self,
        command: &CompiledCommand,
        input: &Value,
        claims: &Value,
    ) -> Result<Bindings, CommandError> {
        let (input, auth) = (Bound::json(input), Bound::json(claims));
        let mut found = serde_json::Map::new();
        for lookup in &command.lookups {
            let key = match lookup.key.eval(&[("input", &input), ("auth", &auth)]) {
                Ok(cel::Value::String(key)) => key.to_string(),
                Ok(_) | Err(_) => {
                    found.insert(lookup.name.clone(), Value::Null);
                    continue;
                }
            };
            let store = self.store.clone();
            let projection = lookup.projection.clone();
            let row = tokio::task::spawn_blocking(move || store.row(&projection, &key))
                .await
                .map_err(|e| CommandError::Failed(e.to_string()))?
                .map_err(|e| CommandError::Failed(crate::logging::log_internal(e)))?;
            found.insert(lookup.name.clone(), row.map_or(Value::Null, Value::Object));
        }
        Ok(Bindings {
            input,
            auth,
            lookup: Bound::json(&Value::Object(found)),
        })
    }

    /// The `validate` rules (400 with their message), then `allow` (403).
    fn check(&self, command: &CompiledCommand, bound: &Bindings) -> Result<(), CommandError> {
        for validation in &command.validate {
            if !holds(&validation.rule, bound) {
                return Err(CommandError::Invalid {
                    field: validation.field.clone(),
                    message: validation.message.clone(),
                });
            }
        }
        match &command.allow {
            Some(allow) if !holds(allow, bound) => Err(CommandError::Forbidden(format!(
                "not allowed to {}",
                command.name
            ))),
            _ => Ok(()),
        }
    }
}

struct Bindings {
    input: Bound<'static>,
    auth: Bound<'static>,
    lookup: Bound<'static>,
}

impl Bindings {
    fn variables(&self) -> [(&'static str, &dyn Variable); 3] {
        [
            ("input", &self.input),
            ("auth", &self.auth),
            ("lookup", &self.lookup),
        ]
    }
}

fn eval(expr: &Expr, bound: &Bindings) -> Result<cel::Value, CommandError> {
    expr.eval(&bound.variables())
        .map_err(|e| failed(expr, e.to_string()))
}

/// A check that fails to evaluate (a lookup that found nothing, say) does not hold.
fn holds(expr: &Expr, bound: &Bindings) -> bool {
    matches!(expr.eval(&bound.variables()), Ok(cel::Value::Bool(true)))
}

fn string_of(expr: &Expr, bound: &Bindings) -> Result<String, CommandError> {
    match eval(expr, bound)? {
        cel::Value::String(s) => Ok(s.to_string()),
        other => Err(failed(
            expr,
            format!(
                "must give a string, gave a {}",
                crate::spec::expr::cel_type_name(&other)
            ),
        )),
    }
}

fn failed(expr: &Expr, message: String) -> CommandError {
    CommandError::Failed(format!("{}: {message}", expr.path))
}

/// The same experience, command, user and idempotency key give the same id, on
/// every replica: a domain service that keeps the ids it has handled sees a
/// retry that reached another pod as the command it already ran.
fn idempotent_id(experience: &str, command: &str, user: &str, key: &str) -> String {
    let digest = crate::spec::compile::sha256_hex(
        format!("{experience}\n{command}\n{user}\n{key}").as_bytes(),
    );
    uuid_form(&digest[..32])
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn uuid_form(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, not all zero.
fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_ids_are_stable_and_distinct() {
        let a = idempotent_id("shop/web", "cancelOrder", "alice", "k-1");
        assert_eq!(a, idempotent_id("shop/web", "cancelOrder", "alice", "k-1"));
        assert_ne!(a, idempotent_id("shop/web", "cancelOrder", "bob", "k-1"));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn traceparents_are_checked_and_made() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("garbage"));
        assert!(is_traceparent(&new_traceparent()));
    }
}
