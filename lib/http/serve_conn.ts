/**
 * Serves HTTP (1.1, or 2 when TLS negotiated it) on ONE accepted connection,
 * through Deno's internal `serveHttpOnConnection`.
 *
 * Why an internal API: `Deno.serve` accepts connections itself and offers no
 * header-read or idle timeout, no connection cap, and an accept error such as
 * EMFILE ends the whole server (DENO_NOTES.md §7). Running our own accept loop
 * (server.ts) gives us all of that, and this function is the only way to hand
 * an accepted `Deno.Conn` to Deno's native HTTP engine: it measured the same
 * throughput as `Deno.serve` (which uses the same engine). The API is
 * internal, so everything that depends on its shape is here, and
 * tests/server_test.ts, tests/hostile_client_test.ts and tests/alpn_test.ts
 * pin the behaviours we rely on (closing on abort, graceful close, HTTP/2
 * over TLS, request completion, ALPN as configured, the API's shape). Pinned
 * to Deno 2.9.
 *
 * Facts relied on (verified on Deno 2.9.6):
 * - the handler gets `(request, info)` with `info.completed`, which settles
 *   when the response (body included) has been sent or has failed;
 * - the abort listener it adds to `signal` closes the connection at once;
 *   but after the connection's resource is gone (which happens before
 *   `finished` settles) it throws BadResource, and from a real AbortSignal
 *   that is an uncaught error that ends the process. So we pass a stand-in
 *   signal that only keeps the listener, and call it inside try/catch;
 * - `finished` can reject (a broken pipe, a client's bad TLS close): it is
 *   always caught here, since an unhandled rejection would end the process.
 *   On that path Deno also skips closing the connection's "http" resource,
 *   which then leaks (seen with curl over TLS): we find that resource when
 *   serving starts (the newest "http" resource: resource ids only grow, and
 *   nothing runs in between) and close it once `finished` settles;
 * - over TLS the handshake must be complete before serving: a connection
 *   still in its handshake is not closed by the abort (see server.ts).
 * @module
 */

/** One connection being served. */
export interface ServedConnection {
  /** Settles (never rejects) when the connection is closed. */
  finished: Promise<void>;
  /** False once the connection is closed. */
  readonly open: boolean;
  /** Closes the connection now, cutting any response in flight. */
  close(): void;
  /** Graceful: closes an idle HTTP/1.1 connection now, others after their current response. */
  shutdown(): void;
}

/** The request handler with the per-request info Deno passes. */
export type ConnHandler = (
  req: Request,
  info: { completed: Promise<void> },
) => Response | Promise<Response>;

type Internal = {
  core: {
    resources(): Record<string, string>;
    tryClose(rid: number): void;
    internalRidSymbol: symbol;
  };
  serveHttpOnConnection(
    conn: Deno.Conn,
    signal: AbortSignal,
    handler: ConnHandler,
    onError: (e: unknown) => Response | Promise<Response>,
    onListen: (scheme: string) => void,
  ): { finished: Promise<void>; shutdown(): Promise<void> };
};

function internalApi(): Internal {
  // deno-lint-ignore no-explicit-any
  const d = Deno as any;
  const api = d[d.internal] as Internal | undefined;
  if (typeof api?.serveHttpOnConnection !== "function") {
    throw new Error(`this Deno (${Deno.version.deno}) lacks serveHttpOnConnection`);
  }
  return api;
}

/** Whether this Deno has the internal API (checked once at start-up). */
export function canServeConnections(): boolean {
  try {
    internalApi();
    return true;
  } catch {
    return false;
  }
}

/** Starts serving `conn` (which it now owns) with `handler`. */
export function serveConnection(
  conn: Deno.Conn,
  handler: ConnHandler,
  onError: (e: unknown) => Response | Promise<Response>,
): ServedConnection {
  let cancel: (() => void) | undefined;
  // Duck-typed: Deno only calls addEventListener("abort", fn, { once: true }).
  const signal = {
    addEventListener(_type: string, fn: () => void) {
      cancel = fn;
    },
    removeEventListener() {},
    aborted: false,
  } as unknown as AbortSignal;
  let open = true;
  const api = internalApi();
  const connRid = (conn as unknown as Record<symbol, number>)[api.core.internalRidSymbol];
  const served = api.serveHttpOnConnection(
    conn,
    signal,
    handler,
    onError,
    () => {},
  );
  const rid = newestHttpResource(api, connRid);
  const finished = served.finished.catch(() => {}).finally(() => {
    open = false;
    if (rid !== undefined) {
      try {
        api.core.tryClose(rid);
      } catch { /* gone already: the normal case */ }
    }
  });
  return {
    finished,
    get open() {
      return open;
    },
    close() {
      const c = cancel;
      cancel = undefined;
      if (!open || !c) return;
      try {
        c();
      } catch { /* its resource was already closed */ }
    },
    shutdown() {
      if (open) served.shutdown().catch(() => {});
    },
  };
}

/**
 * The id of the most recently created "http" resource (see the module doc),
 * if it is newer than the connection's own id: a newer Deno that named it
 * otherwise must not make us close another connection's resource.
 */
function newestHttpResource(api: Internal, connRid: number | undefined): number | undefined {
  let newest: number | undefined;
  const table = api.core.resources();
  for (const key in table) {
    if (table[key] !== "http") continue;
    const rid = Number(key);
    if (newest === undefined || rid > newest) newest = rid;
  }
  return newest !== undefined && connRid !== undefined && newest > connRid ? newest : undefined;
}
