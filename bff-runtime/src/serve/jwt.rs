//! JWT verification against the issuer's JWKS: RS256 and ES256 only (never `none`
//! or an HMAC secret), issuer, audience, expiry. Keys are cached by `kid`; an
//! unknown `kid` refreshes the set, at most once per `REFRESH_INTERVAL`, so a
//! flood of forged tokens cannot turn into a flood of JWKS requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::spec::JwtSpec;

const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
const LEEWAY_SECONDS: u64 = 30;

/// Why a token was refused; the label goes to metrics, the text to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRefused {
    pub reason: &'static str,
    pub message: String,
}

fn refused(reason: &'static str, message: impl Into<String>) -> TokenRefused {
    TokenRefused {
        reason,
        message: message.into(),
    }
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    spec: JwtSpec,
    keys: Mutex<Keys>,
}

impl JwtVerifier {
    pub fn new(spec: JwtSpec) -> Self {
        JwtVerifier {
            spec,
            keys: Mutex::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            }),
        }
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<serde_json::Value, TokenRefused> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused("malformed", format!("not a JWT: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(refused(
                "algorithm",
                format!("algorithm {:?} is not accepted (RS256, ES256)", header.alg),
            ));
        }
        let kid = header.kid.unwrap_or_default();
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh().await?;
                self.key(&kid).ok_or_else(|| {
                    refused(
                        "unknown_key",
                        format!("no key `{kid}` in the issuer's JWKS"),
                    )
                })?
            }
        };
        let (decoding_key, algorithm) = key;
        if algorithm != header.alg {
            return Err(refused(
                "algorithm",
                "the token's algorithm does not match its key",
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.spec.issuer]);
        validation.set_audience(&self.spec.audiences);
        validation.leeway = LEEWAY_SECONDS;
        // A token is not good before its `nbf` (jsonwebtoken leaves it unchecked).
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &decoding_key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => refused("expired", "the token has expired"),
                    ErrorKind::InvalidAudience => {
                        refused("audience", "the token is not for this audience")
                    }
                    ErrorKind::InvalidIssuer => {
                        refused("issuer", "the token is from another issuer")
                    }
                    ErrorKind::InvalidSignature => {
                        refused("signature", "the token's signature is not valid")
                    }
                    ErrorKind::ImmatureSignature => {
                        refused("not_yet_valid", "the token is not valid yet")
                    }
                    _ => refused("invalid", format!("invalid token: {e}")),
                }
            })?;
        Ok(data.claims)
    }

    fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.lock().ok()?.by_kid.get(kid).cloned()
    }

    /// Fetches the JWKS again, unless that was done less than `REFRESH_INTERVAL` ago.
    async fn refresh(&self) -> Result<(), TokenRefused> {
        {
            let keys = self
                .keys
                .lock()
                .map_err(|_| refused("internal", "key cache unavailable"))?;
            if keys.fetched.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                return Ok(());
            }
        }
        let uri = self.spec.jwks_uri.clone();
        let fetched = tokio::task::spawn_blocking(move || fetch_jwks(&uri))
            .await
            .map_err(|e| refused("jwks_unavailable", e.to_string()))?;
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| refused("internal", "key cache unavailable"))?;
        keys.fetched = Some(Instant::now());
        match fetched {
            Ok(set) => {
                keys.by_kid = set;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(jwks_uri = %self.spec.jwks_uri, error = %e, "cannot fetch the JWKS");
                Err(refused(
                    "jwks_unavailable",
                    "the issuer's keys are unavailable",
                ))
            }
        }
    }
}

fn fetch_jwks(uri: &str) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let set: JwkSet = agent
        .get(uri)
        .call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_json()
        .map_err(|e| e.to_string())?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => continue,
        };
        keys.insert(
            jwk.common.key_id.clone().unwrap_or_default(),
            (key, algorithm),
        );
    }
    Ok(keys)
}
