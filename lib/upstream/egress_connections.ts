/**
 * The Deno HTTP clients behind each egress route (pinned address, proxy,
 * direct), kept so that connections are reused.
 * @module
 */
import type { EgressRoute } from "./egress.ts";

/** Pinned clients kept at most (least recently used closed first). */
export const MAX_PINNED_CLIENTS = 16;

/** A client for one request; `done()` once its headers are in. */
export interface Lease {
  client?: Deno.HttpClient;
  /** Gives the client back (closes it when nobody else may use it). */
  done(): void;
}

interface Pinned {
  client: Deno.HttpClient;
  /** Requests using it before their headers came. */
  inUse: number;
  /** Evicted or shut down: closed when the last user is done. */
  retired: boolean;
}

/**
 * The Deno clients the egress routes need.
 *
 * Pinned: a client whose "proxy" is a plain TCP transport to the vetted
 * address, so the request keeps its URL and Host. One is kept per (origin,
 * vetted address), so its keep-alive connections are reused: a new client
 * per request cost a TCP handshake each (and no keep-alive). Every
 * connection it opens goes to the address in its key, so a later DNS answer
 * (vetted again on every request) gets a client of its own, never this one.
 * At most {@link MAX_PINNED_CLIENTS} are kept; a retired client is closed
 * once no request waits for its headers (bodies keep streaming after close,
 * checked on Deno 2.9).
 *
 * Proxy: one long-lived client per proxy URL, so registry metadata keeps its
 * keep-alive tunnel instead of a CONNECT and TLS handshake per request.
 * Closed when the server shuts down.
 */
export class EgressConnections {
  readonly #proxies = new Map<string, Deno.HttpClient>();
  /** Insertion order is use order: the first is the least recently used. */
  readonly #pinned = new Map<string, Pinned>();
  #closed = false;

  constructor(signal?: AbortSignal) {
    signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /** The client for `route`; call `done()` on the lease once the headers are in. */
  clientFor(route: EgressRoute, url: URL): Lease {
    if (route.via === "pinned") return this.#pinnedLease(route.address!, url);
    if (route.via === "proxy") {
      const key = route.proxy!;
      const kept = this.#proxies.get(key);
      if (kept) return { client: kept, done: noop };
      const client = proxyClient(key);
      if (this.#closed) return { client, done: () => client.close() };
      this.#proxies.set(key, client);
      return { client, done: noop };
    }
    return { done: noop };
  }

  #pinnedLease(address: string, url: URL): Lease {
    const key = `${url.origin} ${address}`;
    let p = this.#pinned.get(key);
    if (p) this.#pinned.delete(key); // re-inserted below: most recently used
    else {
      const port = Number(url.port || 80);
      // Deno parses the transport target as a URI authority: IPv6 needs brackets.
      const hostname = address.includes(":") ? `[${address.replace(/%.*$/, "")}]` : address;
      const client = Deno.createHttpClient({
        proxy: { transport: "tcp", hostname, port },
      } as Deno.CreateHttpClientOptions);
      p = { client, inUse: 0, retired: this.#closed };
    }
    if (!p.retired) {
      this.#pinned.set(key, p);
      while (this.#pinned.size > MAX_PINNED_CLIENTS) {
        const [oldKey, old] = this.#pinned.entries().next().value!;
        this.#pinned.delete(oldKey);
        this.#retire(old);
      }
    }
    p.inUse++;
    const lease = p;
    let given = false;
    return {
      client: lease.client,
      done: () => {
        if (given) return;
        given = true;
        lease.inUse--;
        if (lease.retired && lease.inUse === 0) lease.client.close();
      },
    };
  }

  #retire(p: Pinned): void {
    p.retired = true;
    if (p.inUse === 0) p.client.close();
  }

  /** Number of pinned clients kept (tests). */
  get pinnedCount(): number {
    return this.#pinned.size;
  }

  /** Closes the kept clients (responses under way keep streaming). */
  close(): void {
    this.#closed = true;
    for (const c of this.#proxies.values()) c.close();
    this.#proxies.clear();
    for (const p of this.#pinned.values()) this.#retire(p);
    this.#pinned.clear();
  }
}

const noop = () => {};

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
