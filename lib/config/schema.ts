/**
 * The schema of `repoxy.json`: one piece of entries per concern, spread into
 * one strict object. A new section (storage, modules) adds its own entries
 * file and one spread line here; `repoxy.schema.json` is generated from this
 * object (`deno task schema`), so editors see exactly what the loader takes.
 * @module
 */
import * as v from "../deps/valibot.ts";
import { isValidHostname } from "../protocol/names.ts";
import {
  bool,
  duration,
  httpUrl,
  nonEmpty,
  objectOnly,
  size,
  str,
  strict,
  typeName,
  urlForMessage,
} from "./fields.ts";
import { HARDENING_ENTRIES } from "./hardening.ts";
import { STORAGE_ENTRIES } from "./storage_config.ts";
import { VIA_ENTRIES } from "./via.ts";

/** Parses `host:port` (IPv6 in brackets: `[::1]:8080`); undefined when it is not one. */
export function listenAddress(value: string): { hostname: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) return undefined;
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** The message for a listen address that is not one. */
export function listenMessage(value: string): string {
  return `must be HOST:PORT (e.g. "127.0.0.1:8080" or "[::1]:8080"), got "${value}"`;
}

const LISTEN = v.pipe(
  str(),
  v.regex(/:\d{1,5}$/, (i) => listenMessage(String(i.input))),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const addr = listenAddress(dataset.value);
    if (addr) return addr;
    addIssue({ message: listenMessage(dataset.value) });
    return NEVER;
  }),
);

const TLS = strict({
  cert: v.optional(str()),
  key: v.optional(str()),
  http2: v.optional(bool()),
});

const HOSTNAME = v.pipe(
  v.string(),
  v.check(
    (h) => h === h.toLowerCase() && isValidHostname(h),
    "is not a valid registry hostname (lowercase, punycode for IDNs, optional :port)",
  ),
);

const UPSTREAM = strict({
  url: v.optional(httpUrl()),
  token: v.optional(str(`a string (env:NAME, file:PATH or the token)`)),
  trustedKeys: v.optional(
    v.array(
      str("an armored key, env:NAME or file:PATH"),
      "must be an array of armored keys or file: paths",
    ),
  ),
});

const PUBLIC_URL = v.pipe(
  str(),
  v.check((s) => {
    try {
      const u = new URL(s);
      return u.protocol === "https:" || u.protocol === "http:";
    } catch {
      return false;
    }
  }, (i) => `must be an http(s) URL, got "${urlForMessage(String(i.input))}"`),
);

/** Keys of the server itself: where it listens, what it caches, which upstreams. */
export const CORE_ENTRIES = {
  /** Lets editors find `repoxy.schema.json`; ignored by the loader. */
  $schema: v.optional(v.string()),
  listen: v.optional(LISTEN),
  tls: v.optional(TLS),
  cacheDir: v.optional(nonEmpty()),
  upstreams: v.optional(
    objectOnly(
      v.record(
        HOSTNAME,
        UPSTREAM,
        (i) => `must be an object keyed by hostname, got ${typeName(i.input)}`,
      ),
      "an object keyed by hostname",
    ),
  ),
  defaultUpstream: v.optional(str()),
  metadataTtl: v.optional(duration()),
  upstreamTimeout: v.optional(duration(100, "100ms")),
  offline: v.optional(bool()),
  publicUrl: v.optional(PUBLIC_URL),
  logFormat: v.optional(
    v.picklist(["text", "json"], (i) => `must be "text" or "json", got ${JSON.stringify(i.input)}`),
  ),
  maxCacheSize: v.optional(size()),
};

/** The whole config file: every key optional, unknown keys are errors. */
export const CONFIG_SCHEMA = strict({
  ...CORE_ENTRIES,
  ...HARDENING_ENTRIES,
  ...VIA_ENTRIES,
  ...STORAGE_ENTRIES,
}, "known keys");

/** The config file after the schema: values typed, durations in ms, sizes in bytes. */
export type ConfigFile = v.InferOutput<typeof CONFIG_SCHEMA>;
