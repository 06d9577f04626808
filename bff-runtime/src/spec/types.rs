//! The experience spec: what one Backend-for-Frontend reads, keeps and serves.
//!
//! These types are the single source of truth for the `FrontendExperience`
//! resource. The operator embeds them in its CRD, so every `///` comment here
//! becomes `kubectl explain` text.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// The desired state of one Backend-for-Frontend: the Kafka topics it reads, the
/// UI-ready projections it keeps, who may see which rows and which APIs it serves.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExperienceSpec {
    /// Number of runtime pods. Every pod consumes every partition with its own
    /// consumer group, so each one can push changes to its own connected clients.
    /// At most 100.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = bounds::REPLICAS.min, max = bounds::REPLICAS.max))]
    pub replicas: i32,

    /// How to reach the Kafka cluster that holds the source topics.
    pub kafka: KafkaSpec,

    /// The Kafka topics this experience reads, each under a short name that rules refer to.
    #[schemars(length(min = 1, max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sources: Vec<SourceSpec>,

    /// The UI-ready tables this experience keeps, each built from events by CEL rules.
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub projections: Vec<ProjectionSpec>,

    /// Writes the frontend may send: each is checked, then produced to a Kafka topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub commands: Vec<CommandSpec>,

    /// Which APIs the runtime serves. All are on unless turned off.
    #[serde(default)]
    pub api: ApiSpec,

    /// How clients prove who they are. Either `jwt` or `anonymous: true` must be set.
    pub auth: AuthSpec,

    /// Where the runtime keeps its projections.
    #[serde(default)]
    pub store: StoreSpec,

    /// Overrides for the runtime pods (image, resources, scheduling, extra labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
}

fn default_replicas() -> i32 {
    1
}

/// Connection settings for the Kafka cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list of brokers, e.g. `kafka.kafka.svc:9092`.
    pub bootstrap_servers: String,

    /// A Secret in the experience's namespace whose keys are librdkafka client
    /// properties (e.g. `security.protocol`, `sasl.username`, `sasl.password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,

    /// Extra librdkafka client properties that are not secret (e.g. `client.rack`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,

    /// Topic that receives events the runtime could not apply, with headers naming
    /// the reason and the original topic, partition and offset. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// One Kafka topic read by the experience.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Short name that projection rules use to refer to this source (`source: orders`).
    pub name: String,

    /// The Kafka topic to read, every partition of it.
    pub topic: String,

    /// How message values are encoded.
    #[serde(default)]
    pub format: SourceFormat,
}

/// Encoding of message values.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// One JSON object per message.
    #[default]
    Json,
}

/// A UI-ready table kept up to date from events.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionSpec {
    /// Name of the projection; it names the REST path, the GraphQL field and type.
    pub name: String,

    /// Human-readable description, shown in GraphQL and OpenAPI documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// CEL expression over `event` that gives the row key, e.g. `event.orderId`.
    /// A rule may override it with its own `key`.
    pub key: String,

    /// Rules applied in order to every event of their source; every matching rule applies.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<RuleSpec>,

    /// The declared shape of a row. It drives GraphQL types, the OpenAPI document and
    /// the starting values of a new row (empty string, 0, false, empty list or object).
    pub fields: BTreeMap<String, FieldSpec>,

    /// CEL expression over `row` and `auth` (the verified token claims) that decides
    /// whether a client may read or subscribe to a row. Every row is visible when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,

    /// Rows of other projections shown inside each row, by the name of the field that
    /// holds them: `{author: {projection: user, key: row.authorId}}` gives every row an
    /// `author` field holding that user's current row (null while there is none). When
    /// the embedded row changes, every row that embeds it changes in the same commit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub embeds: BTreeMap<String, EmbedSpec>,
}

/// Another projection's row shown inside this projection's rows.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmbedSpec {
    /// The projection whose row is embedded. It may not embed rows itself.
    pub projection: String,
    /// CEL over `row` (this projection's row): the key of the embedded row, e.g.
    /// `row.authorId`. An empty string or null embeds nothing.
    pub key: String,
    /// The fields of the embedded row to show; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Most rows one change of an embedded row may rewrite. An event that would
    /// rewrite more is refused (reason `fan_out`, sent to the dead-letter topic).
    #[serde(default = "default_max_fan_out")]
    #[schemars(range(min = bounds::MAX_FAN_OUT.min, max = bounds::MAX_FAN_OUT.max))]
    pub max_fan_out: u32,
}

fn default_max_fan_out() -> u32 {
    10_000
}

/// How one kind of event changes a projection. Exactly one of `upsert`, `patch`
/// and `delete` is set.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.upsert), has(self.patch), has(self.delete) && self.delete].filter(x, x).size() == 1",
    "message": "set exactly one of upsert, patch and delete: true",
}]))]
pub struct RuleSpec {
    /// Name of the source whose events this rule reads.
    pub source: String,

    /// CEL filter over `event` and `row`; the rule applies only when it is true.
    /// The rule applies to every event of its source when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,

    /// CEL expression over `event` for the row key, overriding the projection's `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,

    /// Current rows of projections this rule reads, by name: `{user: {projection: user,
    /// key: event.authorId}}` is `lookup.user` (null when there is no such row). The
    /// row is read as it is when the event applies; to show a row that stays current,
    /// embed it instead (`embeds`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lookups: BTreeMap<String, LookupSpec>,

    /// Create the row if missing, then set each named field to its CEL expression
    /// (over `event` and `row`). Fields not named keep their values, including those
    /// set by rules that ran before the row was created. A row is served from its
    /// first `upsert` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsert: Option<BTreeMap<String, String>>,

    /// Set each named field of the row to its CEL expression. On a row no `upsert`
    /// has created yet, the fields are kept, unserved, until one does: a payment
    /// read before its order is not lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<BTreeMap<String, String>>,

    /// Remove the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
}

/// A command: a write a client sends (a GraphQL mutation, `POST /v1/commands/<name>`),
/// checked against its input, the caller and current rows, then produced to Kafka
/// for a domain service to act on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandSpec {
    /// The mutation's name, e.g. `cancelOrder`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The input fields; each is required unless listed in `optional`.
    #[schemars(schema_with = "nested_field_schema")]
    pub input: BTreeMap<String, FieldSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
    /// Current rows the checks may read, by name: `{order: {projection: order, key: input.orderId}}`
    /// is `lookup.order` (null when there is no such row).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lookups: BTreeMap<String, LookupSpec>,
    /// CEL over `input`, `auth` and `lookup`: who may send it (refused with 403 when false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// Checks of the input, each a CEL rule and the message a client gets when it is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validate: Vec<ValidationSpec>,
    /// The topic the command is produced to.
    pub topic: String,
    /// CEL over `input`, `auth` and `lookup`: the record key (a string).
    pub key: String,
    /// CEL over `input`, `auth` and `lookup`: the record value (an object, sent as JSON).
    pub value: String,
    /// Extra headers, each a CEL string. Facet adds `facet-command-id`,
    /// `facet-command`, `facet-user` and `traceparent` to every record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Longest a caller may wait for the command's effect to be visible, in milliseconds.
    #[serde(default = "default_command_wait")]
    #[schemars(range(min = bounds::COMMAND_MAX_WAIT_MS.min, max = bounds::COMMAND_MAX_WAIT_MS.max))]
    pub max_wait_ms: u32,
}

fn default_command_wait() -> u32 {
    5000
}

/// A current row a command's checks or a rule read.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LookupSpec {
    pub projection: String,
    /// CEL for the row key: over `input` and `auth` in a command, over `event` and
    /// `record` in a rule.
    pub key: String,
}

/// One check of a command's input.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSpec {
    /// CEL over `input`, `auth` and `lookup`; the command is refused when it is false.
    pub rule: String,
    /// What the client is told, e.g. `reason is at most 200 characters`.
    pub message: String,
    /// The input field the message is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The declared type of one row field.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    /// The field's type.
    #[serde(rename = "type")]
    pub field_type: FieldType,

    /// Human-readable description, shown in GraphQL and OpenAPI documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// The allowed values of a string field.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<String>>,

    /// Marks the field deprecated with this reason (GraphQL `@deprecated`, OpenAPI `deprecated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,

    /// The type of the elements of an `array` field (a field spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_field_schema")]
    pub items: Option<Box<FieldSpec>>,

    /// The fields of an `object` field (field name to field spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_field_schema")]
    pub fields: Option<BTreeMap<String, FieldSpec>>,
}

/// Nested field specs are recursive, which a CRD's structural schema cannot express:
/// the API server keeps them as free-form objects and the spec compiler checks them.
fn nested_field_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Types a row field can have.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Object => "object",
            FieldType::Array => "array",
        }
    }
}

/// Which APIs the runtime serves, and their limits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// REST reads under `/v1/<projection>` and the OpenAPI document at `/openapi.json`.
    #[serde(default = "on")]
    pub rest: bool,
    /// GraphQL queries and subscriptions (graphql-transport-ws) at `/graphql`.
    #[serde(default = "on")]
    pub graphql: bool,
    /// Facet's native WebSocket protocol at `/ws`.
    #[serde(default = "on")]
    pub websocket: bool,
    /// Server-sent events at `/sse/<projection>`.
    #[serde(default = "on")]
    pub sse: bool,
    /// `Cache-Control` header value for REST reads, e.g. `private, max-age=5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Limits that protect the runtime from greedy or slow clients.
    #[serde(default)]
    pub limits: ApiLimits,
    /// What one GraphQL request may ask for.
    #[serde(default)]
    pub graphql_limits: GraphqlLimits,
    /// Browsers on these origins may call the APIs (CORS). None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
}

/// What one GraphQL request may ask for. Fragments count each time they are spread.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GraphqlLimits {
    /// Deepest nesting of selections (`{ orderList { items { id } } }` is 3).
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = bounds::GRAPHQL_MAX_DEPTH.min, max = bounds::GRAPHQL_MAX_DEPTH.max))]
    pub max_depth: u32,
    /// Most fields one operation selects.
    #[serde(default = "default_max_complexity")]
    #[schemars(range(min = bounds::GRAPHQL_MAX_COMPLEXITY.min, max = bounds::GRAPHQL_MAX_COMPLEXITY.max))]
    pub max_complexity: u32,
    /// Most aliased fields in one operation.
    #[serde(default = "default_max_aliases")]
    #[schemars(range(min = bounds::GRAPHQL_MAX_ALIASES.min, max = bounds::GRAPHQL_MAX_ALIASES.max))]
    pub max_aliases: u32,
    /// Longest document, in bytes.
    #[serde(default = "default_max_document_bytes")]
    #[schemars(range(min = bounds::GRAPHQL_MAX_DOCUMENT_BYTES.min, max = bounds::GRAPHQL_MAX_DOCUMENT_BYTES.max))]
    pub max_document_bytes: u32,
    /// Most operations in one HTTP request; 1 (the default) refuses batches.
    #[serde(default = "default_max_batch")]
    #[schemars(range(min = bounds::GRAPHQL_MAX_BATCH.min, max = bounds::GRAPHQL_MAX_BATCH.max))]
    pub max_batch: u32,
    /// When not empty, the only documents served (persisted queries). A client
    /// may send the document or just its SHA-256 as
    /// `extensions.persistedQuery.sha256Hash`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safelist: Vec<String>,
}

fn default_max_depth() -> u32 {
    10
}
/// A full page of 1,000 rows of ten fields, or a hundred rows of a hundred.
fn default_max_complexity() -> u32 {
    20_000
}
fn default_max_aliases() -> u32 {
    30
}
fn default_max_document_bytes() -> u32 {
    16 * 1024
}
fn default_max_batch() -> u32 {
    1
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: default_max_depth(),
            max_complexity: default_max_complexity(),
            max_aliases: default_max_aliases(),
            max_document_bytes: default_max_document_bytes(),
            max_batch: default_max_batch(),
            safelist: Vec::new(),
        }
    }
}

/// Cross-origin access from browsers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins allowed, e.g. `https://shop.example.com`; `*` allows any (without credentials).
    pub allowed_origins: Vec<String>,
    /// Whether browsers may send cookies and `Authorization` along.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer, in seconds.
    #[serde(default = "default_cors_max_age")]
    #[schemars(range(min = bounds::CORS_MAX_AGE_SECONDS.min, max = bounds::CORS_MAX_AGE_SECONDS.max))]
    pub max_age_seconds: u32,
}

fn default_cors_max_age() -> u32 {
    600
}

fn on() -> bool {
    true
}

impl Default for ApiSpec {
    fn default() -> Self {
        ApiSpec {
            rest: true,
            graphql: true,
            websocket: true,
            sse: true,
            cache_control: None,
            limits: ApiLimits::default(),
            graphql_limits: GraphqlLimits::default(),
            cors: None,
        }
    }
}

/// Limits on client connections.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiLimits {
    /// Most concurrent streaming connections (WebSocket, GraphQL subscriptions, SSE) per pod.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = bounds::MAX_CONNECTIONS.min, max = bounds::MAX_CONNECTIONS.max))]
    pub max_connections: u32,
    /// Most subscriptions on one connection.
    #[serde(default = "default_max_subscriptions")]
    #[schemars(range(min = bounds::MAX_SUBSCRIPTIONS_PER_CONNECTION.min, max = bounds::MAX_SUBSCRIPTIONS_PER_CONNECTION.max))]
    pub max_subscriptions_per_connection: u32,
    /// Largest message a client may send, in bytes.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = bounds::MAX_MESSAGE_BYTES.min, max = bounds::MAX_MESSAGE_BYTES.max))]
    pub max_message_bytes: u32,
    /// Rows with pending changes a client may fall behind by before it is disconnected
    /// (changes to the same row are coalesced, latest wins).
    #[serde(default = "default_client_backlog")]
    #[schemars(range(min = bounds::MAX_PENDING_ROWS.min, max = bounds::MAX_PENDING_ROWS.max))]
    pub max_pending_rows: u32,
    /// Streaming connections that have not authenticated yet (a GraphQL WebSocket
    /// waiting for its `connection_init`). They have their own slots, so they cannot
    /// take those of authenticated clients.
    #[serde(default = "default_max_unauthenticated")]
    #[schemars(range(min = bounds::MAX_UNAUTHENTICATED_CONNECTIONS.min, max = bounds::MAX_UNAUTHENTICATED_CONNECTIONS.max))]
    pub max_unauthenticated_connections: u32,
    /// Time a client has to send a request's head (line and headers), in seconds;
    /// also how long an idle connection stays open.
    #[serde(default = "default_header_timeout")]
    #[schemars(range(min = bounds::HEADER_TIMEOUT_SECONDS.min, max = bounds::HEADER_TIMEOUT_SECONDS.max))]
    pub header_timeout_seconds: u32,
    /// Commands one user (the token's `sub`; anonymous callers share one) may send
    /// per minute to one pod, on average; past it, `429` with `Retry-After`.
    #[serde(default = "default_commands_per_minute")]
    #[schemars(range(min = bounds::COMMANDS_PER_USER_PER_MINUTE.min, max = bounds::COMMANDS_PER_USER_PER_MINUTE.max))]
    pub commands_per_user_per_minute: u32,
    /// Commands one user may send at once before the rate applies.
    #[serde(default = "default_command_burst")]
    #[schemars(range(min = bounds::COMMAND_BURST.min, max = bounds::COMMAND_BURST.max))]
    pub command_burst: u32,
}

fn default_commands_per_minute() -> u32 {
    120
}
fn default_command_burst() -> u32 {
    20
}

fn default_max_unauthenticated() -> u32 {
    100
}
fn default_header_timeout() -> u32 {
    10
}

fn default_max_connections() -> u32 {
    10_000
}
fn default_max_subscriptions() -> u32 {
    100
}
fn default_max_message_bytes() -> u32 {
    64 * 1024
}
fn default_client_backlog() -> u32 {
    1_000
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: default_max_connections(),
            max_subscriptions_per_connection: default_max_subscriptions(),
            max_message_bytes: default_max_message_bytes(),
            max_pending_rows: default_client_backlog(),
            max_unauthenticated_connections: default_max_unauthenticated(),
            header_timeout_seconds: default_header_timeout(),
            commands_per_user_per_minute: default_commands_per_minute(),
            command_burst: default_command_burst(),
        }
    }
}

/// How clients authenticate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.jwt) != (has(self.anonymous) && self.anonymous)",
    "message": "set either jwt or anonymous: true",
}]))]
pub struct AuthSpec {
    /// Verify bearer JWTs against the issuer's JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Serve every client without a token. Must be set explicitly, and not together with `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,
}

/// JWT verification settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one.
    pub audiences: Vec<String>,
    /// URL of the issuer's JSON Web Key Set: `https`, unless
    /// `allowInsecureJwksUri` says otherwise.
    pub jwks_uri: String,
    /// Accept an `http://` JWKS URI: keys fetched in the clear can be replaced by
    /// anyone on the path, so only for an issuer inside a network you trust.
    #[serde(default)]
    pub allow_insecure_jwks_uri: bool,
    /// How old the cached key set may grow before it is fetched again: a key the
    /// issuer removes stops being trusted within this time.
    #[serde(default = "default_jwks_refresh_seconds")]
    #[schemars(range(min = bounds::JWKS_REFRESH_SECONDS.min, max = bounds::JWKS_REFRESH_SECONDS.max))]
    pub jwks_refresh_seconds: u32,
}

fn default_jwks_refresh_seconds() -> u32 {
    300
}

/// Where projections are kept.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreSpec {
    /// Keep the store on a PersistentVolume, so a restarted pod resumes instead of replaying.
    #[serde(default)]
    pub persistence: PersistenceSpec,
    /// Group commit: a store transaction closes after this many events or this much time.
    #[serde(default)]
    pub batch: BatchSpec,
    /// How many recent changes each projection keeps, so that a reconnecting client
    /// resumes from its last version instead of taking a fresh snapshot.
    #[serde(default = "default_change_log_length")]
    #[schemars(range(min = bounds::CHANGE_LOG_LENGTH.min, max = bounds::CHANGE_LOG_LENGTH.max))]
    pub change_log_length: u32,
}

fn default_change_log_length() -> u32 {
    10_000
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec {
            persistence: PersistenceSpec::default(),
            batch: BatchSpec::default(),
            change_log_length: default_change_log_length(),
        }
    }
}

/// Persistent volume settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Claim a PersistentVolume per pod (the default), so a restarted pod resumes
    /// from its store instead of replaying every topic. With `false` the store lives
    /// in an emptyDir and every restart rebuilds it from the earliest offsets.
    #[serde(default = "default_persistence")]
    pub enabled: bool,
    /// Requested volume size, a Kubernetes quantity such as `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// StorageClass of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_persistence() -> bool {
    true
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        PersistenceSpec {
            enabled: default_persistence(),
            size: None,
            storage_class_name: None,
        }
    }
}

/// Group commit settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// Most events in one store transaction.
    #[serde(default = "default_batch_events")]
    #[schemars(range(min = bounds::BATCH_MAX_EVENTS.min, max = bounds::BATCH_MAX_EVENTS.max))]
    pub max_events: u32,
    /// Longest time an applied event waits for its transaction to commit, in milliseconds.
    #[serde(default = "default_batch_millis")]
    #[schemars(range(min = bounds::BATCH_MAX_DELAY_MS.min, max = bounds::BATCH_MAX_DELAY_MS.max))]
    pub max_delay_ms: u32,
}

fn default_batch_events() -> u32 {
    500
}
fn default_batch_millis() -> u32 {
    20
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_events: default_batch_events(),
            max_delay_ms: default_batch_millis(),
        }
    }
}

/// Overrides for the runtime pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Runtime image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests, e.g. `{cpu: 100m, memory: 128Mi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Resource limits, e.g. `{memory: 512Mi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector for the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Service account the pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables for the runtime container, e.g. `RUST_LOG`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}
