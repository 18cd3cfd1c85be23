//! The projects `switchyard plugin new` writes: a guard that refuses requests containing a
//! configured word, counts them in the key-value store and a metric, and logs refusals —
//! the same plugin in each language, ready to build with the commands in its README.

use std::path::{Path, PathBuf};

/// The WIT the projects build against, as this gateway ships it.
const WIT: &str = include_str!("../../../wit/0.1.0/plugin.wit");
/// The SDK beside the gateway's sources, for Rust projects (override with `--sdk`).
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(format!(
                "unknown language {other:?}; expected rust, python or js"
            )),
        }
    }
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?}: use lower-case letters, digits, '-' and '_', starting with a letter"
        ))
    }
}

pub fn write(
    name: &str,
    lang: Lang,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<String, String> {
    valid_name(name)?;
    let root = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if root.exists()
        && std::fs::read_dir(&root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!("{} exists and is not empty", root.display()));
    }
    let snake = name.replace('-', "_");
    let files: Vec<(String, String)> = match lang {
        Lang::Rust => {
            let sdk = match sdk {
                Some(p) => p.to_path_buf(),
                None => PathBuf::from(SDK_DIR),
            };
            let sdk = sdk.canonicalize().map_err(|e| {
                format!(
                    "the Rust SDK is not at {} ({e}); give its directory with --sdk",
                    sdk.display()
                )
            })?;
            vec![
                ("Cargo.toml".into(), rust_cargo(name, &sdk)),
                (".cargo/config.toml".into(), RUST_CARGO_CONFIG.into()),
                (
                    "src/lib.rs".into(),
                    RUST_LIB
                        .replace("{{name}}", name)
                        .replace("{{snake}}", &snake),
                ),
                (
                    "README.md".into(),
                    readme(
                        name,
                        lang,
                        &format!("target/wasm32-unknown-unknown/release/{snake}.wasm"),
                    ),
                ),
            ]
        }
        Lang::Python => vec![
            (
                "app.py".into(),
                PYTHON_APP
                    .replace("{{name}}", name)
                    .replace("{{snake}}", &snake),
            ),
            ("wit/plugin.wit".into(), WIT.into()),
            (
                "README.md".into(),
                readme(name, lang, &format!("{snake}.wasm")),
            ),
        ],
        Lang::Js => vec![
            (
                "app.js".into(),
                JS_APP
                    .replace("{{name}}", name)
                    .replace("{{snake}}", &snake),
            ),
            ("wit/plugin.wit".into(), WIT.into()),
            (
                "package.json".into(),
                JS_PACKAGE
                    .replace("{{name}}", name)
                    .replace("{{snake}}", &snake),
            ),
            (
                "README.md".into(),
                readme(name, lang, &format!("{snake}.wasm")),
            ),
        ],
    };
    for (rel, text) in &files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(format!(
        "wrote {} ({} files); next: see {}/README.md\n",
        root.display(),
        files.len(),
        root.display()
    ))
}

fn build_steps(lang: Lang, snake: &str) -> String {
    match lang {
        Lang::Rust => "```sh\n\
rustup target add wasm32-unknown-unknown   # once\n\
cargo build --release                       # .cargo/config.toml targets wasm32 and links a component\n\
```\n"
            .to_owned(),
        Lang::Python => format!(
            "```sh\n\
python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1   # once\n\
.venv/bin/componentize-py -d wit -w plugin componentize app -o {snake}.wasm\n\
```\n"
        ),
        Lang::Js => "```sh\n\
npm install        # once: @bytecodealliance/componentize-js into node_modules/\n\
npm run build\n\
```\n"
            .to_owned(),
    }
}

fn readme(name: &str, lang: Lang, out: &str) -> String {
    let snake = name.replace('-', "_");
    let limits = match lang {
        Lang::Rust => "",
        // Interpreted guests need more time and memory per call than the defaults.
        Lang::Python | Lang::Js => ", \"deadline_ms\": 200, \"memory_limit_mib\": 128",
    };
    format!(
        "# {name}\n\n\
A Switchyard plugin (WIT `switchyard:plugin@0.1.0`): refuses requests whose text contains one \
of `blocked_words` (HTTP 400, code `blocked_word`), counts requests in the key-value store and \
in the metric `switchyard_plugin_{snake}_requests_total`, and logs each refusal.\n\n\
## Build\n\n{}\n\
The component is `{out}`.\n\n\
## Try it without a gateway\n\n\
```sh\n\
echo '{{\"blocked_words\": [\"secret\"]}}' > config.json\n\
echo '{{\"model\": \"openai/gpt-4o\", \"messages\": [{{\"role\": \"user\", \"content\": \"a secret\"}}]}}' > request.json\n\
switchyard plugin inspect {out}\n\
switchyard plugin test {out} --config config.json --request request.json\n\
```\n\n\
## Load it\n\n\
Copy `{out}` into the gateway's `plugins.directory` as `{name}.wasm` and add an entry; a \
watching gateway loads it without a restart:\n\n\
```json\n\
{{\"name\": \"{name}\", \"file\": \"{name}.wasm\", \"config\": {{\"blocked_words\": [\"secret\"]}}{limits}}}\n\
```\n",
        build_steps(lang, &snake)
    )
}

fn rust_cargo(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-sdk = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}

# A standalone project, not part of an enclosing workspace.
[workspace]

# Components are loaded per pooled instance: small beats fast.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        sdk.display().to_string().replace('\\', "/")
    )
}

const RUST_CARGO_CONFIG: &str = r#"# `cargo build` writes the component itself: wasm-component-ld (shipped with rustc) links it.
[build]
target = "wasm32-unknown-unknown"

[target.wasm32-unknown-unknown]
linker = "wasm-component-ld"
"#;

const RUST_LIB: &str = r#"//! {{name}}: refuses requests that contain a blocked word.
//!
//! Config: `{"blocked_words": ["secret"]}`.

use serde::Deserialize;
use switchyard_sdk::metrics::Counter;
use switchyard_sdk::{config, export_plugin, kv, warn, Hooks, Plugin, PreAction, Rejection, Request};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    blocked_words: Vec<String>,
}

struct Guard {
    words: Vec<String>,
    requests: Counter,
}

impl Plugin for Guard {
    const HOOKS: Hooks = Hooks::PRE;

    fn init(config: &str) -> Result<Self, String> {
        let Config { blocked_words } = config::parse(config)?;
        let requests = Counter::declare(
            "{{snake}}_requests_total",
            "Requests seen, by result",
            &["result"],
        )?;
        Ok(Guard {
            words: blocked_words.iter().map(|w| w.to_lowercase()).collect(),
            requests,
        })
    }

    fn pre_hook(&self, req: Request) -> Result<PreAction, String> {
        let seen = kv::increment("requests", 1, None)?;
        for m in &req.messages {
            let text = m.text.to_lowercase();
            if let Some(w) = self.words.iter().find(|w| text.contains(w.as_str())) {
                self.requests.inc(&["blocked"]);
                warn!("request {} blocked ({seen} seen so far)", req.id);
                return Ok(Rejection::new(400, format!("the request contains the blocked word {w:?}"))
                    .code("blocked_word")
                    .into());
            }
        }
        self.requests.inc(&["allowed"]);
        Ok(PreAction::Continue)
    }
}

export_plugin!(Guard);
"#;

const PYTHON_APP: &str = r#""""{{name}}: refuses requests that contain a blocked word.

Config: {"blocked_words": ["secret"]}. Build: see README.md.
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as _WitWorld
from wit_world.imports import kv, log, metrics, types

_words = []
_metric = 0


class WitWorld(_WitWorld):
    def init(self, config_json: str) -> types.Hooks:
        global _words, _metric
        try:
            config = json.loads(config_json or "{}")
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        if not isinstance(config, dict):
            raise Err("config must be a JSON object")
        unknown = sorted(set(config) - {"blocked_words"})
        if unknown:
            raise Err(f"config.{unknown[0]}: unknown field, expected blocked_words")
        words = config.get("blocked_words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise Err("config.blocked_words: expected a list of strings")
        _words = [w.lower() for w in words if w]
        _metric = metrics.declare(
            "{{snake}}_requests_total", "Requests seen, by result",
            metrics.MetricKind.COUNTER, ["result"], None)
        return types.Hooks.PRE

    def pre_hook(self, req: types.Request) -> types.PreAction:
        seen = kv.increment("requests", 1, None)
        for m in req.messages:
            text = m.text.lower()
            for w in _words:
                if w in text:
                    metrics.record_value(_metric, ["blocked"], 1.0)
                    log.write(log.Level.WARN, f"request {req.id} blocked ({seen} seen so far)")
                    return types.PreAction_Reject(types.Rejection(
                        status=400, message=f"the request contains the blocked word {w!r}",
                        code="blocked_word", retry_after_secs=None, allow_fallbacks=False))
        metrics.record_value(_metric, ["allowed"], 1.0)
        return types.PreAction_Continue()

    def post_hook(self, req: types.RequestInfo, outcome: types.Outcome) -> types.PostAction:
        return types.PostAction_Keep()

    def on_chunk(self, req: types.RequestInfo, chunk: types.StreamChunk, state: bytes) -> types.ChunkOutput:
        return types.ChunkOutput(action=types.ChunkAction_Keep(), state=state)
"#;

const JS_APP: &str = r#"// {{name}}: refuses requests that contain a blocked word.
//
// Config: {"blocked_words": ["secret"]}. Build: npm install && npm run build.
//
// componentize-js maps the WIT to plain JavaScript: records are objects with camelCase
// fields, variants are {tag, val}, flags are objects of booleans, result<T, E> is a return
// value or a thrown error.

import { write as log } from "switchyard:plugin/log@0.1.0";
import { increment } from "switchyard:plugin/kv@0.1.0";
import { declare, recordValue } from "switchyard:plugin/metrics@0.1.0";

let words = [];
let metric = 0;

export function init(configJson) {
  let config;
  try {
    config = JSON.parse(configJson || "{}");
  } catch (e) {
    throw `config is not JSON: ${e}`;
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw "config must be a JSON object";
  }
  for (const k of Object.keys(config)) {
    if (k !== "blocked_words") throw `config.${k}: unknown field, expected blocked_words`;
  }
  const list = config.blocked_words ?? [];
  if (!Array.isArray(list) || !list.every((w) => typeof w === "string")) {
    throw "config.blocked_words: expected a list of strings";
  }
  words = list.filter((w) => w).map((w) => w.toLowerCase());
  metric = declare("{{snake}}_requests_total", "Requests seen, by result", "counter", ["result"], undefined);
  return { pre: true, post: false, chunk: false };
}

export function preHook(req) {
  const seen = increment("requests", 1n, undefined);
  for (const m of req.messages) {
    const text = m.text.toLowerCase();
    const w = words.find((w) => text.includes(w));
    if (w !== undefined) {
      recordValue(metric, ["blocked"], 1);
      log("warn", `request ${req.id} blocked (${seen} seen so far)`);
      return {
        tag: "reject",
        val: {
          status: 400,
          message: `the request contains the blocked word "${w}"`,
          code: "blocked_word",
          retryAfterSecs: undefined,
          allowFallbacks: false,
        },
      };
    }
  }
  recordValue(metric, ["allowed"], 1);
  return { tag: "continue" };
}

export function postHook(info, outcome) {
  return { tag: "keep" };
}

export function onChunk(info, chunk, state) {
  return { action: { tag: "keep" }, state };
}
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{{name}}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "componentize-js app.js --wit wit --world-name plugin -d http -d fetch-event -o {{snake}}.wasm"
  },
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0"
  }
}
"#;
