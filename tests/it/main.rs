//! Integration suite: the gateway in-process on port 0, driven over HTTP with a real client,
//! against mock upstreams on 127.0.0.1 that speak each provider's wire format.
#![allow(clippy::unwrap_used)]

mod harness;

mod access;
mod api;
mod clouds;
mod dialects;
mod engine;
mod faults;
mod observability;
mod plugin_cli;
mod plugin_platform;
mod plugin_v2;
mod plugins;
mod python_sdk;
mod redis_kv;
mod reload;
mod shutdown;
mod streaming;
