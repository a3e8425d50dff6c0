/**
 * The listening server: a small wrapper around `Deno.serve` with TLS,
 * TCP_NODELAY over TLS and graceful shutdown. It knows nothing of Terraform:
 * it serves a handler function.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { HttpError } from "./errors.ts";
import { markSocketRequest } from "./serve_file.ts";
import { type NoDelayResult, setListenerNoDelay } from "./tcp_nodelay.ts";

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
  /** Stops accepting, lets in-flight responses finish up to `deadlineMs`, then cuts them. */
  shutdown(deadlineMs?: number): Promise<void>;
  finished: Promise<void>;
}

/** What {@link startServer} needs. */
export interface ServerOptions {
  hostname: string;
  port: number;
  /** PEM certificate chain and key; HTTPS when set. */
  tls?: { certPem: string; keyPem: string } | undefined;
  log: Logger;
  /** Runs after the connections drained (or were cut) on shutdown: stop background work. */
  onDrained?: () => Promise<void>;
}

/** Starts serving `handler` on the given address. */
export function startServer(
  handler: (req: Request) => Promise<Response>,
  options: ServerOptions,
): RunningServer {
  const { log } = options;
  const abort = new AbortController();
  const opts: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem> = {
    hostname: options.hostname,
    port: options.port,
    signal: abort.signal,
    onListen: () => {},
    onError: (e) => {
      // A streamed body cut by its upstream (archive size or rate bound, a
      // broken connection) ends up here after the headers went out: the
      // client has its failed transfer, and a hostile upstream must not be
      // able to fill the log with ERROR stack traces of ours.
      if (e instanceof HttpError) {
        log.warn("response body cut", { error: e.message });
        return e.toResponse();
      } else {
        log.error("unhandled server error", { error: (e as Error)?.stack ?? String(e) });
      }
      return new Response(JSON.stringify({ errors: ["internal error"] }), {
        status: 500,
        headers: { "content-type": "application/json" },
      });
    },
  };
  if (options.tls) {
    opts.cert = options.tls.certPem;
    opts.key = options.tls.keyPem;
  }
  const server = Deno.serve(opts, (req) => {
    markSocketRequest(req);
    return handler(req);
  });
  const addr = server.addr as Deno.NetAddr;
  // Only TLS needs it: Deno already sets TCP_NODELAY on plain TCP connections.
  const noDelay: Promise<NoDelayResult> = options.tls
    ? setListenerNoDelay(addr.port).then((r) => {
      if (!r.ok) {
        log.warn("TLS responses may stall ~40 ms (Nagle); TCP_NODELAY not set", {
          reason: r.reason,
        });
      }
      return r;
    })
    : Promise.resolve({ ok: false, reason: "not needed without TLS" });
  const scheme = options.tls ? "https" : "http";
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const displayHost = addr.hostname === "0.0.0.0" || addr.hostname === "::" ? "127.0.0.1" : host;
  return {
    hostname: addr.hostname,
    port: addr.port,
    url: `${scheme}://${displayHost}:${addr.port}/`,
    finished: server.finished,
    noDelay,
    async shutdown(deadlineMs = SHUTDOWN_DRAIN_MS) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<"timeout">((r) =>
        timer = setTimeout(() => r("timeout"), deadlineMs)
      );
      const result = await Promise.race([server.shutdown().then(() => "done" as const), deadline]);
      clearTimeout(timer);
      if (result === "timeout") {
        log.warn("shutdown deadline passed; closing remaining connections", { deadlineMs });
        abort.abort();
        await server.finished.catch(() => {});
      }
      await options.onDrained?.();
    },
  };
}
