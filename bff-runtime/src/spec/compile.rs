//! The spec compiler: validates a spec and compiles every CEL expression in it.
//!
//! The same code runs in `facet-bff validate`, in the operator (the `SpecValid`
//! condition) and in the runtime at start, so a spec means one thing everywhere.
//! It collects every problem it finds rather than stopping at the first.

use super::access_plan::AccessPlan;
use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

pub use super::definition::definition_hash;
use super::error::{SpecError, SpecErrors};
use super::expr::{cel_to_json, cel_type_name, Expr, Scope};
use super::fields::conform;
use super::types::*;

/// A spec whose every part has been checked and every expression compiled.
#[derive(Debug, Clone)]
pub struct CompiledExperience {
    pub spec: ExperienceSpec,
    pub projections: Vec<CompiledProjection>,
    pub commands: Vec<super::command::CompiledCommand>,
    /// Hash of the sources and projections: when it changes, the store is rebuilt.
    pub definition_hash: String,
    /// The safelisted GraphQL documents by their SHA-256 (empty: any document).
    pub graphql_safelist: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct CompiledProjection {
    pub name: String,
    pub description: Option<String>,
    /// The fields as served: those declared and one per embed.
    pub fields: BTreeMap<String, FieldSpec>,
    pub embeds: Vec<super::links::CompiledEmbed>,
    pub rules: Vec<CompiledRule>,
    pub access: Option<Expr>,
    /// What `access` compares, for the store's index and the live router.
    pub access_plan: AccessPlan,
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Position of the rule in its projection, for logs.
    pub index: usize,
    pub source: String,
    pub when: Option<Expr>,
    /// The rule's own key, or the projection's.
    pub key: Expr,
    /// The rows it reads as `lookup.<name>`.
    pub lookups: Vec<super::command::CompiledLookup>,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub enum RuleAction {
    Upsert(Vec<(String, Expr)>),
    Patch(Vec<(String, Expr)>),
    Delete,
}

impl CompiledExperience {
    pub fn projection(&self, name: &str) -> Option<&CompiledProjection> {
        self.projections.iter().find(|p| p.name == name)
    }

    pub fn position_of(&self, projection: &str) -> Option<usize> {
        self.projections.iter().position(|p| p.name == projection)
    }

    pub fn command(&self, name: &str) -> Option<&super::command::CompiledCommand> {
        self.commands.iter().find(|c| c.name == name)
    }
}

/// Validates `spec` and compiles its expressions, or returns every problem found.
pub fn compile(spec: &ExperienceSpec) -> Result<CompiledExperience, SpecErrors> {
    let mut errors = Vec::new();
    check_general(spec, &mut errors);
    let source_names = check_sources(spec, &mut errors);
    let projections = check_projections(spec, &source_names, &mut errors);
    let commands = super::command::check_commands(spec, &mut errors);
    if errors.is_empty() {
        // Only once every name is valid and unique, or each bad one is reported twice.
        errors.extend(super::api_names::check(spec));
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    Ok(CompiledExperience {
        spec: spec.clone(),
        projections,
        commands,
        definition_hash: definition_hash(spec),
        graphql_safelist: spec
            .api
            .graphql_limits
            .safelist
            .iter()
            .map(|document| (sha256_hex(document.as_bytes()), document.clone()))
            .collect(),
    })
}

#[cfg(feature = "runtime")]
impl CompiledExperience {
    /// What the store keeps for this experience.
    pub fn store_layout(&self) -> crate::store::Layout {
        let mut topics: Vec<String> = Vec::new();
        for source in &self.spec.sources {
            if !topics.contains(&source.topic) {
                topics.push(source.topic.clone());
            }
        }
        crate::store::Layout {
            definition_hash: self.definition_hash.clone(),
            topics,
            indexed: self
                .projections
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.access_plan.fields().map(str::to_string).collect(),
                    )
                })
                .collect(),
            change_log_length: u64::from(self.spec.store.change_log_length),
            access: self
                .spec
                .projections
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.access.clone()?)))
                .collect(),
        }
    }
}

/// A SHA-256 in hex, as clients name persisted queries.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first 8 bytes of a SHA-256, in hex: names for content (definitions, ETags).
pub fn short_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_general(spec: &ExperienceSpec, errors: &mut Vec<SpecError>) {
    check_numbers(spec, errors);
    check_kafka(&spec.kafka, errors);
    check_api(&spec.api, errors);
    check_auth(&spec.auth, errors);
    check_store(&spec.store, errors);
    if let Some(pod) = &spec.pod_template {
        check_pod_template(pod, errors);
    }
}

/// Every number of the spec against its bound (`bounds.rs`), in one table; the
/// numbers of each command and embed are checked with the rest of it.
///
/// Long on purpose: one table, so every bound the spec has is read in one place.
fn check_numbers(spec: &ExperienceSpec, errors: &mut Vec<SpecError>) {
    use super::bounds::*;
    let api = &spec.api.limits;
    let graphql = &spec.api.graphql_limits;
    let batch = &spec.store.batch;
    let mut numbers = vec![
        ("spec.replicas", i64::from(spec.replicas), REPLICAS),
        (
            "spec.api.limits.maxConnections",
            api.max_connections.into(),
            MAX_CONNECTIONS,
        ),
        (
            "spec.api.limits.maxSubscriptionsPerConnection",
            api.max_subscriptions_per_connection.into(),
            MAX_SUBSCRIPTIONS_PER_CONNECTION,
        ),
        (
            "spec.api.limits.maxMessageBytes",
            api.max_message_bytes.into(),
            MAX_MESSAGE_BYTES,
        ),
        (
            "spec.api.limits.maxPendingRows",
            api.max_pending_rows.into(),
            MAX_PENDING_ROWS,
        ),
        (
            "spec.api.limits.maxUnauthenticatedConnections",
            api.max_unauthenticated_connections.into(),
            MAX_UNAUTHENTICATED_CONNECTIONS,
        ),
        (
            "spec.api.limits.headerTimeoutSeconds",
            api.header_timeout_seconds.into(),
            HEADER_TIMEOUT_SECONDS,
        ),
        (
            "spec.api.limits.commandsPerUserPerMinute",
            api.commands_per_user_per_minute.into(),
            COMMANDS_PER_USER_PER_MINUTE,
        ),
        (
            "spec.api.limits.commandBurst",
            api.command_burst.into(),
            COMMAND_BURST,
        ),
        (
            "spec.api.graphqlLimits.maxDepth",
            graphql.max_depth.into(),
            GRAPHQL_MAX_DEPTH,
        ),
        (
            "spec.api.graphqlLimits.maxComplexity",
            graphql.max_complexity.into(),
            GRAPHQL_MAX_COMPLEXITY,
        ),
        (
            "spec.api.graphqlLimits.maxAliases",
            graphql.max_aliases.into(),
            GRAPHQL_MAX_ALIASES,
        ),
        (
            "spec.api.graphqlLimits.maxDocumentBytes",
            graphql.max_document_bytes.into(),
            GRAPHQL_MAX_DOCUMENT_BYTES,
        ),
        (
            "spec.api.graphqlLimits.maxBatch",
            graphql.max_batch.into(),
            GRAPHQL_MAX_BATCH,
        ),
        (
            "spec.store.changeLogLength",
            spec.store.change_log_length.into(),
            CHANGE_LOG_LENGTH,
        ),
        (
            "spec.store.batch.maxEvents",
            batch.max_events.into(),
            BATCH_MAX_EVENTS,
        ),
        (
            "spec.store.batch.maxDelayMs",
            batch.max_delay_ms.into(),
            BATCH_MAX_DELAY_MS,
        ),
    ];
    if let Some(cors) = &spec.api.cors {
        numbers.push((
            "spec.api.cors.maxAgeSeconds",
            cors.max_age_seconds.into(),
            CORS_MAX_AGE_SECONDS,
        ));
    }
    if let Some(jwt) = &spec.auth.jwt {
        numbers.push((
            "spec.auth.jwt.jwksRefreshSeconds",
            jwt.jwks_refresh_seconds.into(),
            JWKS_REFRESH_SECONDS,
        ));
    }
    check(numbers, errors);
}

fn check_kafka(kafka: &KafkaSpec, errors: &mut Vec<SpecError>) {
    let path = "spec.kafka.bootstrapServers";
    if kafka.bootstrap_servers.trim().is_empty() {
        errors.push(SpecError::new(
            path,
            "is empty: give at least one host:port",
        ));
    }
    for server in kafka
        .bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let port_ok = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            errors.push(SpecError::new(path, format!("`{server}` is not host:port")));
        }
    }
    if let Some(topic) = &kafka.dead_letter_topic {
        if let Err(message) = check_topic_name(topic) {
            errors.push(SpecError::new("spec.kafka.deadLetterTopic", message));
        }
    }
    if let Some(secret) = &kafka.secret_ref {
        if secret.name.is_empty() {
            errors.push(SpecError::new("spec.kafka.secretRef.name", "is empty"));
        }
    }
}

fn check_api(api: &ApiSpec, errors: &mut Vec<SpecError>) {
    if !(api.rest || api.graphql || api.websocket || api.sse) {
        errors.push(SpecError::new(
            "spec.api",
            "every API is turned off: enable at least one of rest, graphql, websocket, sse",
        ));
    }
    let graphql = &api.graphql_limits;
    // A safelisted document that the limits refuse could never be served.
    for (i, document) in graphql.safelist.iter().enumerate() {
        if let Err(refused) = super::graphql_query::check(document, graphql) {
            errors.push(SpecError::new(
                format!("spec.api.graphqlLimits.safelist[{i}]"),
                refused.0,
            ));
        }
    }
    if let Some(cors) = &api.cors {
        check_cors(cors, errors);
    }
}

fn check_cors(cors: &CorsSpec, errors: &mut Vec<SpecError>) {
    let path = "spec.api.cors.allowedOrigins";
    if cors.allowed_origins.is_empty() {
        errors.push(SpecError::new(
            path,
            "is empty: list the origins, or remove cors",
        ));
    }
    for origin in &cors.allowed_origins {
        if origin == "*" {
            if cors.allow_credentials {
                errors.push(SpecError::new(
                    path,
                    "`*` cannot be used with allowCredentials: list the origins",
                ));
            }
            continue;
        }
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && !host.contains(['/', ' ', '*'])
        });
        if !valid {
            errors.push(SpecError::new(
                path,
                format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
}

fn check_auth(auth: &AuthSpec, errors: &mut Vec<SpecError>) {
    match (&auth.jwt, auth.anonymous) {
        (Some(_), Some(true)) => errors.push(SpecError::new(
            "spec.auth",
            "set either jwt or anonymous: true, not both",
        )),
        (None, Some(true)) => {}
        (None, _) => errors.push(SpecError::new(
            "spec.auth",
            "no authentication configured: set jwt, or anonymous: true to serve everyone",
        )),
        (Some(jwt), _) => {
            if jwt.issuer.trim().is_empty() {
                errors.push(SpecError::new("spec.auth.jwt.issuer", "is empty"));
            }
            if jwt.audiences.is_empty() {
                errors.push(SpecError::new(
                    "spec.auth.jwt.audiences",
                    "is empty: list the audiences a token must carry",
                ));
            }
            if !(jwt.jwks_uri.starts_with("https://") || jwt.jwks_uri.starts_with("http://")) {
                errors.push(SpecError::new(
                    "spec.auth.jwt.jwksUri",
                    format!("`{}` is not an http(s) URL", jwt.jwks_uri),
                ));
            } else if jwt.jwks_uri.starts_with("http://") && !jwt.allow_insecure_jwks_uri {
                errors.push(SpecError::new(
                    "spec.auth.jwt.jwksUri",
                    format!(
                        "`{}` is not https: keys fetched in the clear can be replaced by anyone \
                         on the path; use https, or set allowInsecureJwksUri: true for an \
                         issuer inside a network you trust",
                        jwt.jwks_uri
                    ),
                ));
            }
        }
    }
}

fn check_store(store: &StoreSpec, errors: &mut Vec<SpecError>) {
    if let Some(size) = &store.persistence.size {
        if !is_quantity(size) {
            errors.push(SpecError::new(
                "spec.store.persistence.size",
                format!("`{size}` is not a Kubernetes quantity such as 1Gi"),
            ));
        }
    }
}

fn check_pod_template(pod: &PodOverrides, errors: &mut Vec<SpecError>) {
    // The operator sets these itself; a second entry of the same name is a
    // duplicate key the API server refuses (and a runtime told two things).
    for name in pod.env.keys() {
        if crate::contract::is_reserved_env(name) {
            errors.push(SpecError::new(
                format!("spec.podTemplate.env.{name}"),
                "is set by the operator (POD_NAME and every FACET_ variable): choose another name",
            ));
        } else if name.is_empty() || name.contains('=') {
            errors.push(SpecError::new(
                format!("spec.podTemplate.env.{name}"),
                "is not an environment variable name",
            ));
        }
    }
    for (field, quantities) in [("requests", &pod.requests), ("limits", &pod.limits)] {
        for (resource, quantity) in quantities {
            if !is_quantity(quantity) {
                errors.push(SpecError::new(
                    format!("spec.podTemplate.{field}.{resource}"),
                    format!("`{quantity}` is not a Kubernetes quantity such as 100m or 128Mi"),
                ));
            }
        }
    }
}

/// Checks the sources and returns their names.
fn check_sources(spec: &ExperienceSpec, errors: &mut Vec<SpecError>) -> BTreeSet<String> {
    if spec.sources.is_empty() {
        errors.push(SpecError::new(
            "spec.sources",
            "is empty: read at least one topic",
        ));
    }
    let mut names = BTreeSet::new();
    let mut topics = BTreeMap::new();
    for (i, source) in spec.sources.iter().enumerate() {
        let path = format!("spec.sources[{i}]");
        if !is_source_name(&source.name) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!(
                    "`{}` is not a valid name: use letters, digits, `-` and `_`",
                    source.name
                ),
            ));
        }
        if !names.insert(source.name.clone()) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!("duplicate source name `{}`", source.name),
            ));
        }
        if let Err(message) = check_topic_name(&source.topic) {
            errors.push(SpecError::new(format!("{path}.topic"), message));
        }
        if let Some(other) = topics.insert(source.topic.clone(), source.name.clone()) {
            errors.push(SpecError::new(
                format!("{path}.topic"),
                format!(
                    "topic `{}` is already read by source `{other}`",
                    source.topic
                ),
            ));
        }
    }
    names
}

fn check_projections(
    spec: &ExperienceSpec,
    sources: &BTreeSet<String>,
    errors: &mut Vec<SpecError>,
) -> Vec<CompiledProjection> {
    if spec.projections.is_empty() {
        errors.push(SpecError::new(
            "spec.projections",
            "is empty: keep at least one projection",
        ));
    }
    let mut names = BTreeSet::new();
    let mut compiled = Vec::new();
    for (i, projection) in spec.projections.iter().enumerate() {
        let path = format!("spec.projections[{i}]");
        if !is_identifier(&projection.name) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!(
                    "`{}` is not a valid name: start with a letter, then letters, digits or `_` (it names a GraphQL field)",
                    projection.name
                ),
            ));
        }
        if !names.insert(projection.name.clone()) {
            errors.push(SpecError::new(
                format!("{path}.name"),
                format!("duplicate projection name `{}`", projection.name),
            ));
        }
        if let Some(p) = check_projection(spec, &path, projection, sources, errors) {
            compiled.push(p);
        }
    }
    compiled
}

fn check_projection(
    spec: &ExperienceSpec,
    path: &str,
    projection: &ProjectionSpec,
    sources: &BTreeSet<String>,
    errors: &mut Vec<SpecError>,
) -> Option<CompiledProjection> {
    let before = errors.len();
    if projection.fields.is_empty() {
        errors.push(SpecError::new(
            format!("{path}.fields"),
            "is empty: declare the row's fields",
        ));
    }
    check_fields(&format!("{path}.fields"), &projection.fields, errors);
    let embeds = super::links::check_embeds(spec, path, projection, errors);
    // Expressions read every served field; rules write only the declared ones.
    let fields = &super::links::served_fields(spec, projection);

    let key = compile_expr(
        &format!("{path}.key"),
        &projection.key,
        Scope::Key,
        fields,
        errors,
    );
    let access = projection.access.as_ref().and_then(|access| {
        compile_expr(
            &format!("{path}.access"),
            access,
            Scope::Access,
            fields,
            errors,
        )
    });
    if let Some(access) = &access {
        check_constant_bool(access, errors);
    }

    if projection.rules.is_empty() {
        errors.push(SpecError::new(
            format!("{path}.rules"),
            "is empty: add at least one rule",
        ));
    }
    let mut rules = Vec::new();
    for (r, rule) in projection.rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{r}]");
        let context = RuleContext {
            spec,
            sources,
            fields,
            declared: &projection.fields,
            embedded: &projection.embeds,
            projection_key: key.as_ref(),
        };
        let compiled = check_rule(&context, &rule_path, r, rule, errors);
        rules.extend(compiled);
    }

    (errors.len() == before).then(|| CompiledProjection {
        name: projection.name.clone(),
        description: projection.description.clone(),
        fields: fields.clone(),
        embeds,
        rules,
        access_plan: access.as_ref().map(AccessPlan::of).unwrap_or_default(),
        access,
        // `key` is carried by each rule.
    })
}

/// What the rules of one projection are checked against.
struct RuleContext<'a> {
    spec: &'a ExperienceSpec,
    sources: &'a BTreeSet<String>,
    /// The served fields (expressions may read embeds too).
    fields: &'a BTreeMap<String, FieldSpec>,
    /// The declared fields, the only ones rules set.
    declared: &'a BTreeMap<String, FieldSpec>,
    /// The embeds, which no rule may set.
    embedded: &'a BTreeMap<String, EmbedSpec>,
    projection_key: Option<&'a Expr>,
}

fn check_rule(
    context: &RuleContext,
    path: &str,
    index: usize,
    rule: &RuleSpec,
    errors: &mut Vec<SpecError>,
) -> Option<CompiledRule> {
    let RuleContext {
        spec,
        sources,
        fields,
        projection_key,
        ..
    } = *context;
    let before = errors.len();
    if !sources.contains(&rule.source) {
        let known = sources.iter().cloned().collect::<Vec<_>>().join(", ");
        errors.push(SpecError::new(
            format!("{path}.source"),
            format!("unknown source `{}` (sources: {known})", rule.source),
        ));
    }
    let when = rule
        .when
        .as_ref()
        .and_then(|when| compile_expr(&format!("{path}.when"), when, Scope::Rule, fields, errors));
    if let Some(when) = &when {
        check_constant_bool(when, errors);
    }
    let key = match &rule.key {
        Some(key) => compile_expr(&format!("{path}.key"), key, Scope::Key, fields, errors),
        None => projection_key.cloned(),
    };
    let lookups: Vec<_> = rule
        .lookups
        .iter()
        .filter_map(|(name, lookup)| {
            let at = format!("{path}.lookups.{name}");
            super::links::check_lookup_projection(spec, &at, &lookup.projection, errors);
            let key = compile_expr(
                &format!("{at}.key"),
                &lookup.key,
                Scope::Key,
                fields,
                errors,
            )?;
            Some(super::command::CompiledLookup {
                name: name.clone(),
                projection: lookup.projection.clone(),
                key,
            })
        })
        .collect();

    let action = compile_action(context, path, rule, errors);
    if errors.len() != before {
        return None;
    }
    Some(CompiledRule {
        index,
        source: rule.source.clone(),
        when,
        key: key?,
        lookups,
        action: action?,
    })
}

/// A rule's one action: upsert, patch or delete.
fn compile_action(
    context: &RuleContext,
    path: &str,
    rule: &RuleSpec,
    errors: &mut Vec<SpecError>,
) -> Option<RuleAction> {
    let actions = [
        rule.upsert.is_some(),
        rule.patch.is_some(),
        rule.delete == Some(true),
    ];
    match actions {
        [true, false, false] => {
            compile_assignments(context, path, "upsert", rule.upsert.as_ref(), errors)
                .map(RuleAction::Upsert)
        }
        [false, true, false] => {
            compile_assignments(context, path, "patch", rule.patch.as_ref(), errors)
                .map(RuleAction::Patch)
        }
        [false, false, true] => Some(RuleAction::Delete),
        [false, false, false] => {
            errors.push(SpecError::new(
                path,
                "the rule does nothing: set one of upsert, patch or delete: true",
            ));
            None
        }
        _ => {
            errors.push(SpecError::new(
                path,
                "set only one of upsert, patch and delete: true",
            ));
            None
        }
    }
}

fn compile_assignments(
    context: &RuleContext,
    path: &str,
    action: &str,
    assignments: Option<&BTreeMap<String, String>>,
    errors: &mut Vec<SpecError>,
) -> Option<Vec<(String, Expr)>> {
    let fields = context.fields;
    let embedded =
        |field: &str| context.embedded.contains_key(field) && !context.declared.contains_key(field);
    let assignments = assignments?;
    if assignments.is_empty() {
        errors.push(SpecError::new(
            format!("{path}.{action}"),
            "names no field to set",
        ));
        return None;
    }
    let before = errors.len();
    let mut compiled = Vec::new();
    for (field, source) in assignments {
        let field_path = format!("{path}.{action}.{field}");
        let Some(spec) = fields.get(field).filter(|_| !embedded(field)) else {
            if embedded(field) {
                errors.push(SpecError::new(
                    field_path,
                    format!("`{field}` is an embedded row: it follows the row it embeds, and no rule sets it"),
                ));
                continue;
            }
            let declared = fields.keys().cloned().collect::<Vec<_>>().join(", ");
            errors.push(SpecError::new(
                field_path,
                format!("`{field}` is not a declared field (declared: {declared})"),
            ));
            continue;
        };
        if let Some(expr) = compile_expr(&field_path, source, Scope::Rule, fields, errors) {
            check_constant_type(&expr, spec, errors);
            compiled.push((field.clone(), expr));
        }
    }
    (errors.len() == before).then_some(compiled)
}

fn compile_expr(
    path: &str,
    source: &str,
    scope: Scope,
    fields: &BTreeMap<String, FieldSpec>,
    errors: &mut Vec<SpecError>,
) -> Option<Expr> {
    Expr::compile(path, source, scope, fields)
        .map_err(|e| errors.extend(e))
        .ok()
}

/// A filter that is a constant must at least be a boolean.
fn check_constant_bool(expr: &Expr, errors: &mut Vec<SpecError>) {
    if let Some(value) = expr.constant_value() {
        if !matches!(value, cel::Value::Bool(_)) {
            errors.push(SpecError::in_expression(
                &expr.path,
                &expr.source,
                format!(
                    "must be a boolean, but is always a {}",
                    cel_type_name(&value)
                ),
            ));
        }
    }
}

/// A constant written into a field must fit the field's declared type.
fn check_constant_type(expr: &Expr, field: &FieldSpec, errors: &mut Vec<SpecError>) {
    let Some(value) = expr.constant_value() else {
        return;
    };
    let result = cel_to_json(&value).and_then(|json| conform(field, json));
    if let Err(message) = result {
        errors.push(SpecError::in_expression(&expr.path, &expr.source, message));
    }
}

pub(super) fn check_fields(
    path: &str,
    fields: &BTreeMap<String, FieldSpec>,
    errors: &mut Vec<SpecError>,
) {
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        if !is_identifier(name) {
            errors.push(SpecError::new(
                &field_path,
                format!("`{name}` is not a valid field name: start with a letter, then letters, digits or `_`"),
            ));
        }
        check_field(&field_path, field, errors);
    }
}

fn check_field(path: &str, field: &FieldSpec, errors: &mut Vec<SpecError>) {
    match &field.enum_values {
        Some(_) if field.field_type != FieldType::String => errors.push(SpecError::new(
            format!("{path}.enum"),
            format!(
                "only string fields take enum values, this one is {}",
                field.field_type.as_str()
            ),
        )),
        Some(values) if values.is_empty() => {
            errors.push(SpecError::new(format!("{path}.enum"), "is empty"))
        }
        Some(values) => {
            for value in values {
                if !is_identifier(value) {
                    errors.push(SpecError::new(
                        format!("{path}.enum"),
                        format!("`{value}` is not a valid enum value: use letters, digits or `_` (GraphQL enum values)"),
                    ));
                }
            }
            if values.iter().collect::<BTreeSet<_>>().len() != values.len() {
                errors.push(SpecError::new(
                    format!("{path}.enum"),
                    "lists a value twice",
                ));
            }
        }
        None => {}
    }
    match (field.field_type, &field.items) {
        (FieldType::Array, None) => errors.push(SpecError::new(
            format!("{path}.items"),
            "an array field must declare the type of its items",
        )),
        (FieldType::Array, Some(items)) => check_field(&format!("{path}.items"), items, errors),
        (other, Some(_)) => errors.push(SpecError::new(
            format!("{path}.items"),
            format!(
                "only array fields have items, this one is {}",
                other.as_str()
            ),
        )),
        (_, None) => {}
    }
    match (field.field_type, &field.fields) {
        (FieldType::Object, Some(nested)) => {
            check_fields(&format!("{path}.fields"), nested, errors)
        }
        (FieldType::Object, None) => {}
        (other, Some(_)) => errors.push(SpecError::new(
            format!("{path}.fields"),
            format!(
                "only object fields have fields, this one is {}",
                other.as_str()
            ),
        )),
        (_, None) => {}
    }
}

/// GraphQL names: a letter or `_`, then letters, digits or `_`.
pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn is_source_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Kafka's own rule for topic names.
pub(super) fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic.len() > 249 {
        return Err(format!("`{topic}` is longer than Kafka's 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a valid Kafka topic name"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "`{topic}` is not a valid Kafka topic name: `{c}` is not allowed (use letters, digits, `.`, `_`, `-`)"
        )),
        None => Ok(()),
    }
}

/// Kubernetes quantities, not negative: a decimal number, then a binary suffix
/// (`Ki` … `Ei`), a decimal one (`n`, `u`, `m`, `k`, `M` … `E`) or an exponent
/// (`e3`, `E-2`).
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let number_ok = number.bytes().any(|b| b.is_ascii_digit()) && number.matches('.').count() <= 1;
    let exponent = suffix.strip_prefix(['e', 'E']).is_some_and(|exponent| {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    number_ok && (SUFFIXES.contains(&suffix) || exponent)
}
