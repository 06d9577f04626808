//! The definition: the part of a spec that decides what the store holds.
//!
//! A change to it replays the topics into a new store (and starts a new epoch of
//! client positions); a change to anything else only changes how the same rows are
//! served, so pods restart on their stores and positions stay valid.
//!
//! Row-producing: the sources, and of each projection its name, key, rules, the
//! declared types of its fields (a value is conformed to them: an enum or a type
//! refuses or converts it) and its embeds, `maxFanOut` included (it decides which
//! events are refused, so replicas built under different bounds would disagree).
//! Serving-only: descriptions, `deprecated`, `access` (the store's index over the
//! fields access compares is rebuilt from the stored rows when it changes),
//! commands, API settings and limits, auth, replicas, pod overrides.

use serde_json::Value;

use super::compile::short_digest;
use super::types::ExperienceSpec;

/// Projection keys that only change how rows are served.
const SERVING_ONLY_PROJECTION_KEYS: &[&str] = &["description", "access"];
/// Field keys that only change how a field is documented.
const SERVING_ONLY_FIELD_KEYS: &[&str] = &["description", "deprecated"];

/// The hash of the row-producing part of a spec: the store's identity and the epoch
/// of client positions.
pub fn definition_hash(spec: &ExperienceSpec) -> String {
    let mut projections = serde_json::to_value(&spec.projections).unwrap_or(Value::Null);
    for projection in projections.as_array_mut().into_iter().flatten() {
        let Some(projection) = projection.as_object_mut() else {
            continue;
        };
        for key in SERVING_ONLY_PROJECTION_KEYS {
            projection.remove(*key);
        }
        if let Some(Value::Object(fields)) = projection.get_mut("fields") {
            fields.values_mut().for_each(strip_field_docs);
        }
    }
    let definition = serde_json::json!({"sources": spec.sources, "projections": projections});
    short_digest(definition.to_string().as_bytes())
}

fn strip_field_docs(field: &mut Value) {
    let Some(field) = field.as_object_mut() else {
        return;
    };
    for key in SERVING_ONLY_FIELD_KEYS {
        field.remove(*key);
    }
    if let Some(items) = field.get_mut("items") {
        strip_field_docs(items);
    }
    if let Some(Value::Object(fields)) = field.get_mut("fields") {
        fields.values_mut().for_each(strip_field_docs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::sample;

    type Edit = Box<dyn FnOnce(&mut ExperienceSpec)>;

    fn edited(edit: impl FnOnce(&mut ExperienceSpec)) -> (ExperienceSpec, ExperienceSpec) {
        let old = sample("storefront");
        let mut new = old.clone();
        edit(&mut new);
        (old, new)
    }

    #[test]
    fn documentation_and_access_edits_are_serving_only() {
        let edits: Vec<Edit> = vec![
            Box::new(|s| s.projections[0].description = Some("Another text".into())),
            Box::new(|s| {
                let status = s.projections[0].fields.get_mut("status").unwrap();
                status.description = Some("Where the order is".into());
                status.deprecated = Some("Use state".into());
            }),
            Box::new(|s| {
                let items = s.projections[0].fields.get_mut("items").unwrap();
                let item = items.items.as_mut().unwrap();
                let sku = item.fields.as_mut().unwrap().get_mut("sku").unwrap();
                sku.description = Some("Stock keeping unit".into());
            }),
            Box::new(|s| {
                s.projections[0].access =
                    Some("row.customerId == auth.sub || auth.admin == true".into())
            }),
            Box::new(|s| s.replicas = 5),
            Box::new(|s| s.api.limits.max_pending_rows = 10),
            Box::new(|s| s.commands.clear()),
        ];
        for edit in edits {
            let (old, new) = edited(edit);
            assert_ne!(old, new);
            assert_eq!(definition_hash(&old), definition_hash(&new));
        }
    }

    #[test]
    fn edits_that_change_stored_values_change_the_definition() {
        let edits: Vec<Edit> = vec![
            Box::new(|s| s.sources[0].topic = "shop.orders.v2".into()),
            Box::new(|s| s.projections[0].key = "event.id".into()),
            Box::new(|s| s.projections[0].rules[0].when = Some("true".into())),
            Box::new(|s| {
                let status = s.projections[0].fields.get_mut("status").unwrap();
                status.enum_values = Some(vec!["placed".into()]);
            }),
            Box::new(|s| {
                let embed = s.projections[0].embeds.get_mut("customer").unwrap();
                embed.max_fan_out = 5;
            }),
        ];
        for edit in edits {
            let (old, new) = edited(edit);
            assert_ne!(definition_hash(&old), definition_hash(&new));
        }
    }
}
