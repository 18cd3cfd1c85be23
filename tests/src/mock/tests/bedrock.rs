//! Bedrock: Converse, ConverseStream decoded frame by frame, embeddings, errors, SigV4.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::{json, post};
use crate::mock::{Behavior, MockUpstream};
use crate::sigv4::{self, AwsExpect, SignedRequest};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20241022-v2%3A0";

/// One decoded event-stream message: its string headers and payload, CRCs checked.
#[derive(Debug)]
pub(super) struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Decode messages until the bytes end; `Err` at the first bad CRC, with what came before.
pub(super) fn decode(mut bytes: &[u8]) -> Result<Vec<Message>, (Vec<Message>, String)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
        let total = be(&bytes[0..4]) as usize;
        let headers_len = be(&bytes[4..8]) as usize;
        if crc32fast::hash(&bytes[..8]) != be(&bytes[8..12]) {
            return Err((out, "prelude CRC".into()));
        }
        let msg = &bytes[..total];
        if crc32fast::hash(&msg[..total - 4]) != be(&msg[total - 4..]) {
            return Err((out, "message CRC".into()));
        }
        let mut h = &msg[12..12 + headers_len];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8(h[1..1 + n].to_vec()).unwrap();
            assert_eq!(h[1 + n], 7, "string header");
            let len = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = String::from_utf8(h[4 + n..4 + n + len].to_vec()).unwrap();
            headers.push((name, value));
            h = &h[4 + n + len..];
        }
        out.push(Message {
            headers,
            payload: msg[12 + headers_len..total - 4].to_vec(),
        });
        bytes = &bytes[total..];
    }
    Ok(out)
}

fn converse_body(text: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.5},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "w",
            "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"auto": {}}}
    })
}

#[tokio::test]
async fn converse_plain_and_tool_call() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/model/{MODEL}/converse", mock.url());
    let (status, headers, body) = post(&url, &converse_body("echo:hello bedrock"), &[]).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-amzn-requestid"));
    let v = json(&body);
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "hello bedrock"
    );
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(
        mock.received()[0].model.as_deref(),
        Some("anthropic.claude-3-5-sonnet-20241022-v2:0")
    );

    let (_, _, body) = post(
        &url,
        &converse_body("tool:get_weather {\"city\":\"Lima\"}"),
        &[],
    )
    .await;
    let v = json(&body);
    assert_eq!(v["stopReason"], "tool_use");
    assert_eq!(
        v["output"]["message"]["content"][1]["toolUse"]["input"]["city"],
        "Lima"
    );

    // An ARN as model id: its `/` arrives as `%2F`.
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-haiku-20241022-v1%3A0";
    let (status, _, _) = post(
        &format!("{}/model/{arn}/converse", mock.url()),
        &converse_body("hi"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        mock.received()[2].model.as_deref(),
        Some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0")
    );
}

#[tokio::test]
async fn converse_stream_frames() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/model/{MODEL}/converse-stream", mock.url());
    let (status, headers, body) = post(&url, &converse_body("echo:one two three"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let messages = decode(&body).unwrap();
    let kinds: Vec<&str> = messages.iter().map(|m| m.header(":event-type")).collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert!(messages
        .iter()
        .all(|m| m.header(":message-type") == "event"
            && m.header(":content-type") == "application/json"));
    let text: String = messages
        .iter()
        .filter_map(|m| m.json()["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "one two three");
    assert_eq!(messages[6].json()["usage"]["outputTokens"], 3);

    // A throttling exception after the first delta.
    mock.push_behavior(Behavior::StreamError {
        after_chunks: 2,
        kind: None,
    });
    let (status, _, body) = post(&url, &converse_body("echo:one two three"), &[]).await;
    assert_eq!(status, 200);
    let messages = decode(&body).unwrap();
    assert_eq!(messages.len(), 3);
    let last = &messages[2];
    assert_eq!(last.header(":message-type"), "exception");
    assert_eq!(last.header(":exception-type"), "throttlingException");
    assert!(last.json()["message"].is_string());

    // A frame whose CRC is wrong.
    mock.push_behavior(Behavior::CorruptFrame { after_chunks: 1 });
    let (_, _, body) = post(&url, &converse_body("echo:one two three"), &[]).await;
    let (good, why) = decode(&body).err().unwrap();
    assert_eq!((good.len(), why.as_str()), (1, "message CRC"));
}

#[tokio::test]
async fn embeddings_and_errors() {
    let mock = MockUpstream::start().await;
    let url = |m: &str| format!("{}/model/{m}/invoke", mock.url());
    let (status, _, body) = post(
        &url("amazon.titan-embed-text-v2%3A0"),
        &json!({"inputText": "hello", "dimensions": 256, "normalize": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(v["inputTextTokenCount"], 1);
    let (_, _, body) = post(
        &url("cohere.embed-english-v3"),
        &json!({"texts": ["a", "b"], "input_type": "search_document"}),
        &[],
    )
    .await;
    assert_eq!(json(&body)["response_type"], "embeddings_floats");

    mock.push_behavior(Behavior::Status {
        status: 429,
        body: None,
        retry_after: None,
    });
    let (status, headers, body) = post(
        &url("amazon.titan-embed-text-v1"),
        &json!({"inputText": "x"}),
        &[],
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        headers["x-amzn-errortype"],
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    );
    assert!(json(&body)["message"].is_string());

    mock.push_behavior(Behavior::Error {
        status: 429,
        kind: "ModelNotReadyException".into(),
    });
    let (_, headers, _) = post(
        &url("amazon.titan-embed-text-v1"),
        &json!({"inputText": "x"}),
        &[],
    )
    .await;
    assert!(headers["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ModelNotReadyException:"));

    let (status, headers, _) = post(
        &format!("{}/model/{MODEL}/converse", mock.url()),
        &json!({"messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(headers["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ValidationException:"));
}

/// Sign like a client would and send; the mock recomputes the signature.
async fn signed_post(
    mock: &MockUpstream,
    keys: &AwsExpect,
    body: &Value,
    tamper: impl Fn(&mut Vec<(String, String)>),
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let path = format!("/model/{MODEL}/converse");
    let bytes = body.to_string().into_bytes();
    let date = sigv4::amz_date(SystemTime::now());
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("host".to_owned(), mock.addr().to_string()),
        ("x-amz-date".to_owned(), date.clone()),
    ];
    let mut signed = vec!["content-type", "host", "x-amz-date"];
    if let Some(token) = &keys.session_token {
        headers.push(("x-amz-security-token".to_owned(), token.clone()));
        signed.push("x-amz-security-token");
    }
    let req = SignedRequest {
        method: "POST",
        path: &path,
        query: "",
        headers: &headers,
        body: &bytes,
    };
    let auth = sigv4::authorization(&req, keys, &date, &signed);
    headers.push(("authorization".to_owned(), auth));
    tamper(&mut headers);
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", mock.url()))
        .body(bytes);
    for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn sigv4_is_checked() {
    let keys = AwsExpect::new("AKIDMOCK", "secret/key", "us-east-1").with_session_token("tok");
    let mock = MockUpstream::start().await.with_aws(keys.clone());
    let body = converse_body("echo:signed");
    let (status, _, out) = signed_post(&mock, &keys, &body, |_| {}).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    assert_eq!(mock.sigv4_failures(), 0);

    // A wrong secret: the signature does not match.
    let wrong = AwsExpect {
        secret_access_key: "other".into(),
        ..keys.clone()
    };
    let (status, headers, out) = signed_post(&mock, &wrong, &body, |_| {}).await;
    assert_eq!(status, 403);
    assert!(headers["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("InvalidSignatureException"));
    assert!(json(&out)["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));

    // An unknown key id.
    let stranger = AwsExpect {
        access_key_id: "AKIDOTHER".into(),
        ..keys.clone()
    };
    let (status, headers, _) = signed_post(&mock, &stranger, &body, |_| {}).await;
    assert_eq!(status, 403);
    assert!(headers["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("UnrecognizedClientException"));

    // A header changed after signing.
    let (status, _, _) = signed_post(&mock, &keys, &body, |h| {
        h.retain(|(k, _)| k != "content-type");
        h.push(("content-type".into(), "text/plain".into()));
    })
    .await;
    assert_eq!(status, 403);
    assert_eq!(mock.sigv4_failures(), 3);
    let refused = mock.received();
    assert!(refused[1]
        .auth_error
        .as_deref()
        .unwrap()
        .starts_with("InvalidSignatureException"));
    assert!(refused[0].auth_error.is_none());
}
