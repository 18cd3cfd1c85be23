//! Integration suite: the gateway in-process on port 0, driven over HTTP with a real client,
//! against mock upstreams on 127.0.0.1 that speak each provider's wire format.
#![allow(clippy::unwrap_used)]

mod harness;

mod api;
mod clouds;
mod engine;
mod observability;
mod plugins;
mod python_sdk;
mod shutdown;
mod streaming;
