//! Embeds: a row shows the current row of another projection (a post page its
//! author). Both directions happen in the event's own changes: a row written by a
//! rule takes the embedded row as it is now, and a changed row is written into every
//! row that embeds it, found through the reverse index the store keeps.

use serde_json::Value;

use super::{row_value, ApplyError, Engine, Link, Pending, Row, Rows, Stored, Touched};
use crate::spec::expr::cel_type_name;
use crate::spec::links::CompiledEmbed;

impl Engine {
    /// For every row the rules wrote: its embed fields and reverse-index links,
    /// when its embed key changed (or the row is new).
    pub(super) fn follow_embeds<R: Rows>(
        &self,
        touched: &mut Touched<'_, R>,
        links: &mut Vec<Link>,
    ) -> Result<Result<(), ApplyError>, R::Error> {
        let experience = &*self.experience;
        for i in 0..touched.pending.len() {
            let p = touched.pending[i].projection;
            let projection = &experience.projections[p];
            if projection.embeds.is_empty() {
                continue;
            }
            // Taken out while its embeds are filled in (an embedded row is of another
            // projection, so it is never this one); put back below.
            let mut row = touched.pending[i].row.take();
            for (embed, &target) in projection.embeds.iter().zip(&self.embed_targets[p]) {
                let Pending { key, before, .. } = &touched.pending[i];
                // A stored row always had a key it could compute.
                let old = before.as_ref().and_then(|b| {
                    embed_key(&self.number_fields[p], embed, b.row())
                        .ok()
                        .flatten()
                });
                let Some(stored) = row.as_mut() else {
                    links.extend(
                        old.map(|target_key| link(embed, &projection.name, key, target_key, false)),
                    );
                    continue;
                };
                let new = match embed_key(&self.number_fields[p], embed, stored.row()) {
                    Ok(new) => new,
                    Err(error) => return Ok(Err(error)),
                };
                if before.is_some() && old == new {
                    continue;
                }
                if old != new {
                    links.extend(old.map(|k| link(embed, &projection.name, key, k, false)));
                    links.extend(
                        new.clone()
                            .map(|k| link(embed, &projection.name, key, k, true)),
                    );
                }
                let value = match &new {
                    Some(target_key) => {
                        let current = touched.current(experience, target, target_key)?;
                        shown(embed, current.as_ref().and_then(Stored::served))
                    }
                    None => Value::Null,
                };
                stored.row_mut().insert(embed.name.clone(), value);
            }
            touched.pending[i].row = row;
        }
        Ok(Ok(()))
    }

    /// For every served row that changed: the rows that embed it, rewritten.
    /// Returns how many were.
    pub(super) fn fan_out<R: Rows>(
        &self,
        touched: &mut Touched<'_, R>,
    ) -> Result<Result<usize, ApplyError>, R::Error> {
        let experience = &*self.experience;
        let mut rewritten = 0;
        // Rows added below embed rows; none is embedded itself (one level deep).
        for i in 0..touched.pending.len() {
            let p = touched.pending[i].projection;
            if self.embedded_by[p].is_empty() {
                continue;
            }
            let key = touched.pending[i].key.clone();
            let before = touched.pending[i].before.clone();
            let after = touched.pending[i].row.clone();
            let before = before.as_ref().and_then(Stored::served);
            let after = after.as_ref().and_then(Stored::served);
            for &(e_p, e) in &self.embedded_by[p] {
                let embedder = &experience.projections[e_p];
                let embed = &embedder.embeds[e];
                let value = shown(embed, after);
                if shown(embed, before) == value {
                    continue;
                }
                let keys = touched.rows.embedders(
                    &experience.projections[p].name,
                    &key,
                    &embedder.name,
                    &embed.name,
                    embed.max_fan_out + 1,
                )?;
                if keys.len() > embed.max_fan_out {
                    return Ok(Err(ApplyError::FanOut {
                        path: embed.key.path.trim_end_matches(".key").to_string(),
                        message: format!(
                            "a change of `{}` row `{key}` would rewrite more than {} `{}` rows that embed it (maxFanOut)",
                            embed.projection, embed.max_fan_out, embedder.name
                        ),
                    }));
                }
                for embedder_key in keys {
                    let Some(mut stored) = touched.current(experience, e_p, &embedder_key)? else {
                        continue;
                    };
                    // The index may still name a row whose key changed in this event.
                    if !matches!(embed_key(&self.number_fields[e_p], embed, stored.row()), Ok(Some(k)) if k == key)
                    {
                        continue;
                    }
                    if stored.row().get(&embed.name) == Some(&value) {
                        continue;
                    }
                    stored.row_mut().insert(embed.name.clone(), value.clone());
                    touched.write(experience, e_p, &embedder_key, Some(stored))?;
                    rewritten += 1;
                }
            }
        }
        Ok(Ok(rewritten))
    }
}

fn link(
    embed: &CompiledEmbed,
    embedder: &str,
    key: &str,
    target_key: String,
    linked: bool,
) -> Link {
    Link {
        target: embed.projection.clone(),
        target_key,
        embedder: embedder.to_string(),
        embed: embed.name.clone(),
        key: key.to_string(),
        linked,
    }
}

/// What an embed shows of a row: the chosen fields, or null without a row.
fn shown(embed: &CompiledEmbed, row: Option<&Row>) -> Value {
    match row {
        Some(row) if embed.fields.is_empty() => Value::Object(row.clone()),
        Some(row) => Value::Object(
            row.iter()
                .filter(|(name, _)| embed.fields.contains(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

/// The key of the row an embed shows: `None` for null or an empty string.
fn embed_key(
    numbers: &crate::spec::expr::Doubles,
    embed: &CompiledEmbed,
    row: &Row,
) -> Result<Option<String>, ApplyError> {
    let error = |message: String| ApplyError::Rule {
        path: embed.key.path.clone(),
        message,
    };
    if let Some(field) = &embed.key_field {
        return match row.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) | Some(Value::Null) | None => Ok(None),
            Some(other) => Err(error(format!(
                "the key of an embedded row must be a string, got {}",
                crate::spec::fields::json_type_name(other)
            ))),
        };
    }
    let bound = row_value(numbers, row);
    match embed.key.eval(&[("row", &bound)]) {
        Ok(cel::Value::String(s)) if s.is_empty() => Ok(None),
        Ok(cel::Value::String(s)) => Ok(Some(s.to_string())),
        Ok(cel::Value::Null) => Ok(None),
        Ok(other) => Err(error(format!(
            "the key of an embedded row must be a string, got a {}",
            cel_type_name(&other)
        ))),
        Err(e) => Err(error(e.to_string())),
    }
}
