//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator
//! replicas are safe: only the holder reconciles. Updates use the Lease's
//! resourceVersion, so two candidates can never both win the same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This candidate's name (its pod name in a cluster).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// Whether `lease` is free for `identity` to take at `now`.
fn available(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(15)));
    match &lease.renew_time {
        Some(renewed) => renewed
            .0
            .checked_add(duration)
            .map(|expiry| expiry < now)
            .unwrap_or(true),
        None => true,
    }
}

/// Waits until this candidate holds the lease.
pub async fn acquire(client: &Client, config: &LeaseConfig) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut announced = false;
    loop {
        let now = Timestamp::now();
        let result = match leases.get_opt(&config.name).await? {
            None => leases
                .create(&PostParams::default(), &new_lease(config, now))
                .await
                .map(|_| true),
            Some(lease)
                if available(
                    lease.spec.as_ref().unwrap_or(&LeaseSpec::default()),
                    &config.identity,
                    now,
                ) =>
            {
                leases
                    .replace(
                        &config.name,
                        &PostParams::default(),
                        &taken(lease, config, now),
                    )
                    .await
                    .map(|_| true)
            }
            Some(lease) => {
                if !announced {
                    let holder = lease
                        .spec
                        .and_then(|s| s.holder_identity)
                        .unwrap_or_default();
                    info!(%holder, lease = %config.name, "another replica leads; standing by");
                    announced = true;
                }
                Ok(false)
            }
        };
        match result {
            Ok(true) => {
                info!(identity = %config.identity, lease = %config.name, "became the leader");
                return Ok(());
            }
            Ok(false) => {}
            // Someone else changed the lease between our read and write: look again.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(config.renew_every()).await;
    }
}

/// Renews the lease until it is lost; returns then (the caller must stop leading).
pub async fn hold(client: &Client, config: &LeaseConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut last_renewal = std::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew_every()).await;
        let renewed = match leases.get(&config.name).await {
            Ok(lease)
                if lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(config.identity.as_str()) =>
            {
                let mut lease = lease;
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                leases
                    .replace(&config.name, &PostParams::default(), &lease)
                    .await
                    .is_ok()
            }
            Ok(_) => {
                warn!(lease = %config.name, "the lease was taken over");
                return;
            }
            Err(e) => {
                warn!(error = %e, "could not read the lease");
                false
            }
        };
        if renewed {
            last_renewal = std::time::Instant::now();
        } else if last_renewal.elapsed() >= config.duration {
            warn!(lease = %config.name, "could not renew the lease in time");
            return;
        }
    }
}

/// Gives the lease up on a clean shutdown, so another replica takes over at once.
pub async fn release(client: &Client, config: &LeaseConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    if let Ok(mut lease) = leases.get(&config.name).await {
        if let Some(spec) = lease.spec.as_mut() {
            if spec.holder_identity.as_deref() == Some(config.identity.as_str()) {
                spec.holder_identity = None;
                let _ = leases
                    .replace(&config.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }
}

fn new_lease(config: &LeaseConfig, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(config.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

fn taken(mut lease: Lease, config: &LeaseConfig, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(MicroTime(now));
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(config.duration.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_is_not_available() {
        assert!(!available(
            &lease("a", 100),
            "b",
            Timestamp::from_second(105).unwrap()
        ));
    }

    #[test]
    fn an_expired_or_own_or_released_lease_is_available() {
        assert!(available(
            &lease("a", 100),
            "b",
            Timestamp::from_second(111).unwrap()
        ));
        assert!(available(
            &lease("b", 100),
            "b",
            Timestamp::from_second(101).unwrap()
        ));
        assert!(available(
            &lease("", 100),
            "b",
            Timestamp::from_second(101).unwrap()
        ));
    }
}
