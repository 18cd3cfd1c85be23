//! Plugins for `switchyard:plugin@0.2.0` (`wit/0.2.0/plugin.wit`).
//!
//! The same model as the crate root's 0.1.0 API (a trait of default hooks and one export
//! macro, [`export_plugin_v0_2!`](crate::export_plugin_v0_2)), with what 0.2.0 adds:
//!
//! - [`Plugin::READS`]: the request parts the plugin reads; the gateway builds only these
//!   (`body-json` costs a JSON serialisation per request, so leave it out unless you need it);
//! - [`PreOutput`]: the pre-hook's decision plus header edits for the upstream request and
//!   headers for the client's response; [`PostOutput`] likewise for the post-hook;
//! - [`Outcome::StreamEnded`]: the post-hook hears once how each streamed response ended.
//!
//! The helpers [`kv`](crate::kv), [`log`](crate::log), [`metrics`](crate::metrics) and
//! [`clock`](crate::clock) are the crate root's. On wasm32 a 0.2.0 plugin depends on the crate
//! with `default-features = false, features = ["v0_2", "json"]`.
//!
//! ```
//! use switchyard_sdk::v0_2::{Hooks, Outcome, Plugin, PostOutput, PreOutput, Request, RequestInfo, RequestParts};
//!
//! struct Tag;
//!
//! impl Plugin for Tag {
//!     const HOOKS: Hooks = Hooks::PRE.union(Hooks::POST);
//!     const READS: RequestParts = RequestParts::empty();
//!
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Tag)
//!     }
//!
//!     fn pre_hook(&self, req: Request) -> Result<PreOutput, String> {
//!         Ok(PreOutput::cont()
//!             .set_upstream_header("x-team", "search")
//!             .response_header("x-tagged-model", &req.model))
//!     }
//!
//!     fn post_hook(&self, _info: RequestInfo, outcome: Outcome) -> Result<PostOutput, String> {
//!         if let Outcome::StreamEnded(end) = &outcome {
//!             switchyard_sdk::info!("stream ended: {:?}", end.end);
//!         }
//!         Ok(PostOutput::keep())
//!     }
//! }
//!
//! switchyard_sdk::export_plugin_v0_2!(Tag);
//! # fn main() {}
//! ```

#[doc(hidden)]
pub use switchyard_sdk_wit_v0_2::bindings;

pub use bindings::switchyard::plugin::types::{
    ChunkAction, ChunkChoice, ChunkOutput, Error, ErrorKind, Header, HeaderEdit, Hooks, Message,
    Outcome, Params, PluginInfo, PostAction, PostOutput, PreAction, PreOutput, Rejection, Request,
    RequestInfo, RequestKind, RequestParts, Response, StreamChunk, StreamEnd, StreamEnded, Usage,
};

/// A Switchyard 0.2.0 plugin. Implement it and export the type with
/// [`export_plugin_v0_2!`](crate::export_plugin_v0_2).
pub trait Plugin: Sized + 'static {
    /// The hooks this plugin implements, e.g. `Hooks::PRE | Hooks::POST`.
    const HOOKS: Hooks;
    /// The request parts the pre-hook reads; the others arrive empty.
    const READS: RequestParts;

    /// Parse the config and build the instance's state (see the crate root's
    /// [`Plugin::init`](crate::Plugin::init)).
    fn init(config: &str) -> Result<Self, String>;

    /// The hooks to advertise for this config. Defaults to [`Plugin::HOOKS`].
    fn hooks(&self) -> Hooks {
        Self::HOOKS
    }

    /// The request parts to ask for with this config. Defaults to [`Plugin::READS`].
    fn reads(&self) -> RequestParts {
        Self::READS
    }

    /// Before the request is queued for its provider.
    fn pre_hook(&self, req: Request) -> Result<PreOutput, String> {
        let _ = req;
        Ok(PreOutput::cont())
    }

    /// After the provider answered or failed, and once at the end of every stream
    /// ([`Outcome::StreamEnded`]).
    fn post_hook(&self, info: RequestInfo, outcome: Outcome) -> Result<PostOutput, String> {
        let _ = (info, outcome);
        Ok(PostOutput::keep())
    }

    /// For every chunk of a streamed response.
    fn on_chunk(
        &self,
        info: RequestInfo,
        chunk: StreamChunk,
        state: Vec<u8>,
    ) -> Result<ChunkOutput, String> {
        let _ = (info, chunk);
        Ok(ChunkOutput {
            action: ChunkAction::Keep,
            state,
        })
    }
}

/// Builders for hook arguments in native unit tests (0.2.0 types).
pub mod testing {
    use super::{Message, Params, Request, RequestInfo, RequestKind, StreamEnd, StreamEnded};

    /// A chat request to `provider`/`model` with `(role, text)` messages and every part
    /// filled in (what a plugin reading everything would get).
    pub fn request(provider: &str, model: &str, messages: &[(&str, &str)]) -> Request {
        Request {
            id: "req-test".into(),
            kind: RequestKind::Chat,
            provider: provider.into(),
            model: model.into(),
            messages: messages
                .iter()
                .map(|(r, t)| Message {
                    role: r.to_string(),
                    text: t.to_string(),
                })
                .collect(),
            params: Params {
                max_tokens: None,
                temperature: None,
                top_p: None,
                n: None,
                stream: false,
                user: None,
            },
            client_key: "anonymous".into(),
            metadata: Vec::new(),
            headers: Vec::new(),
            attempt: 0,
            body_json: String::new(),
        }
    }

    /// The request-info of `req`.
    pub fn info(req: &Request, received_at_ms: u64) -> RequestInfo {
        RequestInfo {
            id: req.id.clone(),
            kind: req.kind,
            provider: req.provider.clone(),
            model: req.model.clone(),
            client_key: req.client_key.clone(),
            attempt: req.attempt,
            received_at_ms,
        }
    }

    /// A stream's end on `provider`/`model`.
    pub fn stream_ended(provider: &str, model: &str, end: StreamEnd, chunks: u32) -> StreamEnded {
        StreamEnded {
            end,
            status: 200,
            provider: provider.into(),
            model: model.into(),
            usage: None,
            chunks,
        }
    }
}

/// Export `$plugin` (a type implementing [`v0_2::Plugin`](crate::v0_2::Plugin)) as the
/// component's 0.2.0 `plugin` world. Use it once per crate, at the top level.
#[macro_export]
macro_rules! export_plugin_v0_2 {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static __SWITCHYARD_INSTANCE: ::std::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(::core::option::Option::None) };
            }

            fn __with<R>(
                f: impl FnOnce(&$plugin) -> ::core::result::Result<R, ::std::string::String>,
            ) -> ::core::result::Result<R, ::std::string::String> {
                __SWITCHYARD_INSTANCE.with(|s| match &*s.borrow() {
                    ::core::option::Option::Some(p) => f(p),
                    ::core::option::Option::None => {
                        ::core::result::Result::Err("plugin hook called before a successful init".into())
                    }
                })
            }

            #[allow(dead_code)]
            struct __SwitchyardExport;

            impl $crate::v0_2::bindings::Guest for __SwitchyardExport {
                fn init(
                    config_json: ::std::string::String,
                ) -> ::core::result::Result<$crate::v0_2::PluginInfo, ::std::string::String> {
                    let p = <$plugin as $crate::v0_2::Plugin>::init(&config_json)?;
                    let info = $crate::v0_2::PluginInfo {
                        hooks: <$plugin as $crate::v0_2::Plugin>::hooks(&p),
                        reads: <$plugin as $crate::v0_2::Plugin>::reads(&p),
                    };
                    __SWITCHYARD_INSTANCE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(p));
                    ::core::result::Result::Ok(info)
                }
                fn pre_hook(
                    req: $crate::v0_2::Request,
                ) -> ::core::result::Result<$crate::v0_2::PreOutput, ::std::string::String> {
                    __with(|p| <$plugin as $crate::v0_2::Plugin>::pre_hook(p, req))
                }
                fn post_hook(
                    info: $crate::v0_2::RequestInfo,
                    outcome: $crate::v0_2::Outcome,
                ) -> ::core::result::Result<$crate::v0_2::PostOutput, ::std::string::String> {
                    __with(|p| <$plugin as $crate::v0_2::Plugin>::post_hook(p, info, outcome))
                }
                fn on_chunk(
                    info: $crate::v0_2::RequestInfo,
                    chunk: $crate::v0_2::StreamChunk,
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<$crate::v0_2::ChunkOutput, ::std::string::String> {
                    __with(|p| <$plugin as $crate::v0_2::Plugin>::on_chunk(p, info, chunk, state))
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::v0_2::bindings::__export_world_v0_2!(__SwitchyardExport with_types_in $crate::v0_2::bindings);
            #[cfg(not(target_arch = "wasm32"))]
            const _: fn(&str) -> ::core::result::Result<$plugin, ::std::string::String> =
                <$plugin as $crate::v0_2::Plugin>::init;
        };
    };
}
