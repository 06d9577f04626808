//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator
//! replicas are safe: only the holder reconciles. Updates use the Lease's
//! resourceVersion, so two candidates can never both win the same round.
//!
//! Time follows client-go's rules: a standby measures a lease's age on its own
//! monotonic clock from when it saw the lease last change, and a leader stops
//! acting once it has not renewed for the renew deadline, which is shorter than
//! the lease. No two machines' clocks are ever compared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use parking_lot::Mutex;
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
    /// How long a leader goes on after its last successful renewal: shorter than
    /// the lease, so it has stopped before any standby may take over (client-go
    /// uses 10 s of a 15 s lease).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often a leader renews and a standby looks.
    fn retry_period(&self) -> Duration {
        self.duration / 5
    }
}

/// Whether this replica may act as the leader right now: it began a renewal
/// that succeeded less than the renew deadline ago, by its own monotonic clock.
/// Reconciles ask before they write, so a leader that was paused (a long GC, a
/// frozen VM, SIGSTOP) and wakes after a standby took over does nothing, even
/// before its renewal loop has run again.
#[derive(Clone)]
pub struct Leadership {
    /// `None`: no leader election, always held.
    renewed: Option<Arc<Mutex<Option<Instant>>>>,
    deadline: Duration,
}

impl Leadership {
    pub fn elected(config: &LeaseConfig) -> Leadership {
        Leadership {
            renewed: Some(Arc::default()),
            deadline: config.renew_deadline(),
        }
    }

    /// For a single replica without leader election.
    pub fn unconditional() -> Leadership {
        Leadership {
            renewed: None,
            deadline: Duration::MAX,
        }
    }

    pub fn held(&self) -> bool {
        self.held_at(Instant::now())
    }

    fn held_at(&self, now: Instant) -> bool {
        let Some(renewed) = &self.renewed else {
            return true;
        };
        renewed
            .lock()
            .is_some_and(|at| now.saturating_duration_since(at) < self.deadline)
    }

    /// A renewal that began at `attempt` succeeded.
    fn renewed_at(&self, attempt: Instant) {
        if let Some(renewed) = &self.renewed {
            *renewed.lock() = Some(attempt);
        }
    }
}

/// What a standby last saw of the lease (its resourceVersion, which every
/// renewal moves) and when, by its own monotonic clock. The holder's
/// `renewTime` is another machine's wall clock and is never compared with ours.
#[derive(Default)]
struct Observer {
    last: Option<(String, Instant)>,
}

impl Observer {
    /// When the lease last changed, as far as this candidate has seen.
    fn changed_at(&mut self, version: &str, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if seen == version => *at,
            _ => {
                self.last = Some((version.to_string(), now));
                now
            }
        }
    }
}

/// Whether `lease` is free for `identity`: released, already its own, or not
/// renewed for a whole lease duration since this candidate saw it change.
fn available(lease: &LeaseSpec, identity: &str, unchanged_for: Duration) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = lease.lease_duration_seconds.unwrap_or(15).max(1) as u64;
    unchanged_for > Duration::from_secs(duration)
}

/// Waits until this candidate holds the lease.
pub async fn acquire(
    client: &Client,
    config: &LeaseConfig,
    leadership: &Leadership,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut announced = false;
    let mut observer = Observer::default();
    loop {
        let attempt = Instant::now();
        let result = match leases.get_opt(&config.name).await? {
            None => leases
                .create(&PostParams::default(), &new_lease(config))
                .await
                .map(|_| true),
            Some(lease) => {
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                let unchanged_for = attempt.duration_since(observer.changed_at(&version, attempt));
                let spec = lease.spec.clone().unwrap_or_default();
                if available(&spec, &config.identity, unchanged_for) {
                    leases
                        .replace(&config.name, &PostParams::default(), &taken(lease, config))
                        .await
                        .map(|_| true)
                } else {
                    if !announced {
                        let holder = spec.holder_identity.unwrap_or_default();
                        info!(%holder, lease = %config.name, "another replica leads; standing by");
                        announced = true;
                    }
                    Ok(false)
                }
            }
        };
        match result {
            Ok(true) => {
                leadership.renewed_at(attempt);
                info!(identity = %config.identity, lease = %config.name, "became the leader");
                return Ok(());
            }
            Ok(false) => {}
            // Someone else changed the lease between our read and write: look again.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(config.retry_period()).await;
    }
}

/// Renews the lease until it is lost or cannot be renewed within the renew
/// deadline; returns then (the caller must stop leading).
pub async fn hold(client: &Client, config: &LeaseConfig, leadership: &Leadership) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    loop {
        tokio::time::sleep(config.retry_period()).await;
        if !leadership.held() {
            warn!(lease = %config.name, "could not renew the lease within the renew deadline");
            return;
        }
        let attempt = Instant::now();
        match tokio::time::timeout(config.renew_deadline(), renew(&leases, config)).await {
            Ok(Ok(true)) => leadership.renewed_at(attempt),
            Ok(Ok(false)) => {
                warn!(lease = %config.name, "the lease was taken over");
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "could not renew the lease"),
            Err(_) => warn!("renewing the lease timed out"),
        }
    }
}

/// One renewal: `Ok(false)` when another candidate holds the lease.
async fn renew(leases: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let mut lease = leases.get(&config.name).await?;
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(false);
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    // The resourceVersion read makes this a compare-and-swap.
    leases
        .replace(&config.name, &PostParams::default(), &lease)
        .await?;
    Ok(true)
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

fn new_lease(config: &LeaseConfig) -> Lease {
    let now = Timestamp::now();
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

fn taken(mut lease: Lease, config: &LeaseConfig) -> Lease {
    let now = Timestamp::now();
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

    fn lease(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            // A holder whose wall clock is a day behind: never read.
            renew_time: Some(MicroTime(Timestamp::from_second(0).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_holders_lease_is_taken_only_after_a_whole_lease_unchanged() {
        let seconds = Duration::from_secs;
        assert!(!available(&lease("a"), "b", seconds(9)));
        assert!(available(&lease("a"), "b", seconds(11)));
        assert!(available(&lease("b"), "b", seconds(0)), "its own");
        assert!(available(&lease(""), "b", seconds(0)), "released");
    }

    #[test]
    fn a_lease_is_as_old_as_this_candidate_has_seen_it_unchanged() {
        let mut observer = Observer::default();
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        assert_eq!(observer.changed_at("1", start), start);
        assert_eq!(observer.changed_at("1", later), start, "unchanged");
        assert_eq!(observer.changed_at("2", later), later, "renewed");
    }

    #[test]
    fn a_leader_stops_before_a_standby_may_take_over() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert!(config.retry_period() < config.renew_deadline());
        assert!(config.renew_deadline() < config.duration);
        let leadership = Leadership::elected(&config);
        let start = Instant::now();
        assert!(!leadership.held_at(start), "not before the first renewal");
        leadership.renewed_at(start);
        assert!(leadership.held_at(start + Duration::from_secs(9)));
        assert!(
            !leadership.held_at(start + config.renew_deadline()),
            "a leader that wakes after its deadline (paused, say) acts no more"
        );
        assert!(Leadership::unconditional().held());
    }
}
