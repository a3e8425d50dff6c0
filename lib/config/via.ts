/**
 * `via`: an edge Repoxy chained to a central one.
 *
 * One key instead of a URL per registry: `"via": "https://central.corp:8443/"`
 * (or `{ "url": ..., "token": "env:REPOXY_CENTRAL_TOKEN" }`) makes every
 * upstream without its own `url` — the configured ones, or the two public
 * registries when `upstreams` is absent — reached at
 * `{via}/{hostname}`, the central's per-host discovery document
 * (`/{host}/.well-known/terraform.json`). The edge then speaks the registry
 * protocol to the central end to end: the documents, the publisher's keys,
 * SHA256SUMS and its signature arrive unchanged, so the edge verifies them
 * against the original registry's keys exactly as it would talking to the
 * registry itself, and stores everything under the original hostname.
 *
 * The token is one the central's `auth` accepts; it goes only to the
 * central's origin (the upstream client's rule for any registry token). The
 * central's origin is a configured upstream origin, so the egress policy
 * lets it through even on a private address, while every other URL the
 * central names (a redirect to a bucket, say) is vetted as usual.
 * @module
 */
import * as v from "../deps/valibot.ts";
import { httpUrl, pickOption, str, strict, typeName } from "./fields.ts";

/** The parsed `via` key. */
export interface ViaConfig {
  /** The central's base URL, ending in `/`. */
  url: string;
  /** Bearer token the central accepts (resolved from `env:`/`file:`). */
  token?: string;
}

/** The fields of an upstream that `via` fills in. */
export interface ViaUpstream {
  hostname: string;
  url: string;
  token?: string;
  /** The central this upstream is reached through (its `via.url`). */
  via?: string;
}

const VIA_URL = httpUrl();
const VIA_OBJECT = strict({
  url: httpUrl(),
  token: v.optional(str(`a string (env:NAME, file:PATH or the token)`)),
});

// A string is the URL, an object the long form; anything else is neither.
const VIA = pickOption(
  v.union(
    [VIA_URL, VIA_OBJECT],
    (i) =>
      `must be the central Repoxy's URL or { "url": ..., "token": ... }, got ${typeName(i.input)}`,
  ),
  (x) =>
    typeof x === "string"
      ? VIA_URL
      : typeof x === "object" && x !== null && !Array.isArray(x)
      ? VIA_OBJECT
      : undefined,
);

/** The config key this file owns, spread into the whole config's schema. */
export const VIA_ENTRIES = { via: v.optional(VIA) };

type ViaInput = v.InferOutput<typeof VIA>;

/**
 * `via` with its token read (`env:`/`file:` as for upstream tokens); problems
 * go to `problem` by key path. Undefined when there is no `via`, or after a
 * problem.
 */
export async function resolveVia(
  raw: ViaInput | undefined,
  secret: (value: string, key: string) => Promise<string | undefined>,
  problem: (message: string) => void,
): Promise<ViaConfig | undefined> {
  if (raw === undefined) return undefined;
  const { url, token } = typeof raw === "string" ? { url: raw, token: undefined } : raw;
  const href = new URL(url).href;
  const out: ViaConfig = { url: href.endsWith("/") ? href : href + "/" };
  if (token === undefined) return out;
  const t = await secret(token, "via.token");
  if (t === undefined) return undefined;
  if (!/^[\x21-\x7e]+$/.test(t)) {
    problem(`"via.token" must be printable ASCII without spaces`);
    return undefined;
  }
  out.token = t;
  return out;
}

/**
 * Points every upstream without its own `url` at the central: url
 * `{via}/{hostname}`, token `via.token`. An upstream with its own `url` keeps
 * it (a registry the central does not serve). An upstream token without a
 * `url` is refused: the edge never talks to that registry, so the token
 * would go to the central, which holds the registry's own token itself.
 * A central naming itself (`publicUrl` equal to `via`) is refused: every
 * upstream request would come back to this instance and wait for itself.
 * These rules span keys, so they are checked here, after the schema.
 *
 * @param explicit hostnames whose `url` the config set
 * @param explicitToken hostnames whose `token` the config set
 * @param publicUrl this instance's `publicUrl` (ending in `/`), if set
 */
export function applyVia(
  via: ViaConfig,
  upstreams: Iterable<ViaUpstream>,
  explicit: ReadonlySet<string>,
  explicitToken: ReadonlySet<string>,
  publicUrl: string | undefined,
  problem: (message: string) => void,
): void {
  if (publicUrl === via.url) {
    problem(`"via" is this instance's own publicUrl; only an edge names its central`);
  }
  for (const up of upstreams) {
    if (explicit.has(up.hostname)) continue;
    if (explicitToken.has(up.hostname)) {
      problem(
        `"upstreams.${up.hostname}.token": with "via", this registry is reached through ${via.url}, ` +
          `which holds the registry's own token; give the central's token as "via.token" ` +
          `(or set "upstreams.${up.hostname}.url" to reach the registry directly)`,
      );
      continue;
    }
    // The hostname is a valid registry hostname (lowercase, punycode, optional
    // :port): a single path segment, nothing to escape.
    up.url = via.url + up.hostname;
    up.via = via.url;
    if (via.token !== undefined) up.token = via.token;
    else delete up.token;
  }
}
