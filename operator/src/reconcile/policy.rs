//! What the platform team lets a tenant's `FrontendExperience` ask for. Whoever may
//! create one acts through the operator's rights, so a spec that names another image,
//! a service account, or a Kafka cluster the platform did not allow is refused
//! (`SpecValid=False`, naming the rule) before any pod or Secret mount exists.

use facet_bff::spec::ExperienceSpec;

/// Set in the chart (`tenancy.*`) and read from the operator's environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TenancyPolicy {
    /// Images `podTemplate.image` may name (`*` matches any text); the operator's
    /// own runtime image is always allowed.
    pub allowed_images: Vec<String>,
    /// Service accounts `podTemplate.serviceAccountName` may name; none by
    /// default, so pods run as their namespace's `default`.
    pub allowed_service_accounts: Vec<String>,
    /// Patterns every `kafka.bootstrapServers` entry (`host:port`) must match.
    pub allowed_bootstrap_servers: Vec<String>,
    /// Whether `podTemplate` may be set at all.
    pub pod_template: bool,
}

impl Default for TenancyPolicy {
    /// What a fresh install allows: the operator's runtime image, no service
    /// account, any Kafka cluster (narrow `allowedBootstrapServers` on a shared
    /// cluster), and pod overrides.
    fn default() -> Self {
        TenancyPolicy {
            allowed_images: Vec::new(),
            allowed_service_accounts: Vec::new(),
            allowed_bootstrap_servers: vec!["*".into()],
            pod_template: true,
        }
    }
}

/// Every way `spec` breaks the policy, one line each naming the field and the rule.
pub fn violations(
    spec: &ExperienceSpec,
    runtime_image: &str,
    policy: &TenancyPolicy,
) -> Vec<String> {
    let mut found = Vec::new();
    let allowed = |patterns: &[String]| match patterns.is_empty() {
        true => "none".to_string(),
        false => patterns.join(", "),
    };
    if let Some(overrides) = &spec.pod_template {
        if !policy.pod_template {
            found.push("spec.podTemplate: the platform does not allow pod overrides".to_string());
        }
        if let Some(image) = &overrides.image {
            if image != runtime_image && !matches_any(&policy.allowed_images, image) {
                found.push(format!(
                    "spec.podTemplate.image: `{image}` is not an allowed runtime image (allowed: {runtime_image}{})",
                    policy.allowed_images.iter().map(|i| format!(", {i}")).collect::<String>()
                ));
            }
        }
        if let Some(account) = &overrides.service_account_name {
            if !matches_any(&policy.allowed_service_accounts, account) {
                found.push(format!(
                    "spec.podTemplate.serviceAccountName: `{account}` is not an allowed service account (allowed: {})",
                    allowed(&policy.allowed_service_accounts)
                ));
            }
        }
    }
    for server in spec.kafka.bootstrap_servers.split(',').map(str::trim) {
        if !server.is_empty() && !matches_any(&policy.allowed_bootstrap_servers, server) {
            found.push(format!(
                "spec.kafka.bootstrapServers: `{server}` is not an allowed Kafka server (allowed: {})",
                allowed(&policy.allowed_bootstrap_servers)
            ));
        }
    }
    found
}

fn matches_any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob(p.as_bytes(), text.as_bytes()))
}

/// `*` matches any run of characters (none included); everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ExperienceSpec {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/samples/storefront.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut spec = facet_bff::spec::parse_manifests(&text)
            .remove(0)
            .unwrap()
            .spec;
        let overrides: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        if let Some(pod) = overrides.get("podTemplate") {
            spec.pod_template = Some(serde_yaml::from_value(pod.clone()).unwrap());
        }
        if let Some(servers) = overrides.get("bootstrapServers") {
            spec.kafka.bootstrap_servers = servers.as_str().unwrap().to_string();
        }
        spec
    }

    #[test]
    fn by_default_only_the_runtime_image_and_no_service_account() {
        let policy = TenancyPolicy::default();
        assert!(violations(&spec("{}"), "facet-bff:1", &policy).is_empty());
        let own = spec("{podTemplate: {image: 'facet-bff:1'}}");
        assert!(violations(&own, "facet-bff:1", &policy).is_empty());
        let bad = spec("{podTemplate: {image: 'evil:latest', serviceAccountName: admin}}");
        assert_eq!(
            violations(&bad, "facet-bff:1", &policy),
            [
                "spec.podTemplate.image: `evil:latest` is not an allowed runtime image (allowed: facet-bff:1)",
                "spec.podTemplate.serviceAccountName: `admin` is not an allowed service account (allowed: none)",
            ]
        );
    }

    #[test]
    fn patterns_allow_images_accounts_and_kafka_servers() {
        let policy = TenancyPolicy {
            allowed_images: vec!["registry.example.com/facet-bff:*".into()],
            allowed_service_accounts: vec!["facet-*".into()],
            allowed_bootstrap_servers: vec!["*.kafka.svc:9092".into(), "kafka-?".into()],
            pod_template: true,
        };
        let fine = spec(
            "{podTemplate: {image: 'registry.example.com/facet-bff:2', serviceAccountName: facet-reader},
              bootstrapServers: 'a.kafka.svc:9092, b.kafka.svc:9092'}",
        );
        assert!(violations(&fine, "facet-bff:1", &policy).is_empty());
        let stolen = spec("{bootstrapServers: 'a.kafka.svc:9092,attacker.example:9092'}");
        assert_eq!(
            violations(&stolen, "facet-bff:1", &policy),
            ["spec.kafka.bootstrapServers: `attacker.example:9092` is not an allowed Kafka server (allowed: *.kafka.svc:9092, kafka-?)"]
        );
        let no_overrides = TenancyPolicy {
            pod_template: false,
            ..TenancyPolicy::default()
        };
        let labels = spec("{podTemplate: {labels: {team: a}}}");
        assert_eq!(
            violations(&labels, "facet-bff:1", &no_overrides),
            ["spec.podTemplate: the platform does not allow pod overrides"]
        );
    }

    #[test]
    fn glob_matches_stars_only() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(!glob(b"a*c", b"abcd"));
        assert!(!glob(b"kafka-?", b"kafka-1"), "? is not a wildcard");
        assert!(glob(b"kafka-?", b"kafka-?"));
    }
}
