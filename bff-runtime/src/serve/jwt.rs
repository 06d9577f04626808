//! JWT verification against the issuer's JWKS (see [`super::jwks`] for how keys
//! are kept): asymmetric signatures only (never `none` or an HMAC secret), the
//! key's own algorithm, issuer, audience, expiry and not-before.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Validation;

use super::jwks::{Jwks, ACCEPTED};
use crate::spec::JwtSpec;

const LEEWAY_SECONDS: u64 = crate::viewer::TOKEN_LEEWAY_SECONDS;

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

pub struct JwtVerifier {
    spec: JwtSpec,
    keys: Arc<Jwks>,
}

impl JwtVerifier {
    pub fn new(spec: JwtSpec) -> Self {
        let max_age = Duration::from_secs(u64::from(spec.jwks_refresh_seconds));
        JwtVerifier {
            keys: Jwks::new(spec.jwks_uri.clone(), max_age),
            spec,
        }
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<serde_json::Value, TokenRefused> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused("malformed", format!("not a JWT: {e}")))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(refused(
                "algorithm",
                format!(
                    "algorithm {:?} is not accepted (asymmetric signatures only)",
                    header.alg
                ),
            ));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self.keys.key(&kid).await.ok_or_else(|| {
            refused(
                "unknown_key",
                format!("no key `{kid}` in the issuer's JWKS"),
            )
        })?;
        if key.algorithm != header.alg {
            return Err(refused(
                "algorithm",
                "the token's algorithm does not match its key",
            ));
        }
        let algorithm = key.algorithm;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.spec.issuer]);
        validation.set_audience(&self.spec.audiences);
        validation.leeway = LEEWAY_SECONDS;
        // A token is not good before its `nbf` (jsonwebtoken leaves it unchecked).
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
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
}
