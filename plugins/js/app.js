// tier-router: a Switchyard plugin written in JavaScript (WIT world `switchyard:plugin/plugin`),
// built with componentize-js (`cargo xtask js-plugin` -> plugins/target/js/tier_router.wasm).
//
// Sends a request to the model configured for its tier: the tier is read from the request
// body's `metadata` (key `tier`, or the configured `key`) or, failing that, from the header
// `x-tier` (or the configured `header`). Requests without a known tier go on unchanged. Each
// routing is counted in `switchyard_plugin_tier_router_routed_total{plugin, tier}` and in
// the key-value store, and logged.
//
// Config: {"routes": {"premium": "gpt-4o", "free": "gpt-4o-mini"}, "key": "tier", "header": "x-tier"}
//
// componentize-js maps the WIT to plain JavaScript: records are objects with camelCase
// fields, variants are {tag, val}, flags are objects of booleans, tuples are arrays, and
// `result<T, string>` is a return value or a thrown string.

import { write as log } from "switchyard:plugin/log@0.1.0";
import { increment } from "switchyard:plugin/kv@0.1.0";
import { declare, recordValue } from "switchyard:plugin/metrics@0.1.0";

let routes = {};
let key = "tier";
let header = "x-tier";
let routed = 0;

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
    if (!["routes", "key", "header"].includes(k)) {
      throw `config.${k}: unknown field, expected routes, key or header`;
    }
  }
  routes = config.routes ?? {};
  if (typeof routes !== "object" || Array.isArray(routes)) {
    throw "config.routes: expected an object of tier -> model";
  }
  for (const [tier, model] of Object.entries(routes)) {
    if (typeof model !== "string" || model === "") {
      throw `config.routes.${tier}: expected a model name`;
    }
  }
  key = config.key ?? "tier";
  header = (config.header ?? "x-tier").toLowerCase();
  routed = declare("tier_router_routed_total", "Requests routed by tier", "counter", ["tier"], undefined);
  return { pre: true, post: false, chunk: false };
}

export function preHook(req) {
  const fromMetadata = req.metadata.find(([k]) => k === key);
  const fromHeader = req.headers.find((h) => h.name === header);
  const tier = fromMetadata ? fromMetadata[1] : fromHeader ? fromHeader.value : undefined;
  const model = tier === undefined ? undefined : routes[tier];
  if (model === undefined || model === req.model) {
    return { tag: "continue" };
  }
  const n = increment(`routed:${tier}`, 1n, undefined);
  recordValue(routed, [tier], 1);
  log("info", `request ${req.id}: tier ${tier} -> ${model} (${n} so far)`);
  return { tag: "continue-with", val: { ...req, model } };
}

export function postHook(info, outcome) {
  return { tag: "keep" };
}

export function onChunk(info, chunk, state) {
  return { action: { tag: "keep" }, state };
}
