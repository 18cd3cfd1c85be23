//! AWS Signature Version 4, recomputed by the mock for every Bedrock request. Hand-written
//! with `hmac` and `sha2` from AWS's description (not with `aws-sigv4`, which the gateway
//! signs with), so a gateway bug in canonicalisation shows up as a 403 here instead of being
//! reproduced on both sides.
//!
//! The verifier takes the request as it arrived on the wire: the raw (still percent-encoded)
//! path and query, the headers and the body bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// What SigV4 leaves unencoded: letters, digits and `-_.~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How far `x-amz-date` may be from the mock's clock, as AWS allows.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The credentials and scope the mock expects requests to be signed with.
#[derive(Clone, Debug)]
pub struct AwsExpect {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// When set, `x-amz-security-token` must carry it and be a signed header.
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
}

impl AwsExpect {
    /// Long-term keys for `bedrock` in `region`.
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str) -> AwsExpect {
        AwsExpect {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: None,
            region: region.to_owned(),
            service: "bedrock".to_owned(),
        }
    }

    /// Temporary credentials: the same, plus a session token.
    pub fn with_session_token(mut self, token: &str) -> AwsExpect {
        self.session_token = Some(token.to_owned());
        self
    }
}

/// A request as it arrived: raw path and query, headers (any case), body bytes.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// Every value of header `name`, joined by `,` as SigV4 does for repeated headers.
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Why a request was refused, each as AWS names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header.
    Missing,
    /// An unknown access key id or session token.
    UnrecognizedClient(String),
    /// A malformed `Authorization` header, or one that leaves out what must be signed.
    Incomplete(String),
    /// The signature does not match, or the scope or date is wrong.
    InvalidSignature(String),
}

impl SigError {
    /// The status, `x-amzn-errortype` and message AWS answers with.
    pub fn reply(&self) -> (u16, &'static str, String) {
        match self {
            SigError::Missing => (
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token".to_owned(),
            ),
            SigError::UnrecognizedClient(m) => (403, "UnrecognizedClientException", m.clone()),
            SigError::Incomplete(m) => (403, "IncompleteSignatureException", m.clone()),
            SigError::InvalidSignature(m) => (403, "InvalidSignatureException", m.clone()),
        }
    }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you \
provided. Check your AWS Secret Access Key and signing method. Consult the service \
documentation for details.";

const BAD_TOKEN: &str = "The security token included in the request is invalid.";

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`.
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigError> {
    let incomplete = |what: &str| SigError::Incomplete(format!("Authorization header {what}"));
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("does not use AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("has a part without '='"))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("lacks Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete("has a malformed Credential"));
    };
    if terminator != "aws4_request" {
        return Err(incomplete("Credential does not end in aws4_request"));
    }
    Ok(Authorization {
        key_id,
        date,
        region,
        service,
        signed_headers: signed
            .ok_or_else(|| incomplete("lacks SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| incomplete("lacks Signature"))?,
    })
}

/// Check `req`'s signature against `expect`. `now`, when given, also bounds the clock skew
/// (the published test vectors are from 2015, so their tests pass `None`).
pub fn verify(
    req: &SignedRequest<'_>,
    expect: &AwsExpect,
    now: Option<SystemTime>,
) -> Result<(), SigError> {
    let header = req.header("authorization").ok_or(SigError::Missing)?;
    let auth = parse_authorization(&header)?;
    if auth.key_id != expect.access_key_id {
        return Err(SigError::UnrecognizedClient(BAD_TOKEN.to_owned()));
    }
    let amz_date = req.header("x-amz-date").ok_or_else(|| {
        SigError::Incomplete(
            "Authorization header requires existence of a 'X-Amz-Date' header".into(),
        )
    })?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(SigError::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            amz_date.get(..8).unwrap_or(&amz_date)
        )));
    }
    if auth.region != expect.region {
        return Err(SigError::InvalidSignature(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            auth.region
        )));
    }
    if auth.service != expect.service {
        return Err(SigError::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{}'.",
            expect.service
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(SigError::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if let Some(token) = &expect.session_token {
        match req.header("x-amz-security-token") {
            Some(t) if &t == token => {}
            _ => return Err(SigError::UnrecognizedClient(BAD_TOKEN.to_owned())),
        }
        if !auth.signed_headers.contains(&"x-amz-security-token") {
            return Err(SigError::InvalidSignature(format!(
                "{MISMATCH} (x-amz-security-token is not a signed header)"
            )));
        }
    }
    if let Some(now) = now {
        let signed_at = parse_amz_date(&amz_date).ok_or_else(|| {
            SigError::Incomplete(format!(
                "X-Amz-Date '{amz_date}' is not YYYYMMDD'T'HHMMSS'Z'"
            ))
        })?;
        let skew = match now.duration_since(signed_at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > MAX_SKEW {
            return Err(SigError::InvalidSignature(format!(
                "Signature expired: {amz_date} is more than 15 minutes from the server's time."
            )));
        }
    }
    let payload_hash = payload_hash(req, &auth.signed_headers)?;
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let want = signature(
        &expect.secret_access_key,
        auth.date,
        auth.region,
        auth.service,
        &to_sign,
    );
    if constant_time_eq(want.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::InvalidSignature(format!(
            "{MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{to_sign}'\n"
        )))
    }
}

/// The body's hash as signed: `x-amz-content-sha256` when the client signed it (it must then
/// match the body, unless it says the payload is unsigned), else the hex SHA-256 of the body.
fn payload_hash(req: &SignedRequest<'_>, signed: &[&str]) -> Result<String, SigError> {
    let actual = hex(&Sha256::digest(req.body));
    match req.header("x-amz-content-sha256") {
        Some(claimed) if signed.contains(&"x-amz-content-sha256") => {
            if claimed != "UNSIGNED-PAYLOAD" && claimed != actual {
                return Err(SigError::InvalidSignature(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                        .into(),
                ));
            }
            Ok(claimed)
        }
        _ => Ok(actual),
    }
}

/// The canonical request: method, URI, query, headers, signed header list, payload hash.
pub fn canonical_request(req: &SignedRequest<'_>, signed: &[&str], payload_hash: &str) -> String {
    let headers: String = signed
        .iter()
        .map(|name| {
            let value = req.header(name).unwrap_or_default();
            format!("{name}:{}\n", collapse_spaces(&value))
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed.join(";"),
        payload_hash
    )
}

/// Each segment of the path as received, URI-encoded once more (every service but S3 signs
/// the doubly encoded path: `%3A` on the wire is `%253A` in the canonical request).
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    raw_path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Parameters decoded, re-encoded the SigV4 way and sorted by name, then value.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let decoded = percent_decode_str(s).decode_utf8_lossy();
                utf8_percent_encode(&decoded, UNRESERVED).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trimmed, with each run of spaces inside the value made one space.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    )
}

/// The hex signature: HMAC chain `AWS4`+secret → date → region → service → `aws4_request`,
/// then HMAC of the string to sign.
pub fn signature(secret: &str, date: &str, region: &str, service: &str, to_sign: &str) -> String {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, to_sign.as_bytes()))
}

/// The `Authorization` header for `req` signed with `expect`'s keys at `amz_date`, over the
/// headers named in `signed` (sorted, lower case). For tests that sign a request by hand.
pub fn authorization(
    req: &SignedRequest<'_>,
    expect: &AwsExpect,
    amz_date: &str,
    signed: &[&str],
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let hash = hex(&Sha256::digest(req.body));
    let canonical = canonical_request(req, signed, &hash);
    let scope = format!("{date}/{}/{}/aws4_request", expect.region, expect.service);
    let sig = signature(
        &expect.secret_access_key,
        date,
        &expect.region,
        &expect.service,
        &string_to_sign(amz_date, &scope, &canonical),
    );
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
        expect.access_key_id,
        signed.join(";")
    )
}

/// `x-amz-date` for `t`: `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(4..6)?, num(6..8)?);
    let secs = days * 86_400 + num(9..11)? * 3600 + num(11..13)? * 60 + num(13..15)?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal bytes, in time that depends on the length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
