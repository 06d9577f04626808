//! The store's volume of a running experience. A StatefulSet's
//! `volumeClaimTemplates` cannot change once it exists, so a change of
//! `store.persistence` (enabled, size, class) for a set that already runs would be
//! refused by the API server on every reconcile. It is refused up front instead,
//! with `SpecValid=False` saying what changed and what to do.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

/// Why `desired` cannot be applied over `existing` (the same set), if it cannot.
pub fn change(existing: &StatefulSet, desired: &StatefulSet) -> Option<String> {
    let (was, asked) = (claims(existing), claims(desired));
    if was == asked {
        return None;
    }
    Some(format!(
        "spec.store.persistence: the running pods keep their store on {}, and a StatefulSet's \
         volume claims cannot change in place, so {} cannot be applied; set the previous values \
         back, or delete and re-create the experience (its store is replayed from Kafka, or \
         restored from a backup image: README, Backup and restore)",
        describe(&was),
        describe(&asked),
    ))
}

/// What matters of a set's claim templates: name, size in bytes, class.
#[derive(PartialEq, Debug)]
struct Claim {
    name: String,
    size: Option<Size>,
    class: Option<String>,
}

/// A quantity compared by value (`1Gi` = `1024Mi`), or as written when it does
/// not parse.
#[derive(PartialEq, Debug)]
enum Size {
    Bytes(f64),
    Text(String),
}

fn claims(set: &StatefulSet) -> Vec<Claim> {
    let templates = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default();
    templates.iter().map(claim).collect()
}

fn claim(template: &PersistentVolumeClaim) -> Claim {
    let spec = template.spec.as_ref();
    Claim {
        name: template.metadata.name.clone().unwrap_or_default(),
        size: spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| size(&q.0)),
        class: spec.and_then(|s| s.storage_class_name.clone()),
    }
}

fn size(quantity: &str) -> Size {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1.0));
    match number.parse::<f64>() {
        Ok(n) => Size::Bytes(n * unit),
        Err(_) => Size::Text(quantity.to_string()),
    }
}

fn describe(claims: &[Claim]) -> String {
    if claims.is_empty() {
        return "no volume (an emptyDir)".into();
    }
    claims
        .iter()
        .map(|c| {
            let size = match &c.size {
                Some(Size::Bytes(bytes)) => format!("{:.1} GiB", bytes / (1u64 << 30) as f64),
                Some(Size::Text(text)) => text.clone(),
                None => "no size".into(),
            };
            let class = c.class.as_deref().unwrap_or("the default class");
            format!("a {size} volume of {class}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn set(volume: Option<(&str, Option<&str>)>) -> StatefulSet {
        let template = volume.map(|(size, class)| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(str::to_string),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        });
        StatefulSet {
            spec: Some(StatefulSetSpec {
                volume_claim_templates: template.map(|t| vec![t]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    #[test]
    fn the_same_volume_written_another_way_is_no_change() {
        assert_eq!(
            change(&set(Some(("1Gi", None))), &set(Some(("1024Mi", None)))),
            None
        );
        assert_eq!(change(&set(None), &set(None)), None);
    }

    #[test]
    fn a_new_size_class_or_switch_is_refused_naming_both() {
        let refused = change(&set(Some(("1Gi", None))), &set(Some(("2Gi", None)))).unwrap();
        assert!(refused.starts_with("spec.store.persistence: "), "{refused}");
        assert!(
            refused.contains("a 1.0 GiB volume of the default class"),
            "{refused}"
        );
        assert!(
            refused.contains("a 2.0 GiB volume of the default class cannot"),
            "{refused}"
        );
        assert!(change(&set(Some(("1Gi", None))), &set(Some(("1Gi", Some("fast"))))).is_some());
        let enabled = change(&set(None), &set(Some(("1Gi", None)))).unwrap();
        assert!(enabled.contains("on no volume (an emptyDir)"), "{enabled}");
    }
}
