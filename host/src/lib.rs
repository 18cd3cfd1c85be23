//! Switchyard: an AI gateway.
//!
//! Clients speak the OpenAI HTTP API to Switchyard; Switchyard routes each request through
//! WebAssembly plugins and per-provider queues to OpenAI, Azure OpenAI, Anthropic, Groq,
//! Mistral, Ollama or any OpenAI-compatible server, with weighted keys, retries and fallbacks.
//!
//! The request's way (see `proxy`): accept (`routes`) → resolve route → pre-hooks (`plugins`)
//! → queue and upstream (`engine`, `providers`) → post-hooks → respond → finish (`metrics`).

// GatewayError carries the whole OpenAI error (type, code, param, attempts) so every phase
// can answer with it; boxing it would cost an allocation on each error for no gain.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod plugins;
pub mod providers;
pub mod proxy;
pub mod routes;
pub mod schema;
pub mod server;

pub use config::Config;
pub use error::GatewayError;
pub use routes::build_router;
pub use server::{serve, AppState};
