/**
 * The listening server: a small wrapper around `Deno.serve` with TLS,
 * graceful shutdown, and the start-up banner.
 * @module
 */
import type { App } from "../app.ts";
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

/** Starts serving `app` on the configured address. */
export function startServer(app: App): RunningServer {
  const { config } = app;
  const abort = new AbortController();
  const opts: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem> = {
    hostname: config.listen.hostname,
    port: config.listen.port,
    signal: abort.signal,
    onListen: () => {},
    onError: (e) => {
      app.log.error("unhandled server error", { error: (e as Error)?.stack ?? String(e) });
      return new Response(JSON.stringify({ errors: ["internal error"] }), {
        status: 500,
        headers: { "content-type": "application/json" },
      });
    },
  };
  if (config.tls) {
    opts.cert = config.tls.certPem;
    opts.key = config.tls.keyPem;
  }
  const server = Deno.serve(opts, (req) => {
    markSocketRequest(req);
    return app.handle(req);
  });
  const addr = server.addr as Deno.NetAddr;
  // Only TLS needs it: Deno already sets TCP_NODELAY on plain TCP connections.
  const noDelay: Promise<NoDelayResult> = config.tls
    ? setListenerNoDelay(addr.port).then((r) => {
      if (!r.ok) {
        app.log.warn("TLS responses may stall ~40 ms (Nagle); TCP_NODELAY not set", {
          reason: r.reason,
        });
      }
      return r;
    })
    : Promise.resolve({ ok: false, reason: "not needed without TLS" });
  const scheme = config.tls ? "https" : "http";
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
        app.log.warn("shutdown deadline passed; closing remaining connections", { deadlineMs });
        abort.abort();
        await server.finished.catch(() => {});
      }
      await app.close();
    },
  };
}

/**
 * The CLI configuration a user pastes into `.terraformrc` / `.tofurc` for this
 * instance: the network mirror block when served over HTTPS (the client
 * requires it), and the registry `host` blocks for every upstream.
 */
export function clientSnippet(baseUrl: string, upstreams: string[], tls: boolean): string {
  const base = baseUrl.endsWith("/") ? baseUrl : baseUrl + "/";
  const lines: string[] = [];
  if (tls) {
    lines.push(
      "# Network mirror (all providers through Repoxy):",
      "provider_installation {",
      "  network_mirror {",
      `    url = "${base}"`,
      "  }",
      "}",
      "",
    );
  } else {
    lines.push(
      "# The network mirror protocol needs HTTPS (set tls.cert and tls.key);",
      "# over plain http use the registry protocol:",
    );
  }
  lines.push("# Pull-through registry (keeps publisher signatures, all-platform lock hashes):");
  for (const h of upstreams) {
    lines.push(
      `host "${h}" {`,
      "  services = {",
      `    "providers.v1" = "${base}v1/providers/${h}/"`,
      `    "modules.v1"   = "${base}v1/modules/${h}/"`,
      "  }",
      "}",
    );
  }
  return lines.join("\n");
}
