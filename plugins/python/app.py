"""word-guard: a Switchyard plugin written in Python (WIT world `switchyard:plugin/plugin`).

Rejects a request whose message text contains a blocked word, whole word and ignoring case:
HTTP 400, code "blocked_word", and a message naming the word. Counts requests in the
plugin's key-value store and in a metric, and logs each rejection.

Config (the plugin entry's `config` in the gateway's config.json):

    {"blocked_words": ["forbidden"], "tag": "py"}

`tag` (default "py") appears in the rejection message and as the `tag` label of the metric
`switchyard_plugin_word_guard_requests_total{plugin, tag, result="allowed"|"blocked"}`.
Unknown keys are a config error, shown on the gateway's /health.

Built by `cargo xtask` (xtask/src/python.rs) into plugins/target/python/word_guard.wasm,
by hand from the repository root:

    .venv/bin/componentize-py -d wit/0.1.0 -w plugin componentize app \
        -p plugins/python -o plugins/target/python/word_guard.wasm

componentize-py generates the `wit_world` bindings itself while building; for an editor
or a type checker, generate them outside the source tree (they are not committed):

    .venv/bin/componentize-py -d wit/0.1.0 -w plugin bindings plugins/target/python/bindings
"""

import json
import re

from componentize_py_types import Err
from wit_world import WitWorld as _WitWorld
from wit_world.imports import kv, log, metrics, types

# Per-instance state, set by `init` (the host calls it on every pooled instance).
_pattern = None  # re.Pattern matching any blocked word, or None when the list is empty
_tag = "py"
_requests_metric = 0


def _fail(message):
    raise Err(message)


class WitWorld(_WitWorld):
    def init(self, config_json: str) -> types.Hooks:
        global _pattern, _tag, _requests_metric
        try:
            config = json.loads(config_json or "{}")
        except ValueError as e:
            _fail(f"config is not JSON: {e}")
        if not isinstance(config, dict):
            _fail("config must be a JSON object")
        unknown = sorted(set(config) - {"blocked_words", "tag"})
        if unknown:
            _fail(f"unknown config key(s): {', '.join(unknown)} (expected blocked_words, tag)")
        words = config.get("blocked_words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            _fail("blocked_words must be a list of non-empty strings")
        tag = config.get("tag", "py")
        if not isinstance(tag, str):
            _fail("tag must be a string")
        _tag = tag
        words = [w.strip() for w in words]
        _pattern = (
            re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
            if words
            else None
        )
        _requests_metric = metrics.declare(
            "word_guard_requests_total",
            "Requests seen by word-guard, by result",
            metrics.MetricKind.COUNTER,
            ["tag", "result"],
            None,
        )
        return types.Hooks.PRE | types.Hooks.POST

    def pre_hook(self, req: types.Request) -> types.PreAction:
        total = _increment("requests")
        found = None
        if _pattern is not None:
            for m in req.messages:
                hit = _pattern.search(m.text)
                if hit:
                    found = hit.group(1)
                    break
        if found is None:
            metrics.record_value(_requests_metric, [_tag, "allowed"], 1.0)
            return types.PreAction_Continue()
        blocked = _increment("blocked")
        metrics.record_value(_requests_metric, [_tag, "blocked"], 1.0)
        log.write(
            log.Level.WARN,
            f"[{_tag}] request {req.id} blocked: contains {found!r} "
            f"({blocked} of {total} requests blocked so far)",
        )
        return types.PreAction_Reject(
            types.Rejection(
                status=400,
                message=f"[{_tag}] the request contains the blocked word {found!r}",
                code="blocked_word",
                retry_after_secs=None,
                allow_fallbacks=False,
            )
        )

    def post_hook(self, req: types.RequestInfo, outcome: types.Outcome) -> types.PostAction:
        # Observe only: log failed requests, leave every outcome as it is.
        if isinstance(outcome, types.Outcome_Error):
            e = outcome.value
            log.write(log.Level.INFO, f"[{_tag}] request {req.id} failed: {e.status} {e.message}")
        return types.PostAction_Keep()

    def on_chunk(
        self, req: types.RequestInfo, chunk: types.StreamChunk, state: bytes
    ) -> types.ChunkOutput:
        # Not called: `init` does not return Hooks.CHUNK. The world requires the export.
        return types.ChunkOutput(action=types.ChunkAction_Keep(), state=state)


def _increment(key):
    """Add one to the counter at `key` in the plugin's store; 0 if the store refuses."""
    try:
        return kv.increment(key, 1, None)
    except Err as e:
        log.write(log.Level.ERROR, f"kv increment {key}: {e.value}")
        return 0
