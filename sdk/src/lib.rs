//! Write Switchyard gateway plugins in Rust.
//!
//! A plugin is a WebAssembly component for the `plugin` world of `wit/0.1.0/plugin.wit`
//! (`switchyard:plugin@0.1.0`, this page) or of `wit/0.2.0/plugin.wit` (see [`v0_2`]). The gateway calls it around every request to an LLM provider:
//!
//! ```text
//! client -> pre_hook (configured order) -> provider -> post_hook (reverse order) -> client
//!                                                   -> on_chunk (every streamed chunk)
//! ```
//!
//! With this crate a plugin is a type implementing [`Plugin`] plus one [`export_plugin!`]
//! line. The typed helpers [`kv`], [`log`], [`metrics`] and [`clock`] wrap the host's imports.
//!
//! # Example
//!
//! A complete plugin that refuses requests for a model named in its config and counts what it
//! saw:
//!
//! ```
//! use serde::Deserialize;
//! use switchyard_sdk::metrics::Counter;
//! use switchyard_sdk::{config, export_plugin, info, Hooks, Plugin, PreAction, Rejection, Request};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     model: String,
//! }
//!
//! struct Deny {
//!     model: String,
//!     seen: Counter,
//! }
//!
//! impl Plugin for Deny {
//!     // Only `pre_hook` is implemented, so the gateway never calls the other two.
//!     const HOOKS: Hooks = Hooks::PRE;
//!
//!     // Called once per pooled instance with the entry's `config` object as JSON. A bad
//!     // config is refused with a message naming the field ("config.model: ...").
//!     fn init(config: &str) -> Result<Self, String> {
//!         let Config { model } = config::parse(config)?;
//!         let seen = Counter::declare("deny_seen_total", "Requests seen", &["model"])?;
//!         Ok(Deny { model, seen })
//!     }
//!
//!     fn pre_hook(&self, req: Request) -> Result<PreAction, String> {
//!         self.seen.inc(&[&req.model]);
//!         if req.model == self.model {
//!             info!("refusing {} for {}", req.model, req.client_key);
//!             let no = Rejection::new(403, "this model is not allowed").code("model_denied");
//!             return Ok(no.into());
//!         }
//!         Ok(PreAction::Continue)
//!     }
//! }
//!
//! export_plugin!(Deny);
//! # fn main() {
//! #     assert!(Deny::init(r#"{"modle": "x"}"#).is_err());
//! #     let p = Deny::init(r#"{"model": "gpt-4"}"#).unwrap();
//! #     let req = switchyard_sdk::testing::request("openai", "gpt-4", &[("user", "hi")]);
//! #     assert!(matches!(p.pre_hook(req), Ok(PreAction::Reject(_))));
//! # }
//! ```
//!
//! with a `Cargo.toml` like
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! switchyard-sdk = { path = "../../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! built with `cargo build --release --target wasm32-unknown-unknown` and
//! `linker = "wasm-component-ld"` for that target in `.cargo/config.toml`: the `.wasm` cargo
//! writes is already a component. Drop it into the gateway's `plugins.directory`.
//!
//! # State
//!
//! The gateway runs a pool of instances of each plugin, possibly on several threads at once,
//! and calls [`Plugin::init`] once in each with the same config. The value `init` returns
//! lives in its instance (wasm32 is single-threaded, so a `Cell`/`RefCell` inside it is fine)
//! and is what the hooks get as `&self`. State that must be shared by every instance, such as
//! a rate limit, belongs in [`kv`]; per-stream state of [`Plugin::on_chunk`] travels in its
//! `state` bytes because consecutive chunks may reach different instances.
//!
//! # Testing natively
//!
//! On targets other than wasm32 the helpers run against an in-process fake host (see
//! [`testing`]), so `cargo test --target x86_64-unknown-linux-gnu` can call `init` and the
//! hooks directly.

#![deny(unsafe_code)]
#![warn(missing_docs)]

// A component carries the world of every `generate!` linked into it, and the 0.1.0 and
// 0.2.0 worlds both export `init`: so a wasm32 build has exactly one of them, chosen by
// feature (`v0_1`, the default, or `v0_2` with default features off). Natively (unit tests)
// 0.1.0 is always there, and 0.2.0 with `v0_2`.
#[cfg(all(target_arch = "wasm32", feature = "v0_1", feature = "v0_2"))]
compile_error!(
    "switchyard-sdk: features `v0_1` and `v0_2` are exclusive on wasm32; a 0.2.0 plugin \
     depends on switchyard-sdk with `default-features = false, features = [\"v0_2\"]` and is \
     built in its own cargo invocation (feature unification)"
);
#[cfg(all(target_arch = "wasm32", not(feature = "v0_1"), not(feature = "v0_2")))]
compile_error!("switchyard-sdk: enable feature `v0_1` (the default) or `v0_2`");

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::switchyard_sdk::bindings",
        ownership: Borrowing { duplicate_if_necessary: true },
        additional_derives: [PartialEq],
    });
}

/// The host imports (log, clock, kv, metrics) of the world this build is for.
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
use bindings::switchyard::plugin as imports;
#[cfg(all(target_arch = "wasm32", not(feature = "v0_1")))]
use v0_2::bindings::switchyard::plugin as imports;

pub mod clock;
#[cfg(feature = "json")]
pub mod config;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod testing;
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
mod types;
#[cfg(feature = "v0_2")]
pub mod v0_2;

#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub use types::*;

#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
/// A Switchyard plugin. Implement it and export the type with [`export_plugin!`].
///
/// Every hook has a default that leaves the request alone, so a plugin implements only the
/// hooks it needs and lists them in [`Plugin::HOOKS`]: the gateway skips calls to hooks that
/// are not listed, which saves a call per request.
pub trait Plugin: Sized + 'static {
    /// The hooks this plugin implements, e.g. `Hooks::PRE | Hooks::POST`.
    const HOOKS: Hooks;

    /// Parse the config (the plugin entry's `config` object as JSON, `"{}"` when none is
    /// given), declare metrics, and build the instance's state. An `Err` is shown on the
    /// gateway's `/health` and the previous version of the plugin keeps serving; say which
    /// field is wrong.
    fn init(config: &str) -> Result<Self, String>;

    /// The hooks to advertise for this config. Defaults to [`Plugin::HOOKS`]; override it
    /// when the config turns hooks on or off.
    fn hooks(&self) -> Hooks {
        Self::HOOKS
    }

    /// Before the request is queued for its provider. An `Err` fails the request with a
    /// 500 naming the plugin.
    fn pre_hook(&self, req: Request) -> Result<PreAction, String> {
        let _ = req;
        Ok(PreAction::Continue)
    }

    /// After the provider answered or failed (not for streamed responses).
    fn post_hook(&self, info: RequestInfo, outcome: Outcome) -> Result<PostAction, String> {
        let _ = (info, outcome);
        Ok(PostAction::Keep)
    }

    /// For every chunk of a streamed response. `state` is what this plugin returned for the
    /// previous chunk of the same stream (empty at first).
    fn on_chunk(
        &self,
        info: RequestInfo,
        chunk: StreamChunk,
        state: Vec<u8>,
    ) -> Result<ChunkOutput, String> {
        let _ = (info, chunk);
        Ok(ChunkOutput::keep(state))
    }
}

/// Export `$plugin` (a type implementing [`Plugin`]) as the component's `plugin` world.
/// Use it once per crate, at the top level.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static __SWITCHYARD_INSTANCE: $crate::__private::Slot<$plugin> =
                    const { $crate::__private::Slot::new() };
            }

            #[allow(dead_code)]
            struct __SwitchyardExport;

            impl $crate::__private::Guest for __SwitchyardExport {
                fn init(
                    config_json: ::std::string::String,
                ) -> ::core::result::Result<$crate::Hooks, ::std::string::String> {
                    $crate::__private::init(&__SWITCHYARD_INSTANCE, &config_json)
                }
                fn pre_hook(
                    req: $crate::Request,
                ) -> ::core::result::Result<$crate::PreAction, ::std::string::String> {
                    $crate::__private::with(&__SWITCHYARD_INSTANCE, |p| {
                        <$plugin as $crate::Plugin>::pre_hook(p, req)
                    })
                }
                fn post_hook(
                    info: $crate::RequestInfo,
                    outcome: $crate::Outcome,
                ) -> ::core::result::Result<$crate::PostAction, ::std::string::String> {
                    $crate::__private::with(&__SWITCHYARD_INSTANCE, |p| {
                        <$plugin as $crate::Plugin>::post_hook(p, info, outcome)
                    })
                }
                fn on_chunk(
                    info: $crate::RequestInfo,
                    chunk: $crate::StreamChunk,
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<$crate::ChunkOutput, ::std::string::String> {
                    $crate::__private::with(&__SWITCHYARD_INSTANCE, |p| {
                        <$plugin as $crate::Plugin>::on_chunk(p, info, chunk, state)
                    })
                }
            }

            // The C ABI exports only make sense inside a component; natively (unit tests)
            // the plugin is reached through its trait methods, and this reference keeps
            // the compiler from calling it dead code.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_world!(__SwitchyardExport with_types_in $crate::bindings);
            #[cfg(not(target_arch = "wasm32"))]
            const _: fn(&str) -> ::core::result::Result<$plugin, ::std::string::String> =
                <$plugin as $crate::Plugin>::init;
        };
    };
}

#[doc(hidden)]
#[cfg(any(feature = "v0_1", not(target_arch = "wasm32")))]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::bindings::Guest;
    use crate::{Hooks, Plugin};

    /// The instance's plugin value, set by `init`.
    pub struct Slot<P>(RefCell<Option<P>>);

    impl<P> Slot<P> {
        #[allow(clippy::new_without_default)]
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
    }

    pub fn init<P: Plugin>(
        slot: &'static LocalKey<Slot<P>>,
        config: &str,
    ) -> Result<Hooks, String> {
        let p = P::init(config)?;
        let hooks = p.hooks();
        slot.with(|s| *s.0.borrow_mut() = Some(p));
        Ok(hooks)
    }

    pub fn with<P: Plugin, R>(
        slot: &'static LocalKey<Slot<P>>,
        f: impl FnOnce(&P) -> Result<R, String>,
    ) -> Result<R, String> {
        slot.with(|s| match &*s.0.borrow() {
            Some(p) => f(p),
            None => Err("plugin hook called before a successful init".into()),
        })
    }
}
