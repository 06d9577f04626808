//! Copying a peer's store image into an empty data directory.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Outcome;
use crate::contract::PEER_IMAGE_PATH;
use crate::store::image::{self, ImageError};
use crate::store::Layout;

/// A peer that accepts no connection within this is passed over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer that sends nothing for this long (stopped, or cut off) is given up on,
/// and the next one is asked.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to look for peers, from the pod's environment.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// `host:port` entries; a name stands for every address it resolves to.
    pub addresses: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// Never asked: the pod itself.
    pub own_ip: Option<IpAddr>,
}

/// Builds the store at `store_path` from the first peer that gives a whole,
/// intact image of `layout`'s definition, asking each in turn. Returns what
/// happened with each, for the metrics; the caller replays if none was copied.
pub fn copy_from_peers(store_path: &Path, layout: &Layout, peers: &Peers) -> Vec<Outcome> {
    let Some(token) = peers.token_file.as_deref().and_then(super::read_token) else {
        info!("no peer token: the store is built from the topics");
        return vec![Outcome::NoToken];
    };
    let candidates = resolve(&peers.addresses, peers.own_ip);
    if candidates.is_empty() {
        info!(peers = ?peers.addresses, "no peer to copy the store from: replaying the topics");
        return vec![Outcome::NoPeer];
    }
    let definition = image::definition_of(layout);
    let agent = agent();
    let mut outcomes = Vec::new();
    for peer in candidates {
        info!(%peer, "copying the store from a peer");
        let started = Instant::now();
        match fetch(&agent, peer, &token, &definition, store_path, layout) {
            Ok(summary) => {
                info!(
                    %peer,
                    entries = summary.entries,
                    sha256 = %summary.sha256,
                    seconds = started.elapsed().as_secs_f64(),
                    "store copied from a peer: consuming from its offsets"
                );
                outcomes.push(Outcome::Copied);
                return outcomes;
            }
            Err((outcome, reason)) => {
                warn!(%peer, outcome = %outcome.label(), %reason, "no image from this peer");
                outcomes.push(outcome);
            }
        }
    }
    warn!("no peer gave a usable image: replaying the topics");
    outcomes
}

/// Every address of every entry, without the pod's own and without repeats, in
/// the order given. Blank entries (an empty `FACET_PEERS`) are no peers at all.
fn resolve(addresses: &[String], own_ip: Option<IpAddr>) -> Vec<SocketAddr> {
    let mut resolved: Vec<SocketAddr> = Vec::new();
    for entry in addresses.iter().filter(|a| !a.trim().is_empty()) {
        match entry.to_socket_addrs() {
            Ok(found) => {
                for address in found {
                    if Some(address.ip()) != own_ip && !resolved.contains(&address) {
                        resolved.push(address);
                    }
                }
            }
            // A headless Service with no pod yet has no address.
            Err(error) => info!(peer = %entry, %error, "a peer address did not resolve"),
        }
    }
    resolved
}

/// The client peers are asked with: short connect, and a bounded wait per read,
/// so a peer that stops sending is given up on.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into()
}

/// Asks `peer` (`host:port` of its metrics port) for its image of `definition`;
/// the body, or why there is none.
pub fn open_image(
    agent: &ureq::Agent,
    peer: &str,
    token: &str,
    definition: &str,
) -> Result<ureq::BodyReader<'static>, (Outcome, String)> {
    let url = format!("http://{peer}{PEER_IMAGE_PATH}?definition={definition}");
    let response = agent
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| (Outcome::Unreachable, e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        let outcome = match status {
            401 | 403 | 404 => Outcome::Unauthorized,
            409 => Outcome::OtherDefinition,
            503 => Outcome::NotReady,
            _ => Outcome::Invalid,
        };
        let mut body = response.into_body();
        let reason = body
            .with_config()
            .limit(1024)
            .read_to_string()
            .unwrap_or_default();
        return Err((outcome, format!("HTTP {status}: {reason}")));
    }
    Ok(response.into_body().into_reader())
}

fn fetch(
    agent: &ureq::Agent,
    peer: SocketAddr,
    token: &str,
    definition: &str,
    store_path: &Path,
    layout: &Layout,
) -> Result<image::ImageSummary, (Outcome, String)> {
    let body = open_image(agent, &peer.to_string(), token, definition)?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, body);
    image::restore(store_path, layout, reader).map_err(|e| (outcome_of(&e), e.to_string()))
}

/// Why an image was refused, as an outcome.
pub fn outcome_of(error: &ImageError) -> Outcome {
    match error {
        ImageError::Truncated(_) => Outcome::Truncated,
        ImageError::Corrupted => Outcome::Corrupted,
        ImageError::OtherDefinition { .. } => Outcome::OtherDefinition,
        ImageError::Io(_) => Outcome::Unreachable,
        ImageError::Invalid(_) | ImageError::Store(_) => Outcome::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_drops_the_pod_itself_repeats_and_blanks() {
        let own: IpAddr = "127.0.0.2".parse().unwrap();
        let addresses = [
            "127.0.0.1:9090".to_string(),
            "127.0.0.2:9090".to_string(),
            "127.0.0.1:9090".to_string(),
            "no-such-host.invalid:9090".to_string(),
            String::new(),
            "127.0.0.3:9090".to_string(),
        ];
        let resolved = resolve(&addresses, Some(own));
        assert_eq!(
            resolved,
            ["127.0.0.1:9090", "127.0.0.3:9090"].map(|a| a.parse::<SocketAddr>().unwrap())
        );
    }
}
