//! The operator's own Kafka client for an experience, with the properties its pods
//! use (the spec's and those of `spec.kafka.secretRef`): only for deleting its
//! consumer groups (`--delete-consumer-groups`). The topics' retention comes from
//! the pods' readiness reports instead.

use facet_bff::contract;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use rdkafka::config::ClientConfig;

use crate::api::FrontendExperience;

/// Why the operator has no client for an experience's brokers.
#[derive(Debug, thiserror::Error)]
pub enum NoClient {
    #[error("reading the Kafka Secret: {0}")]
    Secret(#[from] kube::Error),
    /// The pods log in with tokens from an OIDC endpoint the tenant names; the
    /// operator, which serves every tenant, calls no such endpoint.
    #[error("the pods log in with OIDC tokens (sasl.oauthbearer.method=oidc); the operator does not call a tenant's token endpoint")]
    TenantTokenEndpoint,
}

/// The client properties the experience's pods use.
pub async fn client_config(
    client: &Client,
    fx: &FrontendExperience,
) -> Result<ClientConfig, NoClient> {
    let kafka = &fx.spec.experience.kafka;
    let mut properties = kafka.properties.clone();
    if let Some(secret) = &kafka.secret_ref {
        let namespace = fx.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let found = secrets.get(&secret.name).await?;
        for (key, value) in found.data.unwrap_or_default() {
            properties.extend(contract::secret_property(&key, &value.0));
        }
    }
    if uses_tenant_token_endpoint(&properties) {
        return Err(NoClient::TenantTokenEndpoint);
    }
    let (kept, dropped) = for_the_operator(properties);
    if !dropped.is_empty() {
        tracing::debug!(
            experience = %fx.name_any(),
            ?dropped,
            "client properties the operator does not use for its own Kafka clients"
        );
    }
    Ok(contract::kafka_client(&kafka.bootstrap_servers, &kept))
}

/// The properties that reach and authenticate to the brokers, which are all the
/// operator's own clients need. Anything else a tenant writes stays with its pods:
/// properties that load code (`plugin.library.paths`, `ssl.engine.location`), run
/// commands (`sasl.kerberos.kinit.cmd`), read the operator's files (`*.location`),
/// call other endpoints (OIDC token URLs) or change its logging (`debug`) would act
/// in the operator, which serves every tenant.
const OPERATOR_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "client.id",
    "client.dns.lookup",
    "broker.address.family",
];

/// Whether the properties make librdkafka fetch OAUTHBEARER tokens itself.
fn uses_tenant_token_endpoint(properties: &std::collections::BTreeMap<String, String>) -> bool {
    properties
        .get("sasl.oauthbearer.method")
        .is_some_and(|method| method.eq_ignore_ascii_case("oidc"))
}

/// `properties` split into those the operator's clients use and the names of
/// the rest.
pub fn for_the_operator(
    properties: std::collections::BTreeMap<String, String>,
) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let (kept, dropped): (
        std::collections::BTreeMap<_, _>,
        std::collections::BTreeMap<_, _>,
    ) = properties
        .into_iter()
        .partition(|(name, _)| OPERATOR_PROPERTIES.contains(&name.as_str()));
    (kept, dropped.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_logins_are_left_to_the_pods() {
        let with = |method: &str| {
            [("sasl.oauthbearer.method", method)]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into_iter()
                .collect()
        };
        assert!(uses_tenant_token_endpoint(&with("OIDC")));
        assert!(!uses_tenant_token_endpoint(&with("default")));
        assert!(!uses_tenant_token_endpoint(&Default::default()));
    }

    #[test]
    fn the_operator_keeps_only_what_connects_and_authenticates() {
        let properties = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "tenant"),
            ("sasl.password", "secret"),
            ("ssl.ca.pem", "-----BEGIN CERTIFICATE-----"),
            ("plugin.library.paths", "/tmp/evil.so"),
            ("ssl.engine.location", "/tmp/engine.so"),
            ("sasl.kerberos.kinit.cmd", "rm -rf /"),
            (
                "ssl.ca.location",
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            ),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "http://169.254.169.254/",
            ),
            ("debug", "all"),
            ("fetch.max.bytes", "2147483647"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
        let (kept, dropped) = for_the_operator(properties);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            [
                "sasl.mechanism",
                "sasl.password",
                "sasl.username",
                "security.protocol",
                "ssl.ca.pem"
            ]
        );
        assert_eq!(dropped.len(), 7);
        assert!(dropped.contains(&"plugin.library.paths".to_string()));
    }
}
