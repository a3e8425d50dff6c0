/**
 * The listening server: our own accept loop over `Deno.listen`/`listenTls`,
 * each connection served by Deno's HTTP engine (serve_conn.ts), with the
 * connection-level bounds `Deno.serve` lacks:
 * - header-read timeout: a connection must complete its first request's
 *   headers (and its TLS handshake) within `headerTimeoutMs` of being
 *   accepted, a total, so a client trickling headers 1 byte/s is cut too;
 * - idle timeout: a keep-alive connection waiting for its next request (its
 *   headers included) is closed after `idleTimeoutMs`; a response still in
 *   flight is never timed out, except an in-memory body a client will not
 *   read, which gets one more period (see the sweep);
 * At a deadline an HTTP/1.1 connection is first closed gracefully (at once
 * when idle or mid-headers), then cut. TLS connections stuck in their
 * handshake and clients that never read are cut with shutdown(2) through
 * libc (tcp_nodelay.ts), because Deno's own close leaves those sockets open.
 * - connection cap: at `maxConnections` open connections the loop stops
 *   accepting (the kernel backlog holds the rest) until one closes;
 * - accept errors (EMFILE, ENFILE, ...) are back-pressure: back off, log once
 *   per burst, retry; never an exit.
 * Plus TLS, TCP_NODELAY on every connection, and graceful shutdown.
 *
 * It knows nothing of Terraform: it serves a handler function.
 *
 * ALPN: over TLS the listener offers only "http/1.1" unless `tls.http2` asks
 * for ["h2", "http/1.1"] (which is what `Deno.serve` hard-codes, with no
 * option). Clients that can do both (Go's net/http, curl) pick h2 when
 * offered, and Deno 2.9's HTTP/2 send path is much slower for large bodies:
 * each 16 KiB DATA frame goes out as two TLS records and two writes (its TLS
 * stream reports no vectored writes), 1.2-1.6x nginx's CPU per GB. A warm
 * 200 MB archive against nginx's HTTP/1.1: 0.49-0.63x (Go client) and
 * 0.54-1.07x (curl) over h2, 0.86-1.37x over HTTP/1.1 (bench/RESULTS.md).
 * Clients that send one request at a time per connection gain nothing from
 * h2's multiplexing.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { HttpError } from "./errors.ts";
import { markSocketRequest } from "./serve_file.ts";
import { canServeConnections, serveConnection, type ServedConnection } from "./serve_conn.ts";
import { type NoDelayResult, setListenerNoDelay, shutdownPeers } from "./tcp_nodelay.ts";

/**
 * How long SIGTERM waits for in-flight responses before cutting them. The
 * systemd unit's TimeoutStopSec must be longer (a test checks it).
 */
export const SHUTDOWN_DRAIN_MS = 20_000;

/** A started server. */
export interface RunningServer {
  /** The bound address (port resolved when 0 was asked for). */
  hostname: string;
  port: number;
  /** Base URL clients use (https when TLS is configured). */
  url: string;
  /** Whether Nagle's algorithm was turned off for TLS connections (see tcp_nodelay.ts). */
  noDelay: Promise<NoDelayResult>;
  /** Open client connections right now (for tests and metrics). */
  readonly connections: number;
  /** ALPN protocols offered to TLS clients, in preference order (empty without TLS). */
  readonly alpnProtocols: readonly string[];
  /**
   * TLS connections served so far by the protocol ALPN settled on ("none"
   * when the client offered no ALPN): shows what clients really got.
   */
  readonly negotiated: Readonly<Record<string, number>>;
  /** Stops accepting, lets in-flight responses finish up to `deadlineMs`, then cuts them. */
  shutdown(deadlineMs?: number): Promise<void>;
  /** Resolves once the server stopped and every connection closed. */
  finished: Promise<void>;
}

/** Connection-level bounds (from config.limits). A timeout of 0 means none. */
export interface ConnectionLimits {
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
}

/** What {@link startServer} needs. */
export interface ServerOptions {
  hostname: string;
  port: number;
  /**
   * PEM certificate chain and key; HTTPS when set. `http2` offers HTTP/2 by
   * ALPN (default false: HTTP/1.1 only, see the module doc).
   */
  tls?: { certPem: string; keyPem: string; http2?: boolean } | undefined;
  log: Logger;
  /** Connection bounds; the defaults of config.limits when absent. */
  limits?: Partial<ConnectionLimits> | undefined;
  /** Runs after the connections drained (or were cut) on shutdown: stop background work. */
  onDrained?: () => Promise<void>;
}

const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 1000,
};

/** What the TLS listener offers by ALPN, with and without `tls.http2`. */
export const ALPN_HTTP1 = ["http/1.1"] as const;
/** HTTP/2 preferred, HTTP/1.1 for clients without it (as `Deno.serve` offers). */
export const ALPN_HTTP2 = ["h2", "http/1.1"] as const;

/** First and largest pause after a failed accept; doubles in between. */
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 500;

/** One accepted connection and its deadline. */
interface Tracked {
  conn: Deno.Conn;
  /** Set once serving started (after the TLS handshake). */
  served?: ServedConnection;
  /** Requests whose response is not yet sent. */
  inFlight: number;
  /** When it is closed unless a request is in flight (performance.now() ms). */
  deadline: number;
  /** The peer's port, to find a socket stuck in its TLS handshake. */
  peerPort: number;
  /** HTTP/2 (ALPN): a graceful close does not close it while idle. */
  h2: boolean;
  /** A graceful close was asked for at a deadline; the next deadline cuts it. */
  graced: boolean;
}

/** Starts serving `handler` on the given address. */
export function startServer(
  handler: (req: Request) => Promise<Response>,
  options: ServerOptions,
): RunningServer {
  const { log } = options;
  const limits: ConnectionLimits = { ...DEFAULT_CONNECTION_LIMITS };
  for (const [k, v] of Object.entries(options.limits ?? {})) {
    if (typeof v === "number") limits[k as keyof ConnectionLimits] = v;
  }
  const headerTimeoutMs = limits.headerTimeoutMs > 0 ? limits.headerTimeoutMs : Infinity;
  const idleTimeoutMs = limits.idleTimeoutMs > 0 ? limits.idleTimeoutMs : Infinity;
  if (!canServeConnections()) {
    // Checked before listening, so `serve` fails at start-up, not per connection.
    throw new Error(`Deno ${Deno.version.deno} lacks the internal API serve_conn.ts needs`);
  }
  const onError = (e: unknown) => {
    // A streamed body cut by its upstream (archive size or rate bound, a
    // broken connection) ends up here after the headers went out: the client
    // has its failed transfer, and a hostile upstream must not be able to fill
    // the log with ERROR stack traces of ours.
    if (e instanceof HttpError) {
      log.warn("response body cut", { error: e.message });
      return e.toResponse();
    }
    log.error("unhandled server error", { error: (e as Error)?.stack ?? String(e) });
    return new Response(JSON.stringify({ errors: ["internal error"] }), {
      status: 500,
      headers: { "content-type": "application/json" },
    });
  };
  const tls = options.tls;
  const alpnProtocols: string[] = tls ? [...(tls.http2 ? ALPN_HTTP2 : ALPN_HTTP1)] : [];
  const negotiated: Record<string, number> = {};
  const listener: Deno.Listener = tls
    ? Deno.listenTls({
      hostname: options.hostname,
      port: options.port,
      cert: tls.certPem,
      key: tls.keyPem,
      // The server's list decides: a client offering h2 gets it only if listed.
      alpnProtocols,
    })
    : Deno.listen({ hostname: options.hostname, port: options.port });
  const addr = listener.addr as Deno.NetAddr;

  const open = new Set<Tracked>();
  let stopping = false;
  /** Wakes the accept loop: a slot freed, or shutdown. */
  let wake: (() => void) | undefined;
  const wakeLoop = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  let allClosed: (() => void) | undefined;

  const release = (t: Tracked) => {
    if (!open.delete(t)) return;
    if (open.size === limits.maxConnections - 1) wakeLoop();
    if (open.size === 0) allClosed?.();
  };

  const serve = (t: Tracked) => {
    const served = serveConnection(t.conn, (req, info) => {
      t.inFlight++;
      t.deadline = Infinity;
      // Settles when the response was sent or failed; then the next request's
      // wait (headers included) counts under the idle timeout.
      const done = () => {
        if (--t.inFlight === 0) t.deadline = performance.now() + idleTimeoutMs;
      };
      info.completed.then(done, done);
      markSocketRequest(req);
      return handler(req);
    }, onError);
    t.served = served;
    served.finished.then(() => release(t));
  };

  // Nothing here may throw into the accept loop or a promise callback: an
  // unhandled rejection would end the process.
  const serveOrDrop = (t: Tracked) => {
    try {
      serve(t);
    } catch (e) {
      log.warn("cannot serve a connection", { error: (e as Error).message });
      closeQuietly(t.conn);
      release(t);
    }
  };

  const track = (conn: Deno.Conn) => {
    const t: Tracked = {
      conn,
      inFlight: 0,
      deadline: performance.now() + headerTimeoutMs,
      peerPort: (conn.remoteAddr as Deno.NetAddr).port,
      h2: false,
      graced: false,
    };
    open.add(t);
    if (!tls) {
      // (Deno's TCP accept already sets TCP_NODELAY; tests/server_test.ts checks it.)
      serveOrDrop(t);
      return;
    }
    // Serving must wait for the handshake (see serve_conn.ts); the header
    // deadline already runs, so a silent client is cut by the sweep.
    (conn as Deno.TlsConn).handshake().then(
      (info) => {
        t.h2 = info.alpnProtocol === "h2";
        const proto = info.alpnProtocol ?? "none";
        negotiated[proto] = (negotiated[proto] ?? 0) + 1;
        if (!open.has(t) || stopping) {
          closeQuietly(conn);
          release(t);
        } else serveOrDrop(t);
      },
      () => {
        closeQuietly(conn);
        release(t);
      },
    );
  };

  // One timer for all connections: each request only writes a number.
  const tickMs = Math.max(
    10,
    Math.min(1000, Math.floor(Math.min(headerTimeoutMs, idleTimeoutMs) / 10)),
  );
  // Descriptors freed by closed connections (each with a file or an upstream
  // socket of its own) can lie below a socket the sweep must find.
  const scanGap = Math.max(1024, 4 * limits.maxConnections);
  const shutPeers = (peers: Set<number>) => shutdownPeers(addr.port, peers, scanGap);
  let ffiWarned = false;
  /** Peers of stuck handshakes whose shutdown failed (EMFILE): tried again next tick. */
  let retryPeers = new Set<number>();
  const sweep = () => {
    const now = performance.now();
    const stuck = retryPeers;
    retryPeers = new Set();
    for (const t of open) {
      if (t.inFlight > 0 || t.deadline > now) continue;
      if (t.served) {
        if (t.h2 || t.graced) {
          t.served.close();
          // After a graceful close Deno no longer cuts a response being
          // written (a client that never reads): shut the socket itself.
          if (t.graced) stuck.add(t.peerPort);
        } else {
          // HTTP/1.1: a graceful close ends it at once when it is idle or
          // mid-headers, but lets a response still being written finish:
          // Deno reports an in-memory body sent once it is handed over, so a
          // slow reader of a large one would otherwise lose its tail. It gets
          // one more period, then is cut (a client that never reads).
          t.graced = true;
          t.deadline = now + (Number.isFinite(idleTimeoutMs) ? idleTimeoutMs : headerTimeoutMs);
          t.served.shutdown();
        }
        continue;
      }
      // Still in its TLS handshake: close() alone leaves the socket open.
      // (Both kinds are shut with shutdown(2) below.)
      stuck.add(t.peerPort);
      closeQuietly(t.conn);
      release(t);
    }
    if (stuck.size > 0) {
      shutPeers(stuck).then((n) => {
        if (n === -2) { for (const p of stuck) retryPeers.add(p); }
        if (n === -1 && !ffiWarned) {
          ffiWarned = true;
          log.warn(
            "without the ffi permission, stalled TLS handshakes and clients that never read stay open",
          );
        }
      });
    }
  };
  const sweeper = setInterval(sweep, tickMs);

  let backoffTimer: ReturnType<typeof setTimeout> | undefined;
  const pause = (ms: number) =>
    new Promise<void>((r) => {
      wake = r;
      backoffTimer = setTimeout(wakeLoop, ms);
    });

  const acceptLoop = async () => {
    let backoff = ACCEPT_BACKOFF_MIN_MS;
    let failures = 0;
    while (!stopping) {
      if (open.size >= limits.maxConnections) {
        // Stop accepting: the kernel backlog holds new clients meanwhile.
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (stopping) break;
        if (e instanceof Deno.errors.BadResource) break; // listener closed
        // EMFILE/ENFILE and the like: transient. The client stays in the backlog.
        if (failures++ === 0) {
          log.warn("accept failed; backing off until it works again", {
            error: (e as Error).message,
            connections: open.size,
          });
        }
        await pause(backoff);
        clearTimeout(backoffTimer);
        backoff = Math.min(backoff * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      if (failures > 0) {
        log.info("accepting again", { failedAccepts: failures, connections: open.size });
        failures = 0;
        backoff = ACCEPT_BACKOFF_MIN_MS;
      }
      if (stopping) {
        closeQuietly(conn);
        break;
      }
      try {
        track(conn);
      } catch (e) {
        log.warn("cannot track a connection", { error: (e as Error).message });
        closeQuietly(conn);
      }
    }
  };
  const loopDone = acceptLoop();

  // Only TLS needs it: Deno sets TCP_NODELAY on accepted plain-TCP connections.
  const noDelay: Promise<NoDelayResult> = tls
    ? setListenerNoDelay(addr.port).then((r) => {
      if (!r.ok) {
        log.warn("TLS responses may stall ~40 ms (Nagle); TCP_NODELAY not set", {
          reason: r.reason,
        });
      }
      return r;
    })
    : Promise.resolve({ ok: false, reason: "not needed without TLS" });

  let shutdownStarted: Promise<void> | undefined;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((r) => (resolveFinished = r));
  const waitAllClosed = () =>
    open.size === 0 ? Promise.resolve() : new Promise<void>((r) => (allClosed = r));

  const doShutdown = async (deadlineMs: number) => {
    stopping = true;
    closeQuietly(listener);
    clearTimeout(backoffTimer);
    wakeLoop();
    await loopDone;
    // Idle connections and unfinished handshakes go now, so exit is prompt;
    // the others close after their current response.
    const stuck = retryPeers;
    for (const t of open) {
      if (!t.served) {
        stuck.add(t.peerPort);
        closeQuietly(t.conn);
        release(t);
      } else if (t.h2 && t.inFlight === 0) {
        t.served.close(); // a graceful close would wait for the client
      } else {
        // HTTP/1.1 closes at once when idle, after its response otherwise.
        t.served.shutdown();
      }
    }
    await shutPeers(stuck);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), deadlineMs)
    );
    const result = await Promise.race([waitAllClosed().then(() => "done" as const), deadline]);
    clearTimeout(timer);
    if (result === "timeout") {
      log.warn("shutdown deadline passed; closing remaining connections", {
        deadlineMs,
        connections: open.size,
      });
      const cut = new Set<number>();
      for (const t of open) {
        // After the graceful close only shutdown(2) cuts a response being written.
        cut.add(t.peerPort);
        if (t.served) t.served.close();
        else {
          closeQuietly(t.conn);
          release(t);
        }
      }
      await shutPeers(cut);
      // A close that never completes must not keep the process alive.
      const grace = new Promise<void>((r) => timer = setTimeout(r, 1000));
      await Promise.race([waitAllClosed(), grace]);
      clearTimeout(timer);
    }
    clearInterval(sweeper);
    resolveFinished();
    await options.onDrained?.();
  };

  const scheme = tls ? "https" : "http";
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const displayHost = addr.hostname === "0.0.0.0" || addr.hostname === "::" ? "127.0.0.1" : host;
  return {
    hostname: addr.hostname,
    port: addr.port,
    url: `${scheme}://${displayHost}:${addr.port}/`,
    finished,
    noDelay,
    get connections() {
      return open.size;
    },
    alpnProtocols,
    get negotiated() {
      return { ...negotiated };
    },
    shutdown(deadlineMs = SHUTDOWN_DRAIN_MS) {
      shutdownStarted ??= doShutdown(deadlineMs);
      return shutdownStarted;
    },
  };
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/** What {@link serveApp} needs of an application (lib/app.ts's `App`). */
export interface ServableApp {
  handle(req: Request): Promise<Response>;
  readonly config: {
    listen: { hostname: string; port: number };
    tls?: ServerOptions["tls"];
    limits?: ServerOptions["limits"];
  };
  readonly log: Logger;
  close(): Promise<void>;
}

/**
 * Serves `app` on its configured address; shutting the server down also
 * closes the app (stops downloads, removes their temp files).
 */
export function serveApp(app: ServableApp): RunningServer {
  return startServer(app.handle, {
    ...app.config.listen,
    tls: app.config.tls,
    log: app.log,
    limits: app.config.limits,
    onDrained: () => app.close(),
  });
}
