//! Which rows one subscription sees: its selection (a key, `where` equalities) and
//! the projection's `access` rule for its viewer, decided once at subscribe time as
//! far as it can be, so that judging a row is cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::projection::Row;
use crate::spec::access_plan::claim;
use crate::spec::expr::Bound;
use crate::spec::{CompiledExperience, CompiledProjection};
use crate::store::index_value;
use crate::viewer::Viewer;

/// What a client asks to watch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Selection {
    pub projection: String,
    /// One row by key.
    #[serde(default)]
    pub key: Option<String>,
    /// Rows whose top-level fields equal these values.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, Value>,
    /// Send a changed row the client already has as a JSON merge patch (RFC 7396).
    #[serde(default)]
    pub delta: bool,
    /// The row fields the client is sent, for field usage: every declared field
    /// (`None`, the native protocols send whole rows) or those a GraphQL
    /// subscription selects.
    #[serde(skip)]
    pub fields: Option<Vec<String>>,
}

/// How the access rule is decided for this viewer.
enum Access {
    /// The console, or a projection without an access rule.
    All,
    /// The viewer lacks a claim the rule compares: it sees nothing.
    Nothing,
    /// The rule is exactly these equalities (field, claim value).
    Equal(Vec<(String, Value)>),
    /// CEL decides; these equalities (necessary conditions) are checked first.
    Rule {
        claims: Bound<'static>,
        narrowed: Vec<(String, Value)>,
    },
}

/// Where the router files a subscription: under one value it must see, or in the
/// list every change is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Key(String),
    Field(String, String),
    Scan,
}

pub struct Selector {
    experience: Arc<CompiledExperience>,
    /// Index of the projection in the experience.
    projection: usize,
    key: Option<String>,
    filter: Vec<(String, Value)>,
    access: Access,
}

impl Selector {
    /// `None` when the experience has no such projection.
    pub fn new(
        experience: &Arc<CompiledExperience>,
        selection: &Selection,
        viewer: &Viewer,
    ) -> Option<Selector> {
        let index = experience
            .projections
            .iter()
            .position(|p| p.name == selection.projection)?;
        let projection = &experience.projections[index];
        let access = match (viewer, &projection.access) {
            (Viewer::Console, _) | (_, None) => Access::All,
            (Viewer::Claims(claims), Some(_)) => {
                let plan = &projection.access_plan;
                let values: Option<Vec<(String, Value)>> = plan
                    .equalities
                    .iter()
                    .map(|e| Some((e.field.clone(), claim(claims, &e.claim)?.clone())))
                    .collect();
                match values {
                    None => Access::Nothing,
                    Some(values)
                        if plan.exact && values.iter().all(|(_, v)| index_value(v).is_some()) =>
                    {
                        Access::Equal(values)
                    }
                    Some(narrowed) => Access::Rule {
                        claims: Bound::json(claims),
                        narrowed,
                    },
                }
            }
        };
        Some(Selector {
            experience: experience.clone(),
            projection: index,
            key: selection.key.clone(),
            filter: selection.filter.clone().into_iter().collect(),
            access,
        })
    }

    pub fn projection(&self) -> &CompiledProjection {
        &self.experience.projections[self.projection]
    }

    /// Whether the subscription sees this row.
    pub fn sees(&self, key: &str, row: &Row) -> bool {
        if self.key.as_deref().is_some_and(|k| k != key) {
            return false;
        }
        if !self.filter.iter().all(|(f, v)| row.get(f) == Some(v)) {
            return false;
        }
        match &self.access {
            Access::All => true,
            Access::Nothing => false,
            Access::Equal(values) => values.iter().all(|(f, v)| same(row.get(f), v)),
            Access::Rule { claims, narrowed } => {
                narrowed.iter().all(|(f, v)| same(row.get(f), v))
                    && self.projection().access.as_ref().is_some_and(|access| {
                        let row = Bound::row(row);
                        matches!(
                            access.eval(&[("row", &row), ("auth", claims)]),
                            Ok(cel::Value::Bool(true))
                        )
                    })
            }
        }
    }

    /// Where the router files this subscription: by key, else by a value a row
    /// must have (a `where` equality, else one the access rule compares).
    pub fn route_key(&self) -> RouteKey {
        if let Some(key) = &self.key {
            return RouteKey::Key(key.clone());
        }
        self.equalities()
            .find_map(|(f, v)| Some(RouteKey::Field(f.clone(), index_value(v)?)))
            .unwrap_or(RouteKey::Scan)
    }

    /// Every (field, value) a visible row must have: `where` first, then access.
    fn equalities(&self) -> impl Iterator<Item = &(String, Value)> {
        let narrowed: &[(String, Value)] = match &self.access {
            Access::Equal(values) => values,
            Access::Rule { narrowed, .. } => narrowed,
            Access::All | Access::Nothing => &[],
        };
        self.filter.iter().chain(narrowed)
    }

    /// A field and the value every visible row has, for reading from the store's
    /// index: a `where` equality on an indexed field, else an access equality.
    pub fn lookup(&self, is_indexed: impl Fn(&str) -> bool) -> Option<(&str, &Value)> {
        self.equalities()
            .find(|(f, _)| is_indexed(f))
            .map(|(f, v)| (f.as_str(), v))
    }

    /// The one row this subscription is about, if it names a key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether the viewer can see nothing at all (no need to read the store).
    pub fn sees_nothing(&self) -> bool {
        matches!(self.access, Access::Nothing)
    }
}

/// Equality as the index and CEL see it: numbers by value.
fn same(field: Option<&Value>, expected: &Value) -> bool {
    field.is_some_and(|v| {
        v == expected || index_value(v).is_some_and(|value| Some(value) == index_value(expected))
    })
}
