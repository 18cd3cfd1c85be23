//! The verifier against AWS's published SigV4 test suite (the `header-signed-request.txt`
//! files of `aws-signing-test-suite/v4` in smithy-rs, taken from awslabs/aws-c-auth,
//! Apache-2.0, copied into `vectors/`), and against a request signed by hand.

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

/// A request in the suite's text form: request line, `Name:value` lines, blank line, body.
struct Parsed {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn new(text: &str) -> Parsed {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let mut words = request_line.split(' ');
        let method = words.next().unwrap().to_owned();
        let target = words.next().unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Parsed {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn request(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

fn suite_expect() -> AwsExpect {
    AwsExpect {
        service: "service".into(),
        ..AwsExpect::new("AKIDEXAMPLE", SECRET, "us-east-1")
    }
}

fn vector(name: &str) -> Parsed {
    let text = match name {
        "get-vanilla" => include_str!("vectors/get-vanilla.txt"),
        "post-vanilla" => include_str!("vectors/post-vanilla.txt"),
        "post-x-www-form-urlencoded" => include_str!("vectors/post-x-www-form-urlencoded.txt"),
        "get-vanilla-query-order-key-case" => {
            include_str!("vectors/get-vanilla-query-order-key-case.txt")
        }
        "get-header-value-trim" => include_str!("vectors/get-header-value-trim.txt"),
        "get-vanilla-with-session-token" => {
            include_str!("vectors/get-vanilla-with-session-token.txt")
        }
        "post-sts-header-after" => include_str!("vectors/post-sts-header-after.txt"),
        other => panic!("no vector {other}"),
    };
    Parsed::new(text)
}

#[test]
fn published_vectors_verify() {
    for name in [
        "get-vanilla",
        "post-vanilla",
        "post-x-www-form-urlencoded",
        "get-vanilla-query-order-key-case",
        "get-header-value-trim",
    ] {
        let p = vector(name);
        assert_eq!(
            verify(&p.request(), &suite_expect(), None),
            Ok(()),
            "{name}"
        );
    }
}

#[test]
fn published_canonical_pieces() {
    let p = vector("get-vanilla-query-order-key-case");
    assert_eq!(canonical_query(&p.query), "Param1=value1&Param2=value2");
    let p = vector("get-header-value-trim");
    let canonical = canonical_request(
        &p.request(),
        &["host", "my-header1", "my-header2", "x-amz-date"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    assert_eq!(
        canonical,
        "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n\
         x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // `double-encode-path` of the same suite: the path on the wire, encoded once more.
    assert_eq!(
        canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D"),
        "/test/%40connections/JBDvjfGEIAMCERw%253D"
    );
}

#[test]
fn session_tokens() {
    let signed = vector("get-vanilla-with-session-token");
    let with_token = suite_expect()
        .with_session_token("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267");
    assert_eq!(verify(&signed.request(), &with_token, None), Ok(()));
    let other_token = suite_expect().with_session_token("other");
    assert!(matches!(
        verify(&signed.request(), &other_token, None),
        Err(SigError::UnrecognizedClient(_))
    ));

    // post-sts-header-after: the token was added after signing. It verifies when no token is
    // expected, and is refused when one is, because the token is not a signed header.
    let after = vector("post-sts-header-after");
    assert_eq!(verify(&after.request(), &suite_expect(), None), Ok(()));
    let sts = suite_expect().with_session_token(STS_TOKEN);
    assert!(matches!(
        verify(&after.request(), &sts, None),
        Err(SigError::InvalidSignature(m)) if m.contains("not a signed header")
    ));
}

#[test]
fn refusals() {
    let p = vector("post-vanilla");
    let wrong_secret = AwsExpect {
        secret_access_key: "not-the-secret".into(),
        ..suite_expect()
    };
    assert!(matches!(
        verify(&p.request(), &wrong_secret, None),
        Err(SigError::InvalidSignature(m)) if m.starts_with(MISMATCH)
    ));
    let wrong_key = AwsExpect {
        access_key_id: "AKIDOTHER".into(),
        ..suite_expect()
    };
    assert!(matches!(
        verify(&p.request(), &wrong_key, None),
        Err(SigError::UnrecognizedClient(_))
    ));
    let wrong_region = AwsExpect {
        region: "eu-west-1".into(),
        ..suite_expect()
    };
    assert!(matches!(
        verify(&p.request(), &wrong_region, None),
        Err(SigError::InvalidSignature(_))
    ));
    // A tampered body changes the payload hash.
    let mut form = vector("post-x-www-form-urlencoded");
    form.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("x-amz-content-sha256"));
    form.headers
        .push(("X-Amz-Content-Sha256".into(), "0".repeat(64)));
    assert!(verify(&form.request(), &suite_expect(), None).is_err());
    // Signed in 2015: far outside the allowed skew today.
    assert!(matches!(
        verify(&p.request(), &suite_expect(), Some(SystemTime::now())),
        Err(SigError::InvalidSignature(m)) if m.starts_with("Signature expired")
    ));
    let unsigned = Parsed::new("POST / HTTP/1.1\nHost:example.amazonaws.com\n\n");
    assert_eq!(
        verify(&unsigned.request(), &suite_expect(), None),
        Err(SigError::Missing)
    );
}

/// A Bedrock request signed step by step here, with the model id's `:` encoded on the wire.
#[test]
fn hand_signed_bedrock_request() {
    let expect = AwsExpect::new("AKIDMOCK", "mock/secret+key", "us-west-2");
    let now = SystemTime::now();
    let date = amz_date(now);
    assert_eq!(date.len(), 16);
    let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let path = "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse";
    let mut headers = vec![
        ("host".to_owned(), "127.0.0.1:9999".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-amz-date".to_owned(), date.clone()),
    ];
    let req = SignedRequest {
        method: "POST",
        path,
        query: "",
        headers: &headers,
        body,
    };

    // The pieces, computed without the module's helpers where it is short to do so.
    let body_hash = hex(&Sha256::digest(body));
    let canonical = format!(
        "POST\n/model/anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse\n\n\
         content-type:application/json\nhost:127.0.0.1:9999\nx-amz-date:{date}\n\n\
         content-type;host;x-amz-date\n{body_hash}"
    );
    let signed = ["content-type", "host", "x-amz-date"];
    assert_eq!(canonical_request(&req, &signed, &body_hash), canonical);
    let scope = format!("{}/us-west-2/bedrock/aws4_request", &date[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mac = |key: &[u8], data: &str| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    let key = mac(
        &mac(
            &mac(&mac(b"AWS4mock/secret+key", &date[..8]), "us-west-2"),
            "bedrock",
        ),
        "aws4_request",
    );
    let sig = hex(&mac(&key, &to_sign));
    let header = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDMOCK/{scope}, SignedHeaders=content-type;host;x-amz-date, Signature={sig}"
    );
    assert_eq!(authorization(&req, &expect, &date, &signed), header);

    headers.push(("authorization".to_owned(), header));
    let req = SignedRequest {
        method: "POST",
        path,
        query: "",
        headers: &headers,
        body,
    };
    assert_eq!(verify(&req, &expect, Some(now)), Ok(()));
    // The same signature over the singly encoded path does not verify.
    let req = SignedRequest {
        path: "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/converse",
        ..req
    };
    assert!(verify(&req, &expect, Some(now)).is_err());
}

#[test]
fn dates() {
    let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    assert_eq!(amz_date(t), "20150830T123600Z");
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(t));
    assert_eq!(parse_amz_date("2015-08-30"), None);
}
