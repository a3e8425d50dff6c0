/**
 * A hostile upstream registry for tests: one HTTP server on 127.0.0.1:0 that
 * offers service discovery and answers everything else from the test's
 * handler, recording every request (and how many were in flight at once),
 * plus bodies that never end and say when they were cancelled, and an internal
 * service that must never be reached.
 * @module
 */

/** A running hostile registry. */
export interface HostileUpstream extends AsyncDisposable {
  /** Base URL (use as `upstreams.<host>.url`). */
  url: string;
  /** Paths requested, in order. */
  paths: string[];
  /** Requests whose path matches. */
  count(re: RegExp): number;
  /** Most requests matching `re` that were being answered at once. */
  maxInflight(re: RegExp): number;
  stop(): Promise<void>;
}

/**
 * Starts the server; `handler` answers every path but `/.well-known/terraform.json`.
 *
 * @param track patterns whose requests in flight at once are counted (see maxInflight)
 */
export function startHostile(
  handler: (path: string, req: Request) => Response | Promise<Response>,
  track: RegExp[] = [],
): HostileUpstream {
  const paths: string[] = [];
  const inflight = new Map<string, number>();
  const peak = new Map<string, number>();
  const patterns = track;
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      paths.push(path);
      if (path === "/.well-known/terraform.json") {
        return Response.json({ "providers.v1": "/v1/providers/", "modules.v1": "/v1/modules/" });
      }
      const mine = patterns.filter((re) => re.test(path)).map(String);
      for (const k of mine) {
        const n = (inflight.get(k) ?? 0) + 1;
        inflight.set(k, n);
        peak.set(k, Math.max(peak.get(k) ?? 0, n));
      }
      try {
        return await handler(path, req);
      } finally {
        for (const k of mine) inflight.set(k, inflight.get(k)! - 1);
      }
    },
  );
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    ac.abort();
    await server.finished;
  };
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    paths,
    count: (re) => paths.filter((p) => re.test(p)).length,
    maxInflight(re) {
      return peak.get(String(re)) ?? 0;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A service that must never be reached; records every request it gets. */
export function internalService(hostname = "127.0.0.1", port = 0) {
  const hits: Array<{ url: string; host: string | null }> = [];
  const ac = new AbortController();
  const srv = Deno.serve({ hostname, port, signal: ac.signal, onListen() {} }, (req) => {
    hits.push({ url: req.url, host: req.headers.get("host") });
    return new Response("INTERNAL-SECRET");
  });
  return {
    hits,
    port: srv.addr.port,
    url: `http://${hostname}:${srv.addr.port}`,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await srv.finished;
    },
  };
}

/** A body that never ends: `chunk` bytes every `intervalMs`, counting what was pulled. */
export function endlessBody(
  chunk: number,
  intervalMs: number,
): { body: ReadableStream<Uint8Array>; pulled: () => number; cancelled: Promise<void> } {
  let pulled = 0;
  let onCancel!: () => void;
  const cancelled = new Promise<void>((r) => onCancel = r);
  const bytes = new Uint8Array(chunk).fill(0x61);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let wake: (() => void) | undefined;
  let done = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (intervalMs > 0) {
        await new Promise<void>((r) => {
          wake = r;
          timer = setTimeout(r, intervalMs);
        });
      }
      if (done) return;
      pulled += chunk;
      c.enqueue(bytes);
    },
    cancel() {
      // A pending pause must not outlive the stream (tests sanitize timers).
      done = true;
      clearTimeout(timer);
      wake?.();
      onCancel();
    },
  }, { highWaterMark: 0 });
  return { body, pulled: () => pulled, cancelled };
}

/**
 * A registry `versions` document with `count` versions of `platforms`
 * platforms each: a big but valid list.
 */
export function bigVersionsDoc(id: string, count: number, platforms: number): string {
  const pls = platformNames(platforms).map((p) => {
    const [os, arch] = p.split("_");
    return { os, arch };
  });
  return JSON.stringify({
    id,
    versions: Array.from({ length: count }, (_, i) => ({
      version: `${Math.floor(i / 100)}.${i % 100}.0`,
      protocols: ["5.0"],
      platforms: pls,
    })),
  });
}

/** `n` distinct valid `os_arch` names. */
export function platformNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `os${i}_arch${i % 7}`);
}
