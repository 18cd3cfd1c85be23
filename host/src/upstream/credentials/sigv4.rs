//! AWS Signature Version 4: how a request to Bedrock (or any AWS service but S3) proves who
//! sent it.
//!
//! The last step before a request leaves for AWS: the provider has built the method, URL,
//! headers and exact body bytes; `sign` adds `x-amz-date`, `authorization` and, with temporary
//! credentials, `x-amz-security-token`. Nothing may change the request after it (reqwest adds
//! only `host`, which is signed from the URL, and `content-length`, which is not signed).
//!
//! The signing itself is the AWS SDK's own `aws-sigv4`; this module only fixes its settings for
//! the non-S3 services and guards the inputs it would otherwise panic on or sign differently from
//! what reqwest sends.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    self, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::Secret;

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";

/// An access key, possibly temporary (STS, an assumed role: then with its session token).
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Why a request could not be signed. No variant carries a secret, a token or the URL (whose
/// user-info could hold a password).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign the request: {0}")]
    InvalidUrl(String),
    #[error("cannot sign the request: header {name} is not visible ASCII text")]
    HeaderNotText { name: String },
    #[error("cannot sign the request: {0}")]
    InvalidParams(String),
    #[error("AWS SigV4 signing failed: {0}")]
    Signer(String),
}

/// Sign a request in place: adds `x-amz-date`, `authorization` and, with a session token,
/// `x-amz-security-token` (those two marked sensitive so they are never logged). The signature
/// covers the method, the URL (path and query) as it will be sent, `host` (taken from the URL
/// when `headers` has none), every header already in `headers` except `user-agent`,
/// `x-amzn-trace-id` and `transfer-encoding` (which proxies rewrite), and the exact body bytes.
///
/// `url` must be absolute with its path already percent-encoded (a Bedrock model id's `:` as
/// `%3A`). Signing again (a retry) replaces the previous signature headers.
#[allow(clippy::too_many_arguments)] // The parts of one request; a struct would only rename them.
pub fn sign(
    method: &Method,
    url: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SignError> {
    check_url(url)?;
    // A previous signature must not be signed into the new one, and a stale token must not stay
    // behind when the new credentials have none.
    headers.remove(AUTHORIZATION);
    headers.remove(X_AMZ_DATE);
    headers.remove(X_AMZ_SECURITY_TOKEN);

    let mut signed_headers = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let value = value.to_str().map_err(|_| SignError::HeaderNotText {
            name: name.to_string(),
        })?;
        signed_headers.push((name.as_str(), value));
    }

    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        creds.secret_access_key.expose(),
        creds.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "switchyard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings())
        .build()
        .map_err(|e| SignError::InvalidParams(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        url,
        signed_headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(signer_error)?;
    let (instructions, _signature) = http_request::sign(request, &params)
        .map_err(signer_error)?
        .into_parts();

    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|e| SignError::Signer(format!("header name {}: {e}", header.name())))?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| SignError::Signer(format!("header {} is not a valid value", name)))?;
        // The signature is no secret by itself, but it lets its holder replay this request.
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        headers.insert(name, value);
    }
    Ok(())
}

/// The settings every AWS SDK uses for services other than S3.
fn settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    // Those services decode the path once before computing the canonical URI and then encode
    // each segment again: the sent `%3A` of a Bedrock model id is signed as `%253A`.
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    // They also remove `.`, `..` and empty segments (RFC 3986) before checking; only S3 signs
    // the raw path. reqwest's URL parser removes dot segments too, so what is sent normalises to
    // what is signed.
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
    // `x-amz-content-sha256` is S3's; the canonical request carries the body's hash anyway.
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    // The session token is a signed header, as the SDKs send it to Bedrock.
    settings.session_token_mode = SessionTokenMode::Include;
    settings.signature_location = SignatureLocation::Headers;
    settings
}

/// The signer panics on a URL without a host and would sign a path differently from what
/// reqwest sends if a character in it still needed encoding: refuse both here.
fn check_url(url: &str) -> Result<(), SignError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| SignError::InvalidUrl(format!("the URL does not parse: {e}")))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => {
            return Err(SignError::InvalidUrl(
                "the URL must be absolute, http or https".into(),
            ))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(SignError::InvalidUrl("the URL has no host".into()));
    };
    if authority.as_str().contains('@') {
        // The signer would take `user:password@host` for the host, which is not what is sent.
        return Err(SignError::InvalidUrl(
            "the URL has user-info (user@host), which is not sent and cannot be signed".into(),
        ));
    }
    if let Some(c) = uri.path().chars().find(|c| !is_path_char(*c)) {
        return Err(SignError::InvalidUrl(format!(
            "the path has {c:?}, which must be percent-encoded before signing"
        )));
    }
    Ok(())
}

/// RFC 3986 `pchar`, `/` and the `%` of an escape: what a URL parser sends unchanged.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

fn signer_error(error: http_request::SigningError) -> SignError {
    // The crate's Display is terse ("failed to create canonical request"); the cause is in the
    // source chain. None of them carries a credential.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SignError::Signer(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    /// One case of the AWS signing test suite (see `sigv4/aws-signing-test-suite/README.md`).
    struct Case {
        name: &'static str,
        context: &'static str,
        request: &'static str,
        canonical_request: &'static str,
        string_to_sign: &'static str,
        signed_request: &'static str,
    }

    macro_rules! case {
        ($name:literal) => {
            Case {
                name: $name,
                context: include_str!(concat!(
                    "sigv4/aws-signing-test-suite/",
                    $name,
                    "/context.json"
                )),
                request: include_str!(concat!(
                    "sigv4/aws-signing-test-suite/",
                    $name,
                    "/request.txt"
                )),
                canonical_request: include_str!(concat!(
                    "sigv4/aws-signing-test-suite/",
                    $name,
                    "/header-canonical-request.txt"
                )),
                string_to_sign: include_str!(concat!(
                    "sigv4/aws-signing-test-suite/",
                    $name,
                    "/header-string-to-sign.txt"
                )),
                signed_request: include_str!(concat!(
                    "sigv4/aws-signing-test-suite/",
                    $name,
                    "/header-signed-request.txt"
                )),
            }
        };
    }

    /// Each read through `sign` exactly as a provider would call it.
    const VECTORS: &[Case] = &[
        case!("get-vanilla"),
        case!("post-vanilla"),
        case!("post-header-key-case"),
        case!("post-header-key-sort"),
        case!("post-header-value-case"),
        case!("post-x-www-form-urlencoded"),
        case!("post-x-www-form-urlencoded-parameters"),
        case!("get-vanilla-query-order-key-case"),
        case!("get-vanilla-query-order-encoded"),
        case!("get-vanilla-query-unreserved"),
        case!("get-vanilla-empty-query-key"),
        case!("post-vanilla-query"),
        case!("get-header-key-duplicate"),
        case!("get-header-value-order"),
        case!("get-header-value-trim"),
        case!("get-unreserved"),
        case!("get-slashes-normalized"),
        case!("get-relative-relative-normalized"),
        case!("get-slash-dot-slash-normalized"),
        case!("get-vanilla-with-session-token"),
        case!("post-sts-header-before"),
        case!("double-url-encode"),
    ];

    struct Vector {
        method: Method,
        url: String,
        headers: HeaderMap,
        body: Vec<u8>,
        creds: AwsCredentials,
        region: String,
        service: String,
        time: SystemTime,
        sign_body: bool,
        expected_authorization: String,
        canonical_request: String,
        string_to_sign: String,
    }

    /// `2015-08-30T12:36:00Z` → SystemTime, by the civil-from-days algorithm.
    fn parse_timestamp(s: &str) -> SystemTime {
        let n = |range: std::ops::Range<usize>| s[range].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
    }

    fn load(case: &Case) -> Vector {
        let context: serde_json::Value = serde_json::from_str(case.context).unwrap();
        let (head, body) = case
            .request
            .split_once("\n\n")
            .unwrap_or((case.request, ""));
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap().split(' ');
        let method: Method = request_line.next().unwrap().parse().unwrap();
        let path = request_line.next().unwrap();
        let mut host = None;
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("host") {
                // The caller never sets `host`: the signer must take it from the URL.
                host = Some(value.to_string());
            } else {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
        }
        let credentials = &context["credentials"];
        let expected_authorization = case
            .signed_request
            .lines()
            .find_map(|l| l.strip_prefix("Authorization:"))
            .unwrap()
            .trim()
            .to_string();
        Vector {
            method,
            url: format!("https://{}{path}", host.unwrap()),
            headers,
            body: body.as_bytes().to_vec(),
            creds: AwsCredentials {
                access_key_id: credentials["access_key_id"].as_str().unwrap().into(),
                secret_access_key: Secret::new(credentials["secret_access_key"].as_str().unwrap()),
                session_token: credentials["token"].as_str().map(Secret::new),
            },
            region: context["region"].as_str().unwrap().into(),
            service: context["service"].as_str().unwrap().into(),
            time: parse_timestamp(context["timestamp"].as_str().unwrap()),
            sign_body: context["sign_body"].as_bool().unwrap(),
            expected_authorization,
            canonical_request: case.canonical_request.trim_end_matches('\n').to_string(),
            string_to_sign: case.string_to_sign.trim_end_matches('\n').to_string(),
        }
    }

    #[test]
    fn aws_test_suite_vectors() {
        for case in VECTORS {
            let mut v = load(case);
            let case = case.name;
            if v.sign_body {
                // The suite's `sign_body` has the signer add `x-amz-content-sha256` (S3's
                // header, which `sign` leaves out); as a header the caller set, it is signed
                // like any other, which is the same canonical request.
                let hash = hex(&Sha256::digest(&v.body));
                v.headers.insert(
                    "x-amz-content-sha256",
                    HeaderValue::from_str(&hash).unwrap(),
                );
            }
            let mut headers = v.headers.clone();
            sign(
                &v.method,
                &v.url,
                &mut headers,
                &v.body,
                &v.creds,
                &v.region,
                &v.service,
                v.time,
            )
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(
                headers[AUTHORIZATION].to_str().unwrap(),
                v.expected_authorization,
                "{case}"
            );
            assert!(headers[AUTHORIZATION].is_sensitive(), "{case}");
            let date = v.string_to_sign.lines().nth(1).unwrap();
            assert_eq!(headers[X_AMZ_DATE].to_str().unwrap(), date, "{case}");
            match &v.creds.session_token {
                Some(token) => {
                    assert_eq!(
                        headers[X_AMZ_SECURITY_TOKEN].to_str().unwrap(),
                        token.expose()
                    );
                    assert!(headers[X_AMZ_SECURITY_TOKEN].is_sensitive(), "{case}");
                }
                None => assert!(!headers.contains_key(X_AMZ_SECURITY_TOKEN), "{case}"),
            }
            // Nothing else is added: reqwest sets `host` itself, from the same URL.
            assert!(!headers.contains_key(http::header::HOST), "{case}");
        }
    }

    // --- An HMAC chain written from AWS's description, independent of `aws-sigv4`. ---

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// `date_time` is `YYYYMMDDTHHMMSSZ`; returns (string to sign, signature).
    fn reference_signature(
        secret: &str,
        date_time: &str,
        region: &str,
        service: &str,
        canonical_request: &str,
    ) -> (String, String) {
        let date = &date_time[..8];
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), date);
        let k_region = hmac(&k_date, region);
        let k_service = hmac(&k_region, service);
        let k_signing = hmac(&k_service, "aws4_request");
        let signature = hex(&hmac(&k_signing, &string_to_sign));
        (string_to_sign, signature)
    }

    #[test]
    fn the_reference_chain_reproduces_the_suite() {
        // Checks the test's own HMAC chain (and the copied files) before trusting it below.
        for case in VECTORS {
            let v = load(case);
            let case = case.name;
            let date_time = v.string_to_sign.lines().nth(1).unwrap();
            let (string_to_sign, signature) = reference_signature(
                v.creds.secret_access_key.expose(),
                date_time,
                &v.region,
                &v.service,
                &v.canonical_request,
            );
            assert_eq!(string_to_sign, v.string_to_sign, "{case}");
            assert!(
                v.expected_authorization
                    .ends_with(&format!("Signature={signature}")),
                "{case}"
            );
        }
    }

    fn bedrock_creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    const BEDROCK_URL: &str = "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse";
    const BEDROCK_BODY: &[u8] =
        br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":64}}"#;

    /// 2024-10-22T12:34:56Z.
    fn bedrock_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_729_600_496)
    }

    fn sign_bedrock(url: &str, token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        sign(
            &Method::POST,
            url,
            &mut headers,
            BEDROCK_BODY,
            &bedrock_creds(token),
            "us-west-2",
            "bedrock",
            bedrock_time(),
        )
        .unwrap();
        headers
    }

    #[test]
    fn bedrock_model_id_path_is_double_encoded() {
        let headers = sign_bedrock(BEDROCK_URL, None);
        let canonical_request = format!(
            "POST\n\
             /model/anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse\n\
             \n\
             accept:application/json\n\
             content-type:application/json\n\
             host:bedrock-runtime.us-west-2.amazonaws.com\n\
             x-amz-date:20241022T123456Z\n\
             \n\
             accept;content-type;host;x-amz-date\n\
             {}",
            hex(&Sha256::digest(BEDROCK_BODY))
        );
        let (_, signature) = reference_signature(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20241022T123456Z",
            "us-west-2",
            "bedrock",
            &canonical_request,
        );
        assert_eq!(
            headers[AUTHORIZATION].to_str().unwrap(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20241022/us-west-2/bedrock/aws4_request, \
                 SignedHeaders=accept;content-type;host;x-amz-date, Signature={signature}"
            )
        );
        assert_eq!(headers[X_AMZ_DATE], "20241022T123456Z");
    }

    #[test]
    fn bedrock_with_a_session_token_and_a_port() {
        let url = "https://localhost:8443/model/amazon.nova-pro-v1%3A0/converse-stream";
        let headers = sign_bedrock(url, Some("FwoGZXIvYXdzEXAMPLE//token+/="));
        let canonical_request = format!(
            "POST\n\
             /model/amazon.nova-pro-v1%253A0/converse-stream\n\
             \n\
             accept:application/json\n\
             content-type:application/json\n\
             host:localhost:8443\n\
             x-amz-date:20241022T123456Z\n\
             x-amz-security-token:FwoGZXIvYXdzEXAMPLE//token+/=\n\
             \n\
             accept;content-type;host;x-amz-date;x-amz-security-token\n\
             {}",
            hex(&Sha256::digest(BEDROCK_BODY))
        );
        let (_, signature) = reference_signature(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20241022T123456Z",
            "us-west-2",
            "bedrock",
            &canonical_request,
        );
        let authorization = headers[AUTHORIZATION].to_str().unwrap();
        assert!(
            authorization.ends_with(&format!(
                "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature={signature}"
            )),
            "{authorization}"
        );
        assert_eq!(
            headers[X_AMZ_SECURITY_TOKEN],
            "FwoGZXIvYXdzEXAMPLE//token+/="
        );
        assert!(headers[X_AMZ_SECURITY_TOKEN].is_sensitive());
    }

    #[test]
    fn the_body_and_headers_are_covered() {
        let base = sign_bedrock(BEDROCK_URL, None);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        sign(
            &Method::POST,
            BEDROCK_URL,
            &mut headers,
            b"{}",
            &bedrock_creds(None),
            "us-west-2",
            "bedrock",
            bedrock_time(),
        )
        .unwrap();
        assert_ne!(base[AUTHORIZATION], headers[AUTHORIZATION]);
    }

    #[test]
    fn signing_again_replaces_the_previous_signature() {
        let mut headers = sign_bedrock(BEDROCK_URL, Some("old-token"));
        // A retry with credentials that have no token: the old one must not linger.
        sign(
            &Method::POST,
            BEDROCK_URL,
            &mut headers,
            BEDROCK_BODY,
            &bedrock_creds(None),
            "us-west-2",
            "bedrock",
            bedrock_time(),
        )
        .unwrap();
        assert!(!headers.contains_key(X_AMZ_SECURITY_TOKEN));
        assert_eq!(headers, sign_bedrock(BEDROCK_URL, None));
    }

    fn sign_url(url: &str) -> Result<(), SignError> {
        sign(
            &Method::POST,
            url,
            &mut HeaderMap::new(),
            b"",
            &bedrock_creds(Some("session-token-value")),
            "us-west-2",
            "bedrock",
            bedrock_time(),
        )
    }

    #[test]
    fn urls_it_cannot_sign_faithfully_are_refused() {
        for (url, expected) in [
            ("/model/x/converse", "absolute"),
            (
                "bedrock-runtime.us-west-2.amazonaws.com/model",
                "does not parse",
            ),
            ("ftp://host/x", "absolute"),
            ("https://user:pass@host/x", "user-info"),
            ("https://host/model/{id}/converse", "percent-encoded"),
            ("not a url", "does not parse"),
        ] {
            let error = sign_url(url).unwrap_err();
            assert!(
                matches!(error, SignError::InvalidUrl(_)),
                "{url}: {error:?}"
            );
            let text = error.to_string();
            assert!(text.contains(expected), "{url}: {text}");
            assert!(!text.contains("pass"), "{text}");
        }
        sign_url("https://host").unwrap();
        sign_url("http://127.0.0.1:9000/model/a%3Ab/invoke?x=1").unwrap();
    }

    #[test]
    fn a_header_that_is_not_text_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("x-odd", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let error = sign(
            &Method::POST,
            BEDROCK_URL,
            &mut headers,
            b"",
            &bedrock_creds(None),
            "us-west-2",
            "bedrock",
            bedrock_time(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot sign the request: header x-odd is not visible ASCII text"
        );
    }

    #[test]
    fn secrets_never_print() {
        let creds = bedrock_creds(Some("session-token-value"));
        let printed = format!("{creds:?}");
        assert!(!printed.contains("EXAMPLEKEY"), "{printed}");
        assert!(!printed.contains("session-token-value"), "{printed}");
        let error = sign(
            &Method::POST,
            BEDROCK_URL,
            &mut HeaderMap::new(),
            b"",
            &creds,
            "",
            "bedrock",
            bedrock_time(),
        );
        if let Err(error) = error {
            let printed = format!("{error} {error:?}");
            assert!(!printed.contains("EXAMPLEKEY"), "{printed}");
            assert!(!printed.contains("session-token-value"), "{printed}");
        }
    }
}
