//! A Google service account for tests: a fresh RSA key pair and the JSON key file the
//! gateway reads (`type: service_account`, PKCS#8 PEM private key, `token_uri` pointing at a
//! [`TokenServer`](crate::token_server::TokenServer)), plus an RS256 signer so tests can make
//! assertions of their own.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::Sha256;

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A service account key file and the key pair behind it.
pub struct ServiceAccountFixture {
    /// The key file's JSON, as downloaded from Google Cloud.
    pub json: String,
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    pub private_key: RsaPrivateKey,
    pub public_key: RsaPublicKey,
}

impl ServiceAccountFixture {
    /// A new 2048-bit key and a key file whose `token_uri` is `token_uri`.
    pub fn generate(token_uri: &str) -> ServiceAccountFixture {
        let private_key = match RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048) {
            Ok(k) => k,
            Err(e) => panic!("cannot generate an RSA key: {e}"),
        };
        Self::with_key(token_uri, private_key)
    }

    /// A key file for an existing key (to share one key between fixtures).
    pub fn with_key(token_uri: &str, private_key: RsaPrivateKey) -> ServiceAccountFixture {
        let pem = match private_key.to_pkcs8_pem(LineEnding::LF) {
            Ok(p) => p.to_string(),
            Err(e) => panic!("cannot encode the RSA key as PKCS#8: {e}"),
        };
        let project_id = "mock-project".to_owned();
        let client_email = format!("switchyard-test@{project_id}.iam.gserviceaccount.com");
        let private_key_id = "0123456789abcdef0123456789abcdef01234567".to_owned();
        let json = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                client_email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com"
        })
        .to_string();
        ServiceAccountFixture {
            json,
            project_id,
            client_email,
            private_key_id,
            token_uri: token_uri.to_owned(),
            public_key: RsaPublicKey::from(&private_key),
            private_key,
        }
    }

    /// The claims a correct client sends at `now` (seconds since the epoch).
    pub fn claims(&self, now: u64) -> Value {
        json!({
            "iss": self.client_email,
            "scope": CLOUD_PLATFORM,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600
        })
    }

    /// `header.claims.signature`, RS256 with this account's key and `kid`.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        sign_jwt_with(&self.private_key, &header, claims)
    }
}

/// A JWT with any header and claims, RS256-signed with `key` (tests make bad ones with it).
pub fn sign_jwt_with(key: &RsaPrivateKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_vec()))
}
