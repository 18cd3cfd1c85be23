//! Switchyard: an AI gateway.
//!
//! Clients speak the OpenAI HTTP API (Chat Completions or Responses) or Anthropic's Messages
//! API to Switchyard; Switchyard routes each request through
//! WebAssembly plugins and per-provider queues to OpenAI, Azure OpenAI, Anthropic, AWS
//! Bedrock, Google Vertex AI, Cohere, Groq, Mistral, Ollama or any OpenAI-compatible
//! server, with weighted keys, retries and fallbacks.
//!
//! The request's way is the module tree, each module calling only the ones below it:
//! `server` (listener, start-up) → `routes` (HTTP, dialects, the admin side) → `access`
//! (virtual keys) and `proxy` (the phases: resolve, admit, pre-hooks, upstream, post-hooks,
//! respond, finish) → `plugins` and `upstream` (queue,
//! keys, credentials, transport, framing) → `providers` (pure translation). `config`,
//! `schema`, `error` and `metrics` are shared by all; `dialects` (pure translation of the
//! other client dialects) is used by `proxy` to read a request and by `routes` to answer it;
//! `reload` swaps the serving gateway when the config file changes.

// GatewayError carries the whole OpenAI error (type, code, param, attempts) so every phase
// can answer with it; boxing it would cost an allocation on each error for no gain.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod config;
pub mod dialects;
pub mod error;
pub mod metrics;
pub mod plugin_cli;
pub mod plugins;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod schema;
pub mod server;
pub mod status_page;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use error::GatewayError;
pub use proxy::Gateway;
pub use routes::build_router;
pub use server::{serve, serve_file};
