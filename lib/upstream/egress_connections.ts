/**
 * The Deno HTTP clients behind each egress route (pinned address, proxy,
 * direct), kept or made per request as the route needs.
 * @module
 */
import type { EgressRoute } from "./egress.ts";

/**
 * The Deno clients the egress routes need.
 *
 * Pinned: a client whose "proxy" is a plain TCP transport to the vetted
 * address, so the request keeps its URL and Host. Made per hop and closed
 * once the headers are in (the body keeps streaming after close, checked on
 * Deno 2.9): addresses vary, and no pool outlives the request.
 *
 * Proxy: one long-lived client per proxy URL, so registry metadata keeps its
 * keep-alive tunnel instead of a CONNECT and TLS handshake per request.
 * Closed when the server shuts down.
 */
export class EgressConnections {
  readonly #proxies = new Map<string, Deno.HttpClient>();
  #closed = false;

  constructor(signal?: AbortSignal) {
    signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /** The client for `route`; `owned` ones are the caller's to close after the headers. */
  clientFor(route: EgressRoute, url: URL): { client?: Deno.HttpClient; owned: boolean } {
    if (route.via === "pinned") {
      const port = Number(url.port || 80);
      const address = route.address!;
      // Deno parses the transport target as a URI authority: IPv6 needs brackets.
      const hostname = address.includes(":") ? `[${address.replace(/%.*$/, "")}]` : address;
      const client = Deno.createHttpClient({
        proxy: { transport: "tcp", hostname, port },
      } as Deno.CreateHttpClientOptions);
      return { client, owned: true };
    }
    if (route.via === "proxy") {
      const key = route.proxy!;
      const kept = this.#proxies.get(key);
      if (kept) return { client: kept, owned: false };
      const client = proxyClient(key);
      if (this.#closed) return { client, owned: true };
      this.#proxies.set(key, client);
      return { client, owned: false };
    }
    return { owned: false };
  }

  /** Closes the kept proxy clients (responses under way keep streaming). */
  close(): void {
    this.#closed = true;
    for (const c of this.#proxies.values()) c.close();
    this.#proxies.clear();
  }
}

/** A client through the proxy at `url`; userinfo in the URL becomes basic auth. */
function proxyClient(url: string): Deno.HttpClient {
  const proxy = new URL(url);
  const basicAuth = proxy.username
    ? { username: decodeURIComponent(proxy.username), password: decodeURIComponent(proxy.password) }
    : undefined;
  proxy.username = "";
  proxy.password = "";
  return Deno.createHttpClient({ proxy: { url: proxy.href, ...(basicAuth ? { basicAuth } : {}) } });
}
