//! GraphQL generated from the spec (async-graphql's dynamic schema): per projection
//! a type, a query by key, a filtered list, and a subscription to changes over
//! graphql-transport-ws. Every row passes the projection's `access` rule.

use std::collections::BTreeMap;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Schema,
    SchemaError, Subscription, SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use async_graphql::http::GraphiQLSource;
use async_graphql::{ErrorExtensions, Name, Value};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use futures::StreamExt;

mod admit;
mod connection;
mod live;
mod mutations;
mod plan;
mod transport;

use self::connection::{ClientName, LiveViewer, SubscriptionBudget};
use crate::live::stream::{updates, Item};
use crate::live::{Op, Selection, Session, Update};
use crate::serve::{ApiError, AppState, SharedState};
use crate::spec::api_names;
use crate::spec::{CompiledExperience, CompiledProjection, FieldSpec, FieldType};
use crate::viewer::Viewer;

/// One page's rows, as the cost check counts them (`spec::graphql_query`).
/// The label of GraphQL subscriptions on the metrics, and their id in a session.
const TRANSPORT: &str = "graphql";
const DEFAULT_PAGE: usize = crate::spec::graphql_query::DEFAULT_PAGE as usize;
const MAX_PAGE: usize = crate::spec::graphql_query::MAX_PAGE as usize;

/// Builds the schema for an experience. Every projection `order` gives:
/// `order(key)`, `orderList(where, first, after)` and the subscription `order(key, where, since)`.
pub fn schema(experience: &CompiledExperience) -> Result<Schema, SchemaError> {
    let mut query = Object::new("Query");
    let mut subscription = Subscription::new("Subscription");
    let mut types: Vec<async_graphql::dynamic::Type> = Vec::new();
    for projection in &experience.projections {
        let name = api_names::row_type(&projection.name);
        object_types(
            &name,
            &projection.fields,
            projection.description.as_deref(),
            &mut types,
        );
        types.push(filter_input(&name, projection).into());
        types.push(page_type(&name).into());
        types.push(change_type(&name).into());
        query = query
            .field(row_field(projection, &name))
            .field(list_field(projection, &name));
        subscription = subscription.field(subscription_field(projection, &name));
    }
    let mutation = mutations::mutation(&experience.commands, &mut types);
    let mut builder = Schema::build(
        "Query",
        mutation.as_ref().map(|_| "Mutation"),
        Some("Subscription"),
    )
    .register(query)
    .register(subscription);
    if let Some(mutation) = mutation {
        builder = builder.register(mutation);
    }
    for ty in types {
        builder = builder.register(ty);
    }
    builder.finish()
}

/// The `where` input of a projection: its filterable fields.
fn filter_input(name: &str, projection: &CompiledProjection) -> InputObject {
    let mut filter = InputObject::new(api_names::filter_type(name));
    for (field, spec) in &projection.fields {
        if let Some(scalar) = filter_type(name, field, spec) {
            filter = filter.field(InputValue::new(field, TypeRef::named(scalar)));
        }
    }
    filter
}

/// A page of a list query: its rows, where the next page starts, and the position.
fn page_type(name: &str) -> Object {
    Object::new(api_names::page_type(name))
        .field(Field::new(
            "items",
            TypeRef::named_nn_list_nn(name),
            |ctx| {
                FieldFuture::new(async move {
                    let page = ctx.parent_value.try_downcast_ref::<Page>()?;
                    Ok(Some(FieldValue::list(
                        page.rows.iter().map(|r| FieldValue::owned_any(r.clone())),
                    )))
                })
            },
        ))
        .field(Field::new("next", TypeRef::named(TypeRef::STRING), |ctx| {
            FieldFuture::new(async move {
                let page = ctx.parent_value.try_downcast_ref::<Page>()?;
                Ok(page
                    .next
                    .clone()
                    .map(|n| FieldValue::value(Value::String(n))))
            })
        }))
        .field(
            Field::new("position", TypeRef::named_nn(TypeRef::STRING), |ctx| {
                FieldFuture::new(async move {
                    let page = ctx.parent_value.try_downcast_ref::<Page>()?;
                    Ok(Some(FieldValue::value(Value::from(page.position.clone()))))
                })
            })
            .description("The position this page was read at; subscribe with it as `since`."),
        )
}

/// `<projection>(key)`: one row, if the caller may see it.
fn row_field(projection: &CompiledProjection, name: &str) -> Field {
    let projection_name = projection.name.clone();
    Field::new(&projection.name, TypeRef::named(name), move |ctx| {
        let projection_name = projection_name.clone();
        FieldFuture::new(async move {
            let (state, viewer) = context(&ctx)?;
            let projection = compiled(state, &projection_name)?;
            let key = ctx.args.try_get("key")?.string()?.to_string();
            let row = state
                .store
                .row(&projection_name, &key)
                .map_err(|e| ApiError::internal(e).message)?
                .filter(|row| viewer.can_see(projection, row));
            let fields = selected_fields(ctx.field(), None);
            tally(&ctx, state, &viewer, &projection_name, fields)?.delivered(row.iter().count());
            Ok(row.map(|row| FieldValue::owned_any(serde_json::Value::Object(row))))
        })
    })
    .argument(InputValue::new("key", TypeRef::named_nn(TypeRef::STRING)))
    .description(format!(
        "One {} row by key, if the caller may see it.",
        projection.name
    ))
}

/// `<projection>List(where, first, after)`: a page of the rows the caller may see.
fn list_field(projection: &CompiledProjection, name: &str) -> Field {
    let projection_name = projection.name.clone();
    Field::new(
        api_names::list_field(&projection.name),
        TypeRef::named_nn(api_names::page_type(name)),
        move |ctx| {
            let projection_name = projection_name.clone();
            FieldFuture::new(async move {
                let (state, viewer) = context(&ctx)?;
                let fields = selected_fields(ctx.field(), Some("items"));
                let mut tally = tally(&ctx, state, &viewer, &projection_name, fields)?;
                let selection = Selection {
                    projection: projection_name.clone(),
                    filter: filter_argument(&ctx)?,
                    ..Selection::default()
                };
                let first = match ctx.args.get("first") {
                    Some(n) => usize::try_from(n.i64()?)
                        .unwrap_or(DEFAULT_PAGE)
                        .clamp(1, MAX_PAGE),
                    None => DEFAULT_PAGE,
                };
                let after = ctx
                    .args
                    .get("after")
                    .map(|a| a.string().map(str::to_string))
                    .transpose()?;
                let page = state
                    .live
                    .read_page(selection, viewer, after, first)
                    .await
                    .map_err(|e| ApiError::internal(e).message)?
                    .ok_or_else(|| format!("no projection {projection_name}"))?;
                tally.delivered(page.rows.len());
                let next = page.next;
                let position = page.position;
                let rows = page
                    .rows
                    .into_iter()
                    .map(|(_, row)| serde_json::Value::Object(row))
                    .collect();
                Ok(Some(FieldValue::owned_any(Page {
                    rows,
                    next,
                    position,
                })))
            })
        },
    )
    .argument(InputValue::new(
        "where",
        TypeRef::named(api_names::filter_type(name)),
    ))
    .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
    .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
    .description(format!(
        "{} rows the caller may see, in key order.",
        projection.name
    ))
}

/// The subscription to a projection: a snapshot (or a resume), then each change.
fn subscription_field(projection: &CompiledProjection, name: &str) -> SubscriptionField {
    let projection_name = projection.name.clone();
    SubscriptionField::new(&projection.name, TypeRef::named_nn(api_names::change_type(name)), move |ctx| {
        let projection_name = projection_name.clone();
        SubscriptionFieldFuture::new(async move {
            let state = ctx.data::<SharedState>()?.clone();
            let viewer = ctx.data::<LiveViewer>()?.clone();
            let budget = ctx.data::<SubscriptionBudget>()?.clone();
            let selection = Selection {
                projection: projection_name,
                key: ctx.args.get("key").map(|k| k.string().map(str::to_string)).transpose()?,
                filter: filter_argument(&ctx)?,
                delta: false,
                fields: Some(selected_fields(ctx.field(), Some("row"))),
            };
            let since = ctx.args.get("since").map(|s| s.string().map(str::to_string)).transpose()?;
            let client = ctx.data::<ClientName>().cloned().unwrap_or_default();
            let operation = ctx.query_env.operation_name.clone();
            let reader = move |state: &AppState, viewer: &Viewer| client.reader(state, viewer, operation.as_deref());
            changes(state, selection, viewer, since, budget, reader).await
        })
    })
    .argument(InputValue::new("key", TypeRef::named(TypeRef::STRING)))
    .argument(InputValue::new("where", TypeRef::named(api_names::filter_type(name))))
    .argument(InputValue::new("since", TypeRef::named(TypeRef::STRING)))
    .description(format!(
        "Every {} row the caller may see as a `snapshot`, then each change: `upsert`, `delete`, or `remove` (no longer visible); `reset` when a resume is not possible, before a new snapshot. With `since` (the position of a change or a list page) it resumes instead of taking a snapshot.",
        projection.name
    ))
}

/// One page of a list query.
struct Page {
    rows: Vec<serde_json::Value>,
    next: Option<String>,
    position: String,
}

/// One message of a subscription.
struct ChangeEvent {
    op: &'static str,
    key: String,
    position: String,
    row: Option<serde_json::Value>,
}

fn change_type(name: &str) -> Object {
    Object::new(api_names::change_type(name))
        .field(Field::new(
            "op",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    Ok(Some(Value::from(
                        ctx.parent_value.try_downcast_ref::<ChangeEvent>()?.op,
                    )))
                })
            },
        ))
        .field(Field::new(
            "key",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    Ok(Some(Value::from(
                        ctx.parent_value
                            .try_downcast_ref::<ChangeEvent>()?
                            .key
                            .clone(),
                    )))
                })
            },
        ))
        .field(Field::new(
            "position",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    Ok(Some(Value::from(
                        ctx.parent_value
                            .try_downcast_ref::<ChangeEvent>()?
                            .position
                            .clone(),
                    )))
                })
            },
        ))
        .field(Field::new("row", TypeRef::named(name), |ctx| {
            FieldFuture::new(async move {
                let change = ctx.parent_value.try_downcast_ref::<ChangeEvent>()?;
                Ok(change.row.clone().map(FieldValue::owned_any))
            })
        }))
}

/// The stream behind a subscription: one live session, so GraphQL clients get
/// exactly what WebSocket and SSE clients get, resets and closes included.
async fn changes<'a>(
    state: SharedState,
    selection: Selection,
    viewer: LiveViewer,
    since: Option<String>,
    budget: SubscriptionBudget,
    reader: impl FnOnce(&AppState, &Viewer) -> crate::usage::Reader,
) -> async_graphql::Result<impl futures::Stream<Item = async_graphql::Result<FieldValue<'a>>> + 'a>
{
    let slot = budget.take()?;
    let current = viewer.current().ok_or("not authenticated")?;
    let reader = reader(&state, &current);
    let mut session = Session::new(state.live.clone(), current, TRANSPORT).read_by(reader);
    let turn = budget.first_updates_turn().await;
    let first = session
        .subscribe(TRANSPORT, selection, since.as_deref())
        .await
        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
    let items = updates(session, first, viewer.refreshes(), turn);
    // The slot is held by the stream: its end frees the connection's share.
    Ok(items.flat_map(move |item| {
        let _slot = &slot;
        let values: Vec<_> = match item {
            Item::Update(update) => to_events(update)
                .into_iter()
                .map(|event| Ok(FieldValue::owned_any(event)))
                .collect(),
            Item::Closed(close) => vec![Err(async_graphql::Error::new(close.reason())
                .extend_with(|_, e| e.set("code", close.code())))],
        };
        futures::stream::iter(values)
    }))
}

fn to_events(update: Update) -> Vec<ChangeEvent> {
    match update {
        Update::Snapshot {
            rows,
            position,
            more,
        } => rows
            .into_iter()
            .map(|(key, row)| ChangeEvent {
                op: "snapshot",
                key,
                // Before the last page, nothing to resume from yet.
                position: if more {
                    String::new()
                } else {
                    position.clone()
                },
                row: Some(serde_json::Value::Object(row)),
            })
            .collect(),
        Update::Change { op, change } => vec![ChangeEvent {
            op: op.as_str(),
            key: change.key.clone(),
            position: change.position.clone(),
            row: match op {
                Op::Upsert | Op::Patch => change.row.clone().map(serde_json::Value::Object),
                Op::Delete | Op::Remove => None,
            },
        }],
        Update::Reset { .. } => vec![ChangeEvent {
            op: "reset",
            key: String::new(),
            position: String::new(),
            row: None,
        }],
    }
}

/// The row fields `field` selects, each once (`__typename` aside): directly, or
/// under its sub-field `under` (`items` of a page, `row` of a change). They are
/// what field usage counts per row delivered.
fn selected_fields(field: async_graphql::SelectionField<'_>, under: Option<&str>) -> Vec<String> {
    let mut fields = Vec::new();
    for selected in field.selection_set() {
        match under {
            None => fields.push(selected.name().to_string()),
            Some(name) if selected.name() == name => {
                fields.extend(selected.selection_set().map(|f| f.name().to_string()))
            }
            Some(_) => {}
        }
    }
    fields.retain(|name| name != "__typename");
    fields.sort();
    fields.dedup();
    fields
}

/// The usage counters of `fields` of `projection` for this operation's reader.
fn tally(
    ctx: &ResolverContext<'_>,
    state: &AppState,
    viewer: &Viewer,
    projection: &str,
    fields: Vec<String>,
) -> async_graphql::Result<crate::usage::Tally> {
    let client = ctx.data::<ClientName>().cloned().unwrap_or_default();
    let reader = client.reader(state, viewer, ctx.query_env.operation_name.as_deref());
    let fields = fields.iter().map(String::as_str);
    Ok(state.metrics.usage.tally(projection, fields, &reader))
}

/// The state and the viewer as of now (on a WebSocket, the latest token's).
fn context<'a>(ctx: &'a ResolverContext<'_>) -> async_graphql::Result<(&'a SharedState, Viewer)> {
    let viewer = ctx
        .data::<LiveViewer>()?
        .current()
        .ok_or("not authenticated")?;
    Ok((ctx.data::<SharedState>()?, viewer))
}

fn compiled<'a>(state: &'a AppState, name: &str) -> async_graphql::Result<&'a CompiledProjection> {
    state
        .experience
        .projection(name)
        .ok_or_else(|| format!("no projection {name}").into())
}

fn filter_argument(
    ctx: &ResolverContext<'_>,
) -> async_graphql::Result<BTreeMap<String, serde_json::Value>> {
    let Some(filter) = ctx.args.get("where") else {
        return Ok(BTreeMap::new());
    };
    let mut values = BTreeMap::new();
    for (name, value) in filter.object()?.iter() {
        let json = match value.as_value() {
            Value::Enum(e) => serde_json::Value::String(e.to_string()),
            other => other.clone().into_json()?,
        };
        values.insert(name.to_string(), json);
    }
    Ok(values)
}

/// The GraphQL type of a scalar or enum field, as used in filters.
fn filter_type(parent: &str, field: &str, spec: &FieldSpec) -> Option<String> {
    match spec.field_type {
        FieldType::String if spec.enum_values.is_some() => {
            Some(api_names::field_type(parent, field))
        }
        FieldType::String => Some(TypeRef::STRING.into()),
        FieldType::Integer => Some(TypeRef::INT.into()),
        FieldType::Number => Some(TypeRef::FLOAT.into()),
        FieldType::Boolean => Some(TypeRef::BOOLEAN.into()),
        FieldType::Array | FieldType::Object => None,
    }
}

/// Registers the object type `name` for `fields`, and the types its fields need.
fn object_types(
    name: &str,
    fields: &BTreeMap<String, FieldSpec>,
    description: Option<&str>,
    types: &mut Vec<async_graphql::dynamic::Type>,
) {
    let mut object = Object::new(name);
    if let Some(description) = description {
        object = object.description(description);
    }
    for (field, spec) in fields {
        let type_ref = field_type(name, field, spec, types);
        let field_name = field.clone();
        let spec_for_resolver = spec.clone();
        let mut graphql_field = Field::new(field, type_ref, move |ctx| {
            let field_name = field_name.clone();
            let spec = spec_for_resolver.clone();
            FieldFuture::new(async move {
                let parent = ctx.parent_value.try_downcast_ref::<serde_json::Value>()?;
                Ok(parent
                    .get(&field_name)
                    .and_then(|v| to_field_value(&spec, v)))
            })
        });
        if let Some(description) = &spec.description {
            graphql_field = graphql_field.description(description);
        }
        if let Some(reason) = &spec.deprecated {
            graphql_field = graphql_field.deprecation(Some(reason));
        }
        object = object.field(graphql_field);
    }
    types.push(object.into());
}

fn field_type(
    parent: &str,
    field: &str,
    spec: &FieldSpec,
    types: &mut Vec<async_graphql::dynamic::Type>,
) -> TypeRef {
    match (spec.field_type, &spec.enum_values) {
        (FieldType::String, Some(values)) => {
            let name = api_names::field_type(parent, field);
            types.push(
                Enum::new(&name)
                    .items(values.iter().map(|v| v.as_str()))
                    .into(),
            );
            TypeRef::named(name)
        }
        (FieldType::Array, _) => {
            let item = spec.items.as_deref().cloned().unwrap_or(FieldSpec {
                field_type: FieldType::String,
                description: None,
                enum_values: None,
                deprecated: None,
                items: None,
                fields: None,
            });
            let inner = field_type(parent, &api_names::item_field(field), &item, types);
            TypeRef::List(Box::new(inner))
        }
        (FieldType::Object, _) => {
            let name = api_names::field_type(parent, field);
            object_types(
                &name,
                spec.fields.as_ref().unwrap_or(&BTreeMap::new()),
                spec.description.as_deref(),
                types,
            );
            TypeRef::named(name)
        }
        _ => TypeRef::named(
            filter_type(parent, field, spec).unwrap_or_else(|| TypeRef::STRING.into()),
        ),
    }
}

fn to_field_value(spec: &FieldSpec, value: &serde_json::Value) -> Option<FieldValue<'static>> {
    match (spec.field_type, value) {
        (_, serde_json::Value::Null) => None,
        (FieldType::Object, _) => Some(FieldValue::owned_any(value.clone())),
        (FieldType::Array, serde_json::Value::Array(items)) => {
            let item_spec = spec.items.as_deref()?;
            Some(FieldValue::list(
                items.iter().filter_map(|i| to_field_value(item_spec, i)),
            ))
        }
        (FieldType::String, serde_json::Value::String(s)) if spec.enum_values.is_some() => {
            Some(FieldValue::value(Value::Enum(Name::new(s))))
        }
        _ => Value::from_json(value.clone()).ok().map(FieldValue::value),
    }
}

/// POST `/graphql`: queries, as JSON (`application/json`). The caller is known
/// before the body is read, the body is bounded by `maxMessageBytes`, and every
/// operation passes [`admit::admit`] before async-graphql sees it.
/// Multipart uploads are not served: nothing in Facet takes files.
pub async fn execute(
    State(state): State<SharedState>,
    Query(query): Query<BTreeMap<String, String>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(request.headers(), &query).await?;
    let client = ClientName::of(request.headers());
    let schema = state
        .graphql
        .as_ref()
        .ok_or_else(|| ApiError::not_found("GraphQL is off".into()))?;
    let (requests, batched) = admit::read_requests(request, &state.experience.spec.api).await?;
    let mut responses = Vec::with_capacity(requests.len());
    for mut request in requests {
        responses.push(match admit::admit(&state.experience, &mut request) {
            Ok(()) => {
                let request = request
                    .data(state.clone())
                    .data(LiveViewer::fixed(viewer.clone()))
                    .data(client.clone());
                schema.execute(request).await
            }
            Err(refused) => async_graphql::Response::from_errors(vec![refused]),
        });
    }
    let response = match batched {
        true => async_graphql::BatchResponse::Batch(responses),
        false => async_graphql::BatchResponse::Single(responses.remove(0)),
    };
    Ok(GraphQLResponse::from(response).into_response())
}

/// GET `/graphql` in a browser: GraphiQL.
pub async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// `/graphql/ws`: subscriptions over graphql-transport-ws (and the older graphql-ws).
/// The token comes with the upgrade request, or, as browsers cannot set headers on
/// a WebSocket, in the `connection_init` payload (`{"Authorization": "Bearer …"}`).
pub async fn subscriptions(
    State(state): State<SharedState>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let viewer = match state.viewer(&headers, &query).await {
        Ok(viewer) => Some(viewer),
        Err(e) if e.code == "missing" => None,
        Err(e) => return Err(e),
    };
    // Until it authenticates, a connection holds a slot of its own kind, so
    // clients that never do cannot take the slots of those who have.
    let slot = match viewer {
        Some(_) => transport::Slot::Authenticated(state.connection_slot()?),
        None => transport::Slot::Unauthenticated(state.unauthenticated_slot()?),
    };
    let schema = state
        .graphql
        .clone()
        .ok_or_else(|| ApiError::not_found("GraphQL is off".into()))?;
    let max_message = state.experience.spec.api.limits.max_message_bytes as usize;
    let transport_ws = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().map(str::trim) == Some("graphql-transport-ws"));
    Ok(upgrade
        .max_message_size(max_message)
        // A frame is refused by its header, before any of it is buffered.
        .max_frame_size(max_message)
        .read_buffer_size(crate::serve::ws::READ_BUFFER)
        .write_buffer_size(crate::serve::ws::WRITE_BUFFER)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let caller = transport::Caller {
                viewer,
                client: ClientName::of(&headers),
            };
            transport::serve(state, socket, schema, protocol, transport_ws, caller, slot).await;
        })
        .into_response())
}
