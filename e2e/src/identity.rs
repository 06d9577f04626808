//! A minimal OpenID-style identity provider for the tests: one ES256 key, its JWKS
//! served over HTTP on loopback, tokens signed with it, and an OAuth 2.0 token
//! endpoint (client credentials grant, RFC 6749 §4.4) for Kafka's OAUTHBEARER.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const ISSUER: &str = "https://id.e2e.test";
const KID: &str = "e2e-1";

/// The one client the token endpoint knows, and the audience its tokens carry
/// (the broker expects it).
pub const KAFKA_CLIENT_ID: &str = "facet-runtime";
pub const KAFKA_CLIENT_SECRET: &str = "facet-e2e-oidc-secret";
pub const KAFKA_AUDIENCE: &str = "kafka";

pub struct IdentityProvider {
    key: Arc<EncodingKey>,
    /// Where the runtime fetches the public key (`spec.auth.jwt.jwksUri`).
    pub jwks_uri: String,
    /// Where a client trades its id and secret for a token (`POST`, HTTP Basic).
    pub token_uri: String,
    issued: Arc<AtomicUsize>,
}

impl IdentityProvider {
    pub fn start() -> IdentityProvider {
        let pair = rcgen::KeyPair::generate().expect("an ES256 key");
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": KID, "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
        .to_string();
        let key = Arc::new(EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the identity provider");
        let address = listener.local_addr().unwrap();
        let (signer, counter) = (key.clone(), issued.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let Some(request) = read_request(&mut reader) else {
                    continue;
                };
                let (status, body) = if request.path == "/token" {
                    token_response(&request, &signer, &counter)
                } else if let Some(query) = request.path.strip_prefix("/user-token?") {
                    user_token(query, &signer)
                } else {
                    ("200 OK", jwks.clone())
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        IdentityProvider {
            key,
            jwks_uri: format!("http://{address}/jwks.json"),
            token_uri: format!("http://{address}/token"),
            issued,
        }
    }

    /// A token for `sub`, for audience `audience`, valid for an hour.
    pub fn token(&self, sub: &str, audience: &str) -> String {
        sign(&self.key, sub, audience, 3600)
    }

    /// Where a test's client asks for a user's token as a login page would give
    /// it: `GET <this>?sub=<user>&aud=<audience>&ttl=<seconds>` answers the JWT.
    pub fn user_token_uri(&self) -> String {
        self.jwks_uri.replace("/jwks.json", "/user-token")
    }

    /// How many tokens the token endpoint has handed out.
    pub fn tokens_issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn sign(key: &EncodingKey, sub: &str, audience: &str, ttl_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.into());
    // Kafka's broker-side validator requires `iat` as well as `exp`.
    let claims =
        json!({"sub": sub, "iss": ISSUER, "aud": audience, "iat": now, "exp": now + ttl_secs});
    jsonwebtoken::encode(&header, &claims, key).expect("signing a token")
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut authorization, mut length) = (None, 0);
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? <= 2 {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A user's token with the claims of the query (`sub`, `aud`, `ttl` seconds).
fn user_token(query: &str, key: &EncodingKey) -> (&'static str, String) {
    let value = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    match (
        value("sub"),
        value("aud"),
        value("ttl").and_then(|t| t.parse().ok()),
    ) {
        (Some(sub), Some(audience), Some(ttl)) => ("200 OK", sign(key, sub, audience, ttl)),
        _ => ("400 Bad Request", "sub, aud and ttl are required".into()),
    }
}

/// The client credentials grant: HTTP Basic with the known client, or 401.
fn token_response(
    request: &Request,
    key: &EncodingKey,
    issued: &AtomicUsize,
) -> (&'static str, String) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{KAFKA_CLIENT_ID}:{KAFKA_CLIENT_SECRET}"))
    );
    if request.method != "POST" || !request.body.contains("grant_type=client_credentials") {
        return (
            "400 Bad Request",
            json!({"error": "unsupported_grant_type"}).to_string(),
        );
    }
    if request.authorization.as_deref() != Some(expected.as_str()) {
        return (
            "401 Unauthorized",
            json!({"error": "invalid_client"}).to_string(),
        );
    }
    issued.fetch_add(1, Ordering::SeqCst);
    let token = sign(key, KAFKA_CLIENT_ID, KAFKA_AUDIENCE, 3600);
    (
        "200 OK",
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}).to_string(),
    )
}
