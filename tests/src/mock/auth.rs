//! The credentials a path demands, checked before any behavior is applied: SigV4 on Bedrock
//! paths (when the mock was given AWS keys), a Google access token on Vertex AI paths (when
//! linked to a token server), an API key's presence on Cohere paths. A refused request does
//! not use up a queued behavior: the retry that follows a renewal gets it.

use std::time::SystemTime;

use crate::sigv4::{self, AwsExpect, SignedRequest};
use crate::token_server::TokenState;
use crate::wire::bedrock::AwsError;
use crate::wire::{cohere, vertex, Api, Family};

use super::answer::Answer;

/// Which check refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    SigV4,
    Bearer,
    ApiKey,
}

pub(super) struct Refusal {
    pub check: Check,
    pub reason: String,
    pub answer: Answer,
}

/// What the mock was told to demand.
pub(super) struct Demands<'a> {
    pub aws: Option<&'a AwsExpect>,
    pub tokens: Option<&'a TokenState>,
}

pub(super) fn check(api: Api, req: &SignedRequest<'_>, demands: &Demands<'_>) -> Option<Refusal> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if api.family() == Family::Bedrock {
        let expect = demands.aws?;
        let e = sigv4::verify(req, expect, Some(SystemTime::now())).err()?;
        let (status, kind, message) = e.reply();
        let aws = AwsError::new(status, kind, &message);
        return Some(Refusal {
            check: Check::SigV4,
            reason: format!("{kind}: {message}"),
            answer: Answer::Json {
                status,
                body: aws.body().to_string(),
                headers: vec![("x-amzn-errortype", aws.error_type_header())],
            },
        });
    }
    if api.is_vertex() {
        let tokens = demands.tokens?;
        let token = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        if token.is_some_and(|t| tokens.is_valid(t)) {
            return None;
        }
        return Some(Refusal {
            check: Check::Bearer,
            reason: match token {
                Some(t) => format!("bearer token {t} is unknown, expired or revoked"),
                None => "no bearer token".to_owned(),
            },
            answer: Answer::Json {
                status: 401,
                body: vertex::error(401).to_string(),
                headers: vec![(
                    "www-authenticate",
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""
                        .to_owned(),
                )],
            },
        });
    }
    if api.family() == Family::Cohere {
        let key = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        if key.is_some_and(|k| !k.trim().is_empty()) {
            return None;
        }
        let mut body = cohere::error(401);
        body["message"] = "no api key supplied".into();
        return Some(Refusal {
            check: Check::ApiKey,
            reason: "no api key".to_owned(),
            answer: Answer::Json {
                status: 401,
                body: body.to_string(),
                headers: Vec::new(),
            },
        });
    }
    None
}
