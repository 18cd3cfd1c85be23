//! Google service-account key files (Vertex AI's `auth_credentials`), read at load time so
//! a key that cannot sign fails the config with its path, not the first request. Errors
//! name what is wrong and never quote the key.

use jsonwebtoken::{Algorithm, EncodingKey};

use crate::config::{Secret, ServiceAccount};

/// Where Google's own libraries send the assertion when the key file names no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Parse a service-account JSON key file. The errors name what is wrong and never quote the
/// key: `not JSON: expected value at line 1 column 5`, `missing "client_email"`,
/// `"type" is "authorized_user", expected "service_account"`,
/// `"private_key" is not a PEM RSA private key`.
pub fn parse_service_account(json: &str) -> Result<ServiceAccount, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Some(fields) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let optional = |name: &str| -> Result<Option<String>, String> {
        match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let required = |name: &str| optional(name)?.ok_or_else(|| format!("missing \"{name}\""));

    let kind = required("type")?;
    if kind != "service_account" {
        return Err(format!(
            "\"type\" is \"{kind}\", expected \"service_account\""
        ));
    }
    let client_email = required("client_email")?;
    let private_key = required("private_key")?;
    signing_key(&private_key).ok_or("\"private_key\" is not a PEM RSA private key")?;
    let token_uri = optional("token_uri")?.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    match reqwest::Url::parse(&token_uri) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => {}
        _ => return Err(format!("\"token_uri\" {token_uri:?} is not an http(s) URL")),
    }
    Ok(ServiceAccount {
        client_email,
        private_key: Secret::new(private_key),
        private_key_id: optional("private_key_id")?,
        token_uri,
        project_id: optional("project_id")?,
    })
}

/// The key, once it has signed something: jsonwebtoken's reasons say nothing an operator
/// can act on beyond "not an RSA key", and must not be able to echo key bytes.
pub fn signing_key(pem: &str) -> Option<EncodingKey> {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).ok()?;
    // The PEM is accepted as soon as its ASN.1 parses; the RSA key inside is only read when
    // signing. Sign once so a bad key fails when the file is loaded, not on the first request.
    jsonwebtoken::crypto::sign(b"probe", &key, Algorithm::RS256).ok()?;
    Some(key)
}
