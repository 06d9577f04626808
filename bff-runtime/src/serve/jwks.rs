//! The issuer's signing keys (its JWKS), cached by key id and kept fresh:
//!
//! - Refreshed in the background once the set is older than `refreshSeconds`,
//!   so a key the issuer removed stops being trusted then, without a restart.
//! - An unknown key id fetches the set at once, but at most once per
//!   [`UNKNOWN_KEY_INTERVAL`]; concurrent callers share one fetch (single flight),
//!   so a burst of tokens with made-up key ids makes one request, not one each.
//! - A failed or empty answer keeps the keys already known (stale while error)
//!   and is retried after [`RETRY_AFTER_ERROR`].
//! - Each key's algorithm is the JWK's `alg` when it has one; only asymmetric
//!   signature algorithms are taken.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Least time between fetches caused by unknown key ids.
pub const UNKNOWN_KEY_INTERVAL: Duration = Duration::from_secs(10);
/// Least time before a failed fetch is tried again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// Longest a fetch may take, and the largest JWKS accepted.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The asymmetric signature algorithms accepted; never `none` or an HMAC.
pub const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithm: Algorithm,
}

#[derive(Default)]
struct Cache {
    by_kid: HashMap<String, Key>,
    /// When the keys were last replaced by a good answer.
    fetched: Option<Instant>,
    /// When the last fetch ended, and whether it failed.
    attempted: Option<(Instant, bool)>,
    /// Counts ended fetches, so a caller that waited for one does not start another.
    generation: u64,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<bytes::Bytes>>;

pub struct Jwks {
    uri: String,
    max_age: Duration,
    client: HttpsClient,
    cache: RwLock<Cache>,
    /// Held by the one fetch in flight.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(uri: String, max_age: Duration) -> Arc<Jwks> {
        // The provider is named, not left to the process default: another crate
        // in the same binary may compile in a second one, and rustls then refuses
        // to guess.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system CA certificates: HTTPS JWKS URIs will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            })
            .https_or_http()
            .enable_http1()
            .build();
        Arc::new(Jwks {
            uri,
            max_age,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key `kid`, fetching the set when it is unknown (rate-limited).
    pub async fn key(self: &Arc<Self>, kid: &str) -> Option<Key> {
        let (found, stale, generation) = {
            let cache = self.cache.read();
            let stale = cache.fetched.is_none_or(|t| t.elapsed() >= self.max_age);
            (cache.by_kid.get(kid).cloned(), stale, cache.generation)
        };
        if let Some(key) = found {
            if stale {
                let jwks = self.clone();
                tokio::spawn(async move { jwks.refresh(generation, jwks.max_age).await });
            }
            return Some(key);
        }
        self.refresh(generation, UNKNOWN_KEY_INTERVAL).await;
        self.cache.read().by_kid.get(kid).cloned()
    }

    /// Fetches the set unless another fetch ended since `seen_generation`, or the
    /// last one ended less than `interval` ago (less than [`RETRY_AFTER_ERROR`]
    /// after a failure).
    async fn refresh(&self, seen_generation: u64, interval: Duration) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let cache = self.cache.read();
            if cache.generation != seen_generation {
                return;
            }
            if let Some((at, failed)) = cache.attempted {
                let wait = if failed { RETRY_AFTER_ERROR } else { interval };
                if at.elapsed() < wait {
                    return;
                }
            }
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        let mut cache = self.cache.write();
        cache.generation += 1;
        match fetched {
            Ok(keys) => {
                cache.by_kid = keys;
                cache.fetched = Some(Instant::now());
                cache.attempted = Some((Instant::now(), false));
            }
            Err(error) => {
                tracing::warn!(jwks_uri = %self.uri, %error, known_keys = cache.by_kid.len(),
                    "cannot refresh the JWKS; keeping the keys already known");
                cache.attempted = Some((Instant::now(), true));
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        let uri: hyper::Uri = self.uri.parse().map_err(|e| format!("bad jwksUri: {e}"))?;
        let response = self.client.get(uri).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?
            .to_bytes();
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys: HashMap<String, Key> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone().unwrap_or_default(), key(jwk)?)))
            .collect();
        if keys.is_empty() {
            // An issuer never means to revoke every key at once; an empty answer
            // is a broken one.
            return Err(format!("no usable signing key among {}", set.keys.len()));
        }
        Ok(keys)
    }
}

/// A JWK as a verification key with its algorithm, or `None` when it is not an
/// accepted signing key.
pub fn key(jwk: &Jwk) -> Option<Key> {
    let algorithm = match jwk.common.key_algorithm {
        Some(declared) => Algorithm::try_from(declared).ok()?,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            _ => return None, // symmetric (`oct`) or unknown key types
        },
    };
    if !ACCEPTED.contains(&algorithm) {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        decoding,
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_jwk_alg_decides_and_symmetric_keys_are_never_taken() {
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"});
        assert_eq!(key(&jwk(rsa.clone())).unwrap().algorithm, Algorithm::RS256);
        let mut ps = rsa.clone();
        ps["alg"] = "PS384".into();
        assert_eq!(key(&jwk(ps)).unwrap().algorithm, Algorithm::PS384);
        let mut hmac_alg_on_rsa = rsa;
        hmac_alg_on_rsa["alg"] = "HS256".into();
        assert!(key(&jwk(hmac_alg_on_rsa)).is_none());
        let secret = serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        assert!(key(&jwk(secret)).is_none());
    }
}
