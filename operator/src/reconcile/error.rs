//! What can go wrong in a reconcile, one variant per phase, each keeping its source.

use super::builders::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the desired children from the resource.
    #[error("building children: {0}")]
    Build(#[from] BuildError),
    /// Server-side applying one child.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing or deleting children that are no longer desired.
    #[error("removing {kind} no longer desired ({name}): {source}")]
    Sweep {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the StatefulSet's rollout for the status.
    #[error("observing the rollout: {0}")]
    Observe(#[source] kube::Error),
    /// Writing `status`.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    /// Deleting the consumer groups on deletion.
    #[error("cleaning up: {0}")]
    Cleanup(#[from] CleanupError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// This replica's leadership lapsed (it could not renew the lease in time).
    #[error("not the leader: the lease was not renewed within the renew deadline")]
    NotLeading,
}

impl Error {
    /// A short label for metrics: the phase that failed.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Build(_) => "build",
            Error::Apply { .. } => "apply",
            Error::Sweep { .. } => "sweep",
            Error::Observe(_) => "observe",
            Error::Status(_) => "status",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
            Error::NotLeading => "not_leading",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Failed(String),
}
