//! The checks Google's token endpoint makes on a JWT-bearer assertion, written here without a
//! JWT crate: split, base64url-decode, `alg: RS256`, the RSASSA-PKCS1-v1_5/SHA-256 signature
//! with the account's public key, then the claims (`iss`, `aud`, `scope`, `iat`/`exp`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::Value;
use sha2::Sha256;

use crate::service_account::CLOUD_PLATFORM;

/// A service account the token server knows.
#[derive(Clone, Debug)]
pub struct Trusted {
    pub client_email: String,
    pub public_key: RsaPublicKey,
    /// When set, an assertion's `kid` (if it has one) must be this.
    pub kid: Option<String>,
}

/// A refusal: Google's `error` code and `error_description`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: &'static str,
    pub description: String,
}

fn refused(error: &'static str, description: &str) -> Refused {
    Refused {
        error,
        description: description.to_owned(),
    }
}

const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// How far in the future `iat` may be: clocks differ a little.
const SKEW_SECS: i64 = 300;

/// The decoded claims of an assertion that passes every check, or why it does not.
pub fn check(
    assertion: &str,
    trusted: &[Trusted],
    audience: &str,
    now: i64,
) -> Result<Value, Refused> {
    let malformed = || refused("invalid_grant", "Invalid JWT: malformed.");
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| malformed());
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| malformed())?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| malformed())?;
    let signature = decode(s)?;
    if header["alg"] != "RS256" {
        return Err(refused(
            "invalid_grant",
            &format!("Invalid JWT: unsupported algorithm {}.", header["alg"]),
        ));
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    let account = trusted
        .iter()
        .find(|t| t.client_email == iss)
        .ok_or_else(|| refused("invalid_grant", "Invalid grant: account not found"))?;
    if let (Some(want), Some(got)) = (&account.kid, header["kid"].as_str()) {
        if want != got {
            return Err(refused("invalid_grant", BAD_SIGNATURE));
        }
    }
    let signature = Signature::try_from(signature.as_slice())
        .map_err(|_| refused("invalid_grant", BAD_SIGNATURE))?;
    VerifyingKey::<Sha256>::new(account.public_key.clone())
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| refused("invalid_grant", BAD_SIGNATURE))?;
    if claims["aud"] != audience {
        return Err(refused(
            "invalid_grant",
            &format!("Invalid JWT: Failed audience check. The right audience is {audience}"),
        ));
    }
    let scopes = claims["scope"].as_str().unwrap_or("");
    if !scopes.split(' ').any(|s| s == CLOUD_PLATFORM) {
        return Err(refused(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(refused("invalid_grant", BAD_TIME));
    };
    if exp <= iat || exp - iat > 3600 || exp <= now || iat > now + SKEW_SECS {
        return Err(refused("invalid_grant", BAD_TIME));
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::service_account::{sign_jwt_with, ServiceAccountFixture};
    use serde_json::json;

    const AUD: &str = "http://127.0.0.1:1/token";

    #[test]
    fn accepts_a_good_assertion_and_refuses_bad_ones() {
        let sa = ServiceAccountFixture::generate(AUD);
        let trusted = [Trusted {
            client_email: sa.client_email.clone(),
            public_key: sa.public_key.clone(),
            kid: Some(sa.private_key_id.clone()),
        }];
        let now = 1_700_000_000;
        let good = sa.sign_jwt(&sa.claims(now as u64));
        let claims = check(&good, &trusted, AUD, now).unwrap();
        assert_eq!(claims["iss"], sa.client_email);

        // Tampered: claims changed after signing.
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut forged = sa.claims(now as u64);
        forged["scope"] = json!(format!(
            "{CLOUD_PLATFORM} https://www.googleapis.com/auth/admin"
        ));
        let forged = URL_SAFE_NO_PAD.encode(forged.to_string());
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert_eq!(
            check(&tampered, &trusted, AUD, now)
                .unwrap_err()
                .description,
            BAD_SIGNATURE
        );

        let mut wrong_aud = sa.claims(now as u64);
        wrong_aud["aud"] = json!("https://oauth2.googleapis.com/token");
        let e = check(&sa.sign_jwt(&wrong_aud), &trusted, AUD, now).unwrap_err();
        assert!(e.description.contains("audience"), "{e:?}");

        let expired = sa.sign_jwt(&sa.claims(now as u64 - 7200));
        assert_eq!(
            check(&expired, &trusted, AUD, now).unwrap_err().description,
            BAD_TIME
        );

        let mut too_long = sa.claims(now as u64);
        too_long["exp"] = json!(now + 7200);
        assert!(check(&sa.sign_jwt(&too_long), &trusted, AUD, now).is_err());

        let mut no_scope = sa.claims(now as u64);
        no_scope["scope"] = json!("https://www.googleapis.com/auth/userinfo.email");
        assert_eq!(
            check(&sa.sign_jwt(&no_scope), &trusted, AUD, now)
                .unwrap_err()
                .error,
            "invalid_scope"
        );

        let hs256 = sign_jwt_with(
            &sa.private_key,
            &json!({"alg": "HS256"}),
            &sa.claims(now as u64),
        );
        assert!(check(&hs256, &trusted, AUD, now).is_err());

        // Signed by another key.
        let other = ServiceAccountFixture::with_key(
            AUD,
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap(),
        );
        let foreign = sign_jwt_with(
            &other.private_key,
            &json!({"alg": "RS256"}),
            &sa.claims(now as u64),
        );
        assert_eq!(
            check(&foreign, &trusted, AUD, now).unwrap_err().description,
            BAD_SIGNATURE
        );
        assert!(check("a.b", &trusted, AUD, now).is_err());
    }
}
