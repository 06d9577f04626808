//! A minimal OpenID-style identity provider for the tests: one ES256 key, its JWKS
//! served over HTTP on loopback, and tokens signed with it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const ISSUER: &str = "https://id.e2e.test";
const KID: &str = "e2e-1";

pub struct IdentityProvider {
    key: EncodingKey,
    /// Where the runtime fetches the public key (`spec.auth.jwt.jwksUri`).
    pub jwks_uri: String,
}

impl IdentityProvider {
    pub fn start() -> IdentityProvider {
        let pair = rcgen::KeyPair::generate().expect("an ES256 key");
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": KID, "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
        .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the JWKS server");
        let jwks_uri = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                // The request itself does not matter: every path answers the JWKS.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
            }
        });
        IdentityProvider {
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwks_uri,
        }
    }

    /// A token for `sub`, for audience `audience`, valid for an hour.
    pub fn token(&self, sub: &str, audience: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.into());
        let claims = json!({"sub": sub, "iss": ISSUER, "aud": audience, "exp": exp});
        jsonwebtoken::encode(&header, &claims, &self.key).expect("signing a token")
    }
}
