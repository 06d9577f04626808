//! REST reads: `/v1/<projection>` (filtered, paginated, sparse) and
//! `/v1/<projection>/<key>` (with ETag and `If-None-Match`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, SharedState};
use crate::live::Selection;
use crate::projection::Row;
use crate::spec::{CompiledProjection, FieldSpec, FieldType};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Query parameters with a meaning of their own; every other one filters on a field.
const RESERVED: &[&str] = &["limit", "after", "fields", "as", "access_token"];

pub async fn one(
    State(state): State<SharedState>,
    Path((projection, key)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(&headers, &query).await?;
    let compiled = state.projection(&projection)?;
    let fields = sparse_fields(&query, compiled)?;
    let stored = state
        .store
        .row(&projection, &key)
        .map_err(ApiError::internal)?;
    let Some(row) = stored.filter(|row| viewer.can_see(compiled, row)) else {
        // A row the client may not see is indistinguishable from a missing one.
        return Err(ApiError::not_found(format!(
            "no {projection} with key `{key}`"
        )));
    };
    // An ETag names the row's content and the fieldset, so every replica gives the
    // same one; commas would split it in `If-None-Match`, so the fieldset is joined
    // with `+`.
    let digest = content_digest(&row);
    let etag = match &fields {
        Some(fields) => format!("\"{digest}+{}\"", fields.join("+")),
        None => format!("\"{digest}\""),
    };
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        field_tally(&state, &headers, &viewer, compiled, fields.as_deref()).delivered(1);
        Json(project(&row, fields.as_deref())).into_response()
    };
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    cache_control(&state, response_headers);
    Ok(response)
}

pub async fn list(
    State(state): State<SharedState>,
    Path(projection): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(&headers, &query).await?;
    let compiled = state.projection(&projection)?;
    let fields = sparse_fields(&query, compiled)?;
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be a number from 1 to {MAX_LIMIT}"))
            })?,
        None => DEFAULT_LIMIT,
    };
    let filter = query_filter(compiled, &query, RESERVED)?;
    let mut tally = field_tally(&state, &headers, &viewer, compiled, fields.as_deref());
    let selection = Selection {
        projection: projection.clone(),
        filter,
        ..Selection::default()
    };
    let page = state
        .live
        .read_page(selection, viewer, query.get("after").cloned(), limit)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no projection named `{projection}`")))?;
    tally.delivered(page.rows.len());
    let next = page.next;
    let items: Vec<Value> = page
        .rows
        .iter()
        .map(|(key, row)| json!({"key": key, "row": project(row, fields.as_deref())}))
        .collect();
    let mut response =
        Json(json!({"position": page.position, "items": items, "next": next})).into_response();
    cache_control(&state, response.headers_mut());
    Ok(response)
}

/// The usage counters of what a read sends: the sparse fieldset, or every
/// declared field.
fn field_tally(
    state: &SharedState,
    headers: &HeaderMap,
    viewer: &crate::viewer::Viewer,
    projection: &crate::spec::CompiledProjection,
    fields: Option<&[String]>,
) -> crate::usage::Tally {
    let reader = state.reader(headers, viewer, None);
    state
        .metrics
        .usage
        .selection_tally(projection, fields, &reader)
}

/// `fields=a,b`: only these fields, each of which must be declared.
fn sparse_fields(
    query: &BTreeMap<String, String>,
    projection: &crate::spec::CompiledProjection,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = query.get("fields") else {
        return Ok(None);
    };
    let fields: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect();
    if let Some(unknown) = fields.iter().find(|f| !projection.fields.contains_key(*f)) {
        return Err(ApiError::bad_request(format!(
            "fields: {} has no field `{unknown}`",
            projection.name
        )));
    }
    Ok(Some(fields))
}

fn project(row: &Row, fields: Option<&[String]>) -> Value {
    match fields {
        None => Value::Object(row.clone()),
        Some(fields) => Value::Object(
            fields
                .iter()
                .filter_map(|f| row.get(f).map(|v| (f.clone(), v.clone())))
                .collect(),
        ),
    }
}

/// The `?field=value` filters of a query string, every parameter not in
/// `reserved` naming a declared field (REST lists and SSE read them alike).
pub(super) fn query_filter(
    projection: &CompiledProjection,
    query: &BTreeMap<String, String>,
    reserved: &[&str],
) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut filter = BTreeMap::new();
    for (name, value) in query
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
    {
        let Some(spec) = projection.fields.get(name) else {
            return Err(ApiError::bad_request(format!(
                "cannot filter on `{name}`: {} has no such field",
                projection.name
            )));
        };
        filter.insert(name.clone(), filter_value(spec, value));
    }
    Ok(filter)
}

/// A query value as the field's type: `?paid=true` and `?count=2` are JSON, a
/// string field takes the text as it is.
fn filter_value(spec: &FieldSpec, text: &str) -> Value {
    match spec.field_type {
        FieldType::String => Value::String(text.to_string()),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

/// A short hash of a row's content, the same on every replica.
fn content_digest(row: &Row) -> String {
    crate::spec::compile::short_digest(&serde_json::to_vec(row).unwrap_or_default())
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|candidate| candidate.trim() == etag || candidate.trim() == "*")
        })
}

fn cache_control(state: &SharedState, headers: &mut HeaderMap) {
    if let Some(value) = state
        .experience
        .spec
        .api
        .cache_control
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
}
