//! What an access edit changes for a client that resumes: positions carry the
//! digest of the access rules they were issued under, and the store keeps the
//! rules behind every digest it has run with. A client whose position was issued
//! under other rules for its projection is sent the rows it may now see and told
//! of those it may no longer see (judged by the old rules, compiled by the one
//! compiler), besides what it missed; no reset, no full snapshot.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::change::Op;
use super::selector::{Selection, Selector};
use super::Hub;
use crate::projection::Row;
use crate::spec::CompiledExperience;
use crate::store::{StoreError, View};
use crate::viewer::Viewer;

/// How the rules a position was issued under relate to today's, for one selection.
pub(super) enum Before {
    /// The same rule for the projection (or a position from before digests).
    Same,
    /// Another rule: who saw what is judged by this selector.
    Was(Arc<Selector>),
    /// Rules this store never ran with: only a fresh snapshot is right.
    Unknown,
}

impl Hub {
    /// How `selection` was served for `viewer` under the rules of `digest`.
    pub(super) fn before(&self, digest: &str, selection: &Selection, viewer: &Viewer) -> Before {
        if digest.is_empty() || digest == self.store.codec().access() {
            return Before::Same;
        }
        let Some(experience) = self.experience_under(digest) else {
            return Before::Unknown;
        };
        let rule = |e: &CompiledExperience| {
            e.spec
                .projections
                .iter()
                .find(|p| p.name == selection.projection)
                .map(|p| p.access.clone())
        };
        if rule(&experience) == rule(&self.experience) {
            return Before::Same;
        }
        match Selector::new(&experience, selection, viewer) {
            Some(selector) => Before::Was(Arc::new(selector)),
            None => Before::Unknown,
        }
    }

    /// This experience with the access rules of `digest`, compiled once.
    fn experience_under(&self, digest: &str) -> Option<Arc<CompiledExperience>> {
        let mut shadows = self.access_shadows.lock();
        if let Some(experience) = shadows.get(digest) {
            return Some(experience.clone());
        }
        let rules: BTreeMap<String, String> = self.store.access_rules(digest).ok()??;
        let mut spec = self.experience.spec.clone();
        for projection in &mut spec.projections {
            projection.access = rules.get(&projection.name).cloned();
        }
        let compiled = Arc::new(crate::spec::compile(&spec).ok()?);
        // Few digests ever reach one process (one per access edit).
        shadows.insert(digest.to_string(), compiled.clone());
        Some(compiled)
    }
}

/// A row whose visibility changed: its key, what to send, and the row.
pub(super) type Edited = (String, Op, Row);

/// The rows whose visibility the access edit changed and that the missed changes
/// do not cover (`touched`): `Upsert` for a row the client may now see, `Remove`
/// for one it saw and may no longer see. `None` when either rule sees more than
/// `limit` rows, or finding them spends a scan's budget (the caller then resets).
pub(super) fn access_diff(
    hub: &Hub,
    view: &View<'_>,
    now: &Selector,
    before: &Selector,
    touched: &HashSet<&str>,
    limit: usize,
) -> Result<Option<Vec<Edited>>, StoreError> {
    let seen_now = hub.visible_rows(view, now, None, limit + 1)?;
    let seen_before = hub.visible_rows(view, before, None, limit + 1)?;
    if seen_now.budget_spent || seen_before.budget_spent {
        return Ok(None);
    }
    let (seen_now, seen_before) = (seen_now.rows, seen_before.rows);
    if seen_now.len() > limit || seen_before.len() > limit {
        return Ok(None);
    }
    let before_keys: HashSet<&str> = seen_before.iter().map(|(k, _)| k.as_str()).collect();
    let now_keys: HashSet<&str> = seen_now.iter().map(|(k, _)| k.as_str()).collect();
    let mut diff = Vec::new();
    for (key, row) in &seen_now {
        if !before_keys.contains(key.as_str()) && !touched.contains(key.as_str()) {
            diff.push((key.clone(), Op::Upsert, row.clone()));
        }
    }
    for (key, row) in &seen_before {
        if !now_keys.contains(key.as_str()) && !touched.contains(key.as_str()) {
            diff.push((key.clone(), Op::Remove, row.clone()));
        }
    }
    Ok(Some(diff))
}
