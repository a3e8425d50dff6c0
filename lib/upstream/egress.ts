/**
 * The egress policy: which hosts Repoxy may fetch from, decided per URL and
 * per redirect hop, after DNS resolution.
 *
 * A hostile or compromised registry names the URLs Repoxy fetches next
 * (`download_url`, SHA256SUMS, redirects, service discovery). Without a policy
 * it could point them at `http://169.254.169.254/` or another loopback port
 * and read the answer through Repoxy (SSRF). So every origin other than the
 * configured upstreams' own is refused when it is, or resolves to, an
 * internal address — loopback, private, link-local, CGNAT, unspecified,
 * multicast/reserved, cloud metadata, or an IPv6 form embedding one of those
 * (IPv4-mapped/compatible, NAT64, 6to4) — unless `allowPrivateNetworks` or an
 * `egressAllow` entry says otherwise.
 *
 * The answer also says how to connect: plain http is pinned to the vetted
 * address (so a second DNS answer cannot rebind it to loopback), and a URL an
 * HTTP(S)_PROXY carries goes through that proxy, NO_PROXY honoured.
 * @module
 */
import type { EgressConfig } from "../config/hardening.ts";
import type { Config } from "../config/config.ts";
import { lookup } from "../deps/dns.ts";
import { UpstreamError } from "../http/errors.ts";
import { type Addr, type Cidr, inPrefix, parseAddr, parseCidr, parseV4 } from "../base/ip.ts";

/** Resolves a host name to all its addresses (injectable for tests). */
export type Resolver = (hostname: string) => Promise<string[]>;

/** The system resolver (getaddrinfo via `node:dns`), every address. */
export const systemResolver: Resolver = async (hostname) =>
  (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

/** A target the egress policy refuses: 502, never retried, names host and reason. */
export class EgressRefusedError extends UpstreamError {
  override name = "EgressRefusedError";
  constructor(readonly host: string, readonly reason: string) {
    super(`refused to fetch from ${host}: ${reason} (see allowPrivateNetworks / egressAllow)`);
  }
}

/** How one request may be sent. */
export interface EgressRoute {
  /** `direct`: fetch by name; `pinned`: connect to `address`; `proxy`: through `proxy`. */
  via: "direct" | "pinned" | "proxy";
  /** The vetted address a pinned request connects to. */
  address?: string;
  /** The proxy URL carrying the request. */
  proxy?: string;
}

/** Options of {@link EgressPolicy}. */
export interface EgressOptions {
  /** Origins (`scheme://host:port`) exempt from the address checks: the configured upstreams. */
  exemptOrigins: Iterable<string>;
  resolve?: Resolver;
  /** Environment for HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY (default: `Deno.env`). */
  env?: (name: string) => string | undefined;
}

// ---------------------------------------------------------------------------
// Addresses (parsed by base/ip.ts, where config validates egressAllow too).

interface Range extends Cidr {
  reason: string;
}

function range(cidr: string, reason: string): Range {
  return { ...parseCidr(cidr)!, reason };
}

/** IPv4 ranges that are not the public internet (RFC 6890 and cloud metadata). */
const V4_BLOCKED: Range[] = [
  range("0.0.0.0/8", "an unspecified (this-network) address"),
  range("10.0.0.0/8", "a private address"),
  range("100.100.100.200/32", "a cloud metadata address"),
  range("100.64.0.0/10", "a shared (CGNAT) address"),
  range("127.0.0.0/8", "a loopback address"),
  range("169.254.169.254/32", "a cloud metadata address"),
  range("169.254.0.0/16", "a link-local address"),
  range("168.63.129.16/32", "a cloud metadata address"),
  range("172.16.0.0/12", "a private address"),
  range("192.0.0.0/24", "a reserved (IETF protocol) address"),
  range("192.0.2.0/24", "a reserved (documentation) address"),
  range("192.88.99.0/24", "a reserved (6to4 relay) address"),
  range("192.168.0.0/16", "a private address"),
  range("198.18.0.0/15", "a reserved (benchmarking) address"),
  range("198.51.100.0/24", "a reserved (documentation) address"),
  range("203.0.113.0/24", "a reserved (documentation) address"),
  range("224.0.0.0/4", "a multicast address"),
  range("240.0.0.0/4", "a reserved address"),
];

/** IPv6 ranges that are not the public internet. */
const V6_BLOCKED: Range[] = [
  range("::/128", "an unspecified address"),
  range("::1/128", "a loopback address"),
  range("64:ff9b:1::/48", "a local-use NAT64 address"),
  range("100::/64", "a reserved (discard) address"),
  range("2001::/23", "a reserved (IETF protocol, Teredo) address"),
  range("2001:db8::/32", "a reserved (documentation) address"),
  range("3fff::/20", "a reserved (documentation) address"),
  range("fd00:ec2::254/128", "a cloud metadata address"),
  range("fc00::/7", "a unique-local (private) address"),
  range("fe80::/10", "a link-local address"),
  range("fec0::/10", "a site-local address"),
  range("ff00::/8", "a multicast address"),
];

/** IPv6 forms that carry an IPv4 address: judged by the address they carry. */
const V6_EMBEDDING: Array<{ net: Addr; bits: number; at: number; what: string }> = [
  { ...range("::ffff:0:0/96", ""), at: 12, what: "IPv4-mapped" },
  { ...range("::/96", ""), at: 12, what: "IPv4-compatible" },
  { ...range("64:ff9b::/96", ""), at: 12, what: "NAT64" },
  { ...range("2002::/16", ""), at: 2, what: "6to4" },
];

const isMappedV4 = (a: Addr) => a.subarray(0, 12).every((b, i) => b === (i >= 10 ? 0xff : 0));

/**
 * Why `address` is internal, or undefined when it is a public address.
 * Accepts IPv4, IPv6, bracketed IPv6; a string that is no address is internal.
 */
export function internalReason(address: string): string | undefined {
  const a = parseAddr(address);
  if (!a) return "not an IP address";
  return reasonOf(a);
}

function reasonOf(a: Addr): string | undefined {
  if (isMappedV4(a)) return V4_BLOCKED.find((r) => inPrefix(a, r.net, r.bits))?.reason;
  for (const r of V6_BLOCKED) if (inPrefix(a, r.net, r.bits)) return r.reason;
  for (const e of V6_EMBEDDING) {
    if (!inPrefix(a, e.net, e.bits)) continue;
    const v4 = Uint8Array.of(
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0xff,
      0xff,
      ...a.subarray(e.at, e.at + 4),
    );
    const inner = reasonOf(v4);
    return inner ? `${e.what} IPv6 embedding ${inner}` : undefined;
  }
  return undefined;
}

/** Names of the cloud metadata services. */
const METADATA_NAMES = new Set([
  "metadata",
  "metadata.google.internal",
  "metadata.goog",
  "instance-data",
  "instance-data.ec2.internal",
]);

/**
 * Suffixes that never name a public host: special-use (RFC 6761, 6762, 8375),
 * ".internal" (reserved by ICANN for private use) and the private-network
 * suffixes ICANN will not delegate (name collision).
 */
const INTERNAL_SUFFIXES = [
  "localhost",
  "local",
  "internal",
  "home.arpa",
  "lan",
  "corp",
  "home",
  "intranet",
  "private",
];

/**
 * Why a host name is internal by its name alone, or undefined. Used only when
 * a proxy must resolve the name for us (the address cannot be checked here):
 * then the proxy could reach the corporate network, so names that can only
 * mean a private host are refused — single-label names included.
 */
export function internalNameReason(hostname: string): string | undefined {
  const h = hostname.toLowerCase().replace(/\.$/, "");
  if (METADATA_NAMES.has(h)) return "a cloud metadata host name";
  if (INTERNAL_SUFFIXES.some((s) => h === s || h.endsWith(`.${s}`))) {
    return "an internal host name";
  }
  if (!h.includes(".")) return "a single-label (intranet) host name";
  return undefined;
}

// ---------------------------------------------------------------------------
// Proxies, as Deno's fetch reads them (upper case first, then lower case).

function envVar(env: (n: string) => string | undefined, name: string): string | undefined {
  return env(name) || env(name.toLowerCase()) || undefined;
}

/** Whether NO_PROXY exempts `host` (a WHATWG hostname: lower case, IPv6 in brackets). */
function noProxyMatches(noProxy: string, host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").replace(/\.$/, "");
  const addr = parseAddr(bare);
  for (let entry of noProxy.split(",").map((e) => e.trim().toLowerCase())) {
    if (entry === "") continue;
    if (entry === "*") return true;
    if (entry.includes("/")) {
      const c = parseCidr(entry);
      if (addr && c && inPrefix(addr, c.net, c.bits)) return true;
      continue;
    }
    entry = entry.replace(/^\[|\]$/g, "").replace(/^\*?\./, "");
    if (bare === entry || bare.endsWith("." + entry)) return true;
  }
  return false;
}

/** An address as a URL spells its host (`127.0.0.1`, `[::1]`), or undefined. */
function urlHost(address: string): string | undefined {
  try {
    return new URL(
      `http://${address.includes(":") ? `[${address.replace(/%.*$/, "")}]` : address}/`,
    )
      .hostname;
  } catch {
    return undefined;
  }
}

/**
 * `Deno.env.get`, or undefined where the variable may not be read (a binary
 * built with a narrower `--allow-env`): no proxy then, as for an unset one.
 */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------

/** Decides, per URL, whether Repoxy may fetch it and how to connect. */
export class EgressPolicy {
  readonly #allowPrivate: boolean;
  /** `host` entries (any port) and `host:port` entries, in WHATWG form. */
  readonly #allowHosts = new Set<string>();
  readonly #allowCidrs: Cidr[] = [];
  readonly #exempt: Set<string>;
  readonly #resolve: Resolver;
  readonly #env: (name: string) => string | undefined;

  constructor(config: EgressConfig, opts: EgressOptions) {
    this.#allowPrivate = config.allowPrivateNetworks;
    for (const entry of config.egressAllow) {
      if (entry.includes("/")) {
        const c = parseCidr(entry);
        if (c) this.#allowCidrs.push(c);
        continue;
      }
      // Let the URL parser spell the host the way it will spell URLs:
      // "2130706433" becomes "127.0.0.1", "[::FFFF:127.0.0.1]" "[::ffff:7f00:1]".
      try {
        const u = new URL(`http://${entry}`);
        this.#allowHosts.add(/:\d+$/.test(entry) ? `${u.hostname}:${u.port || "80"}` : u.hostname);
      } catch { /* parseEgress already refused malformed entries */ }
    }
    this.#exempt = new Set([...opts.exemptOrigins].map((o) => new URL(o).origin));
    this.#resolve = opts.resolve ?? systemResolver;
    this.#env = opts.env ?? readEnv;
  }

  /**
   * The proxy that carries `url`, if any: HTTPS_PROXY for https, HTTP_PROXY
   * for http (ignored in a CGI context, as Deno does), ALL_PROXY for both;
   * NO_PROXY exempts hosts, domains (with subdomains), IPs and CIDRs.
   */
  proxyFor(url: URL): string | undefined {
    const proxy = url.protocol === "https:"
      ? envVar(this.#env, "HTTPS_PROXY")
      : (this.#env("REQUEST_METHOD") === undefined ? envVar(this.#env, "HTTP_PROXY") : undefined);
    const chosen = proxy ?? envVar(this.#env, "ALL_PROXY");
    if (!chosen) return undefined;
    const noProxy = envVar(this.#env, "NO_PROXY");
    if (noProxy && noProxyMatches(noProxy, url.hostname)) return undefined;
    // "proxy.corp:3128" is common (curl takes it); Deno's client wants a URL.
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(chosen) ? chosen : `http://${chosen}`;
    return URL.canParse(withScheme) ? withScheme : undefined;
  }

  #allowedByCidr(address: string): boolean {
    const a = parseAddr(address);
    return !!a && this.#allowCidrs.some((c) => inPrefix(a, c.net, c.bits));
  }

  /**
   * Why `address` may not be contacted on `port`, or undefined. An address
   * entry (`10.0.0.7`, `10.0.0.7:8080`) allows what resolves to it, too.
   */
  #addressVerdict(address: string, port: string): string | undefined {
    if (this.#allowPrivate || this.#allowedByCidr(address)) return undefined;
    const host = urlHost(address);
    if (host && (this.#allowHosts.has(host) || this.#allowHosts.has(`${host}:${port}`))) {
      return undefined;
    }
    return internalReason(address);
  }

  /**
   * Vets `url` and says how to send it. Throws {@link EgressRefusedError} for a
   * refused target, or a transient {@link UpstreamError} when the name does
   * not resolve and no proxy would resolve it for us.
   */
  async route(url: URL): Promise<EgressRoute> {
    const proxy = this.proxyFor(url);
    const carried = (): EgressRoute => (proxy ? { via: "proxy", proxy } : { via: "direct" });
    // An operator who configured http://127.0.0.1:9000 as a registry meant it.
    // Only the exact origin: another port on the same host is another service.
    if (this.#exempt.has(url.origin)) return carried();
    const port = url.port || (url.protocol === "https:" ? "443" : "80");
    if (this.#allowHosts.has(url.hostname) || this.#allowHosts.has(`${url.hostname}:${port}`)) {
      return carried();
    }
    const host = url.host;
    // WHATWG URL has already turned 2130706433, 0x7f.1 and 0177.0.0.1 into
    // 127.0.0.1, and any IPv6 spelling into its canonical bracketed form.
    if (parseAddr(url.hostname)) {
      const why = this.#addressVerdict(url.hostname, port);
      if (why) throw new EgressRefusedError(host, why);
      return carried();
    }
    if (this.#allowPrivate) return carried();
    let addresses: string[];
    try {
      addresses = await this.#resolve(url.hostname.replace(/\.$/, ""));
      if (addresses.length === 0) throw new Error("no addresses");
    } catch (e) {
      if (proxy) {
        // Air gap behind a proxy: only the proxy can resolve names, so judge
        // by the name. The proxy is the operator's own egress control.
        const why = internalNameReason(url.hostname);
        if (why) throw new EgressRefusedError(host, `${why}, and only the proxy can resolve it`);
        return carried();
      }
      const err = new UpstreamError(`cannot resolve ${url.hostname}: ${(e as Error).message}`);
      err.transient = true;
      throw err;
    }
    // Every address must pass: the connection may use any of them.
    for (const address of addresses) {
      const why = this.#addressVerdict(address, port);
      if (why) throw new EgressRefusedError(host, `resolves to ${address}, ${why}`);
    }
    if (proxy) return carried();
    // Plain http: connect to the address just vetted, so a second lookup by
    // fetch cannot be answered with 127.0.0.1 (DNS rebinding). https is
    // fetched by name: a rebound connection would have to present a
    // certificate for this host name, which an internal service cannot, so
    // the TLS handshake fails before any request is sent.
    // One address is pinned, so no fallback between families: IPv4 first,
    // as hosts without an IPv6 route are the common case.
    const first = addresses.find((a) => parseV4(a)) ?? addresses[0];
    if (url.protocol === "http:" && first !== undefined) return { via: "pinned", address: first };
    return { via: "direct" };
  }
}

/** Whether `url`'s host is loopback (a token sent there never leaves the machine). */
export function isLoopbackHost(url: URL): boolean {
  const h = url.hostname.replace(/\.$/, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  return internalReason(h) === "a loopback address";
}
/** The egress policy of a config: its configured upstream origins exempt, all else vetted. */
export function configEgress(
  config: Config,
  deps: {
    resolve?: Resolver | undefined;
    env?: ((name: string) => string | undefined) | undefined;
  },
): EgressPolicy {
  return new EgressPolicy(config.egress, {
    exemptOrigins: [...config.upstreams.values()].map((up) => new URL(up.url).origin),
    ...(deps.resolve ? { resolve: deps.resolve } : {}),
    ...(deps.env ? { env: deps.env } : {}),
  });
}
