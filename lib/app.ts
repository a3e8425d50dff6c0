/**
 * The Repoxy application: `createApp(config, deps)` wires the stores, the
 * upstream clients and the routes into one request handler. Everything with a
 * side effect outside the cache dir (fetch, clock, logging) is injected, so
 * most tests call `app.handle(new Request(...))` without a socket.
 * @module
 */
import { resetDir } from "./atomic_write.ts";
import type { Config } from "./config.ts";
import { join } from "./deps/path.ts";
import { errorResponse, HttpError, NotFoundError, toErrorStatus, UpstreamError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { listCachedPlatforms, listCachedVersions } from "./local_index.ts";
import { type CacheStatus, Metadata, refKeys } from "./metadata.ts";
import {
  type MirrorArchive,
  mirrorIndexJson,
  mirrorVersionJson,
  rewriteDownloadDoc,
} from "./mirror_json.ts";
import { archiveFilename, type PlatformRef, type ProviderRef } from "./names.ts";
import { PackageStore } from "./package_store.ts";
import { holdForServing, QuotaKeeper } from "./quota.ts";
import { RefsStore } from "./refs_store.ts";
import { BadPathError, parseRoute, type Route } from "./router.ts";
import { serveFile } from "./serve_file.ts";
import { parseSha256Sums } from "./signature.ts";
import { type FetchFn, UpstreamClient } from "./upstream.ts";
import { USER_AGENT, VERSION } from "./version.ts";

/** Injected dependencies; every field has a real default. */
export interface AppDeps {
  fetch?: FetchFn;
  log?: Logger;
  now?: () => number;
  /** Called for every upstream HTTP request (tests count them; metrics later). */
  onUpstreamRequest?: (info: { hostname: string; url: string; status: number | "error" }) => void;
  /** Waits between upstream retries. */
  sleep?: (ms: number) => Promise<void>;
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number;
  /** Temp dir (emptied at start); default `<cacheDir>/tmp`. CLI commands use their own. */
  tmpDir?: string;
}

/** Per-request facts gathered for the access log. */
interface RequestContext {
  route: Route["kind"] | "none";
  cache: CacheStatus | undefined;
}

/** A running Repoxy instance (without the listening socket). */
export interface App {
  readonly config: Config;
  readonly log: Logger;
  readonly packages: PackageStore;
  readonly metadata: Metadata;
  /** Handles one request. Never throws: errors become JSON responses. */
  handle(req: Request): Promise<Response>;
  /** Waits for in-flight downloads and background jobs. */
  settle(): Promise<void>;
  /** Aborts upstream work (downloads in flight fail and clean up). */
  close(): Promise<void>;
}

const JSON_HEADERS = { "content-type": "application/json" };

function jsonResponse(
  req: Request,
  body: string,
  cache: CacheStatus | undefined,
  maxAge = 60,
): Response {
  const headers = new Headers(JSON_HEADERS);
  headers.set("cache-control", `public, max-age=${maxAge}`);
  if (cache) headers.set("x-repoxy-cache", cache);
  return new Response(req.method === "HEAD" ? null : body, { status: 200, headers });
}

/** Combines cache statuses: any stale part makes the answer stale, any miss a miss. */
function worst(...s: Array<CacheStatus | undefined>): CacheStatus {
  if (s.includes("stale")) return "stale";
  if (s.includes("miss")) return "miss";
  return "hit";
}

/**
 * Creates the application. Prepares the cache directory (and empties `tmp/`).
 */
export async function createApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const log = deps.log ?? createLogger(config.logFormat);
  const now = deps.now ?? Date.now;
  const fetchFn = deps.fetch ?? ((input, init) => fetch(input, init));
  const shutdown = new AbortController();

  const tmpDir = deps.tmpDir ?? join(config.cacheDir, "tmp");
  await Deno.mkdir(join(config.cacheDir, "refs"), { recursive: true });
  await Deno.mkdir(join(config.cacheDir, "packages"), { recursive: true });
  const removed = await resetDir(tmpDir);
  if (removed > 0) log.warn("removed leftover temp files from an earlier run", { count: removed });

  const refs = new RefsStore(config.cacheDir, tmpDir);
  const clients = new Map<string, UpstreamClient>();
  for (const [host, up] of config.upstreams) {
    clients.set(
      host,
      new UpstreamClient(up, {
        fetch: fetchFn,
        log,
        userAgent: USER_AGENT,
        timeoutMs: config.upstreamTimeoutMs,
        signal: shutdown.signal,
        ...(deps.sleep ? { sleep: deps.sleep } : {}),
        ...(deps.onUpstreamRequest ? { onRequest: deps.onUpstreamRequest } : {}),
      }),
    );
  }
  const metadata = new Metadata(config, refs, clients, log, now);
  const packages = new PackageStore(config.cacheDir, tmpDir, refs, log, {
    ...(deps.downloadIdleTimeoutMs ? { idleTimeoutMs: deps.downloadIdleTimeoutMs } : {}),
    now,
  });
  const quota = config.maxCacheSizeBytes === undefined
    ? undefined
    : new QuotaKeeper(config.cacheDir, config.maxCacheSizeBytes, log);

  /** SHA256SUMS of a version as filename → sha256, or undefined when unavailable. */
  async function sumsFor(p: ProviderRef, version: string, pl: PlatformRef) {
    const dl = await metadata.download(p, version, pl);
    if (!dl.value.doc.shasums_url) return { map: undefined, status: dl.status };
    const s = await metadata.sums(p, version, dl.value);
    return {
      map: parseSha256Sums(new TextDecoder().decode(s.value.sums)),
      status: worst(dl.status, s.status),
    };
  }

  async function mirrorIndex(req: Request, ctx: RequestContext, p: ProviderRef): Promise<Response> {
    const got = await metadata.versions(p);
    ctx.cache = got.status;
    const versions = got.value.versions.map((v) => v.version);
    // Offline, archives imported after the list was cached are available too.
    if (config.offline) versions.push(...await listCachedVersions(config.cacheDir, p));
    return jsonResponse(req, mirrorIndexJson([...new Set(versions)]), got.status);
  }

  /**
   * Offline, a provider or version without cached upstream metadata (e.g.
   * brought by `repoxy import`) is answered from the archives stored for it.
   */
  async function offlineFallback(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string | undefined,
    answer: () => Promise<Response>,
  ): Promise<Response> {
    try {
      return await answer();
    } catch (e) {
      if (!config.offline || !(e instanceof NotFoundError)) throw e;
      if (version === undefined) {
        const versions = await listCachedVersions(config.cacheDir, p);
        if (versions.length === 0) throw e;
        ctx.cache = "hit";
        return jsonResponse(req, mirrorIndexJson(versions), "hit");
      }
      const local = await listCachedPlatforms(config.cacheDir, p, version);
      if (local.length === 0) throw e;
      for (const a of local) {
        if (!a.meta.h1) packages.ensureH1(p, version, a.platform).catch(() => {});
      }
      ctx.cache = "hit";
      return jsonResponse(
        req,
        mirrorVersionJson(local.map((a) => ({
          platform: `${a.platform.os}_${a.platform.arch}`,
          url: a.filename,
          hashes: [...(a.meta.h1 ? [a.meta.h1] : []), `zh:${a.meta.sha256}`],
        }))),
        "hit",
      );
    }
  }

  async function mirrorVersion(req: Request, ctx: RequestContext, p: ProviderRef, version: string) {
    const entry = await metadata.versionEntry(p, version);
    const platforms = entry.value.platforms ?? [];
    if (platforms.length === 0) {
      throw new UpstreamError(
        `upstream ${p.hostname} lists ${p.namespace}/${p.type} ${version} with no platforms`,
      );
    }
    const statuses: Array<CacheStatus | undefined> = [entry.status];
    const sums = await sumsFor(p, version, platforms[0]!);
    statuses.push(sums.status);
    const archives: MirrorArchive[] = [];
    for (const pl of platforms) {
      const filename = archiveFilename(p.type, version, pl);
      let zh = sums.map?.get(filename);
      if (!zh) {
        const dl = await metadata.download(p, version, pl);
        statuses.push(dl.status);
        zh = dl.value.doc.shasum.toLowerCase();
      }
      const hashes: string[] = [];
      const meta = await packages.meta(p, version, pl);
      if (meta?.h1) hashes.push(meta.h1);
      else if (meta) packages.ensureH1(p, version, pl).catch(() => {});
      hashes.push(`zh:${zh}`);
      archives.push({ platform: `${pl.os}_${pl.arch}`, url: filename, hashes });
    }
    ctx.cache = worst(...statuses);
    return jsonResponse(req, mirrorVersionJson(archives), ctx.cache);
  }

  async function archive(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ) {
    let cached = await packages.open(p, version, pl);
    if (!cached) {
      // Another process (warm, import) may have stored it since we last looked.
      packages.refs.forget(refKeys.archive(p, version, pl));
      cached = await packages.open(p, version, pl);
    }
    if (cached) {
      ctx.cache = "hit";
      await holdForServing(cached);
      return serveFile(req, {
        file: cached.file,
        size: cached.size,
        mtime: cached.mtime,
        sha256: cached.meta.sha256,
        contentType: "application/zip",
      }, { "x-repoxy-cache": "hit" });
    }
    if (config.offline) {
      throw new NotFoundError(
        `${archiveFilename(p.type, version, pl)} is not cached and this mirror is offline`,
      );
    }
    let d = packages.inflight(p, version, pl);
    if (!d) {
      const dl = await metadata.download(p, version, pl);
      const client = metadata.client(p.hostname);
      d = packages.fetch(p, version, pl, {
        client,
        url: new URL(dl.value.doc.download_url, dl.value.url),
        expectedSha256: dl.value.doc.shasum,
        signal: shutdown.signal,
      });
      if (quota) {
        const stored = d.finalPath;
        d.done.then(() => quota.afterStore(stored), () => {});
      }
    }
    await d.ready;
    ctx.cache = "miss";
    const headers = new Headers({ "content-type": "application/zip", "x-repoxy-cache": "miss" });
    if (d.expectedSize !== undefined) headers.set("content-length", String(d.expectedSize));
    if (req.method === "HEAD") return new Response(null, { status: 200, headers });
    return new Response(d.reader(), { status: 200, headers });
  }

  async function registryVersions(req: Request, ctx: RequestContext, p: ProviderRef) {
    const got = await metadata.versions(p);
    ctx.cache = got.status;
    return jsonResponse(req, got.value.raw, got.status);
  }

  function providerPath(p: ProviderRef) {
    return `${p.hostname}/${p.namespace}/${p.type}`;
  }

  async function registryDownload(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ) {
    const dl = await metadata.download(p, version, pl);
    ctx.cache = dl.status;
    const base = config.publicUrl ?? "/";
    const body = rewriteDownloadDoc(dl.value.raw, {
      download_url: `${base}${providerPath(p)}/${archiveFilename(p.type, version, pl)}`,
      shasums_url: `${base}v1/providers/${providerPath(p)}/${version}/SHA256SUMS`,
      shasums_signature_url: `${base}v1/providers/${providerPath(p)}/${version}/SHA256SUMS.sig`,
    });
    return jsonResponse(req, body, dl.status);
  }

  async function registrySums(
    req: Request,
    ctx: RequestContext,
    p: ProviderRef,
    version: string,
    sig: boolean,
  ) {
    const entry = await metadata.versionEntry(p, version);
    const pl = entry.value.platforms?.[0];
    if (!pl) throw new NotFoundError(`${providerPath(p)} ${version} lists no platforms`);
    const dl = await metadata.download(p, version, pl);
    const s = await metadata.sums(p, version, dl.value);
    ctx.cache = worst(entry.status, dl.status, s.status);
    const bytes = sig ? s.value.signature : s.value.sums;
    if (!bytes) {
      throw new NotFoundError(`upstream ${p.hostname} offers no signature for ${version}`);
    }
    const headers = new Headers({
      "content-type": sig ? "application/octet-stream" : "text/plain; charset=utf-8",
      "content-length": String(bytes.length),
      "cache-control": "public, max-age=31536000, immutable",
      "x-repoxy-cache": ctx.cache,
    });
    return new Response(req.method === "HEAD" ? null : bytes as BodyInit, { status: 200, headers });
  }

  function wellKnown(req: Request): Response {
    return jsonResponse(
      req,
      JSON.stringify({ "providers.v1": "/v1/providers/" }) + "\n",
      undefined,
      300,
    );
  }

  function health(req: Request): Response {
    const h = new Headers(JSON_HEADERS);
    h.set("cache-control", "no-store");
    return new Response(
      req.method === "HEAD" ? null : JSON.stringify({ status: "ok", version: VERSION }) + "\n",
      {
        status: 200,
        headers: h,
      },
    );
  }

  async function route(req: Request, ctx: RequestContext): Promise<Response> {
    const url = new URL(req.url);
    const r = parseRoute(url.pathname, config.defaultUpstream);
    if (!r) throw new NotFoundError(`nothing is served at ${url.pathname}`);
    ctx.route = r.kind;
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `method ${req.method} is not allowed; use GET or HEAD`, {
        allow: "GET, HEAD",
      });
    }
    if ("provider" in r) metadata.client(r.provider.hostname); // 404 for unknown registries, before any work
    switch (r.kind) {
      case "wellKnown":
        return wellKnown(req);
      case "health":
        return health(req);
      case "mirrorIndex":
        return await offlineFallback(
          req,
          ctx,
          r.provider,
          undefined,
          () => mirrorIndex(req, ctx, r.provider),
        );
      case "mirrorVersion":
        return await offlineFallback(
          req,
          ctx,
          r.provider,
          r.version,
          () => mirrorVersion(req, ctx, r.provider, r.version),
        );
      case "archive":
        return await archive(req, ctx, r.provider, r.version, r);
      case "registryVersions":
        return await registryVersions(req, ctx, r.provider);
      case "registryDownload":
        return await registryDownload(req, ctx, r.provider, r.version, r);
      case "registrySums":
        return await registrySums(req, ctx, r.provider, r.version, r.signature);
    }
  }

  function accessLog(
    req: Request,
    ctx: RequestContext,
    status: number,
    bytes: number,
    started: number,
    note?: string,
  ) {
    const url = new URL(req.url);
    log.info("request", {
      method: req.method,
      path: url.pathname,
      status,
      bytes,
      ms: Math.round((performance.now() - started) * 10) / 10,
      cache: ctx.cache ?? "-",
      ...(note ? { note } : {}),
    });
  }

  /** Wraps a body so the access log line is written when it has been sent (or abandoned). */
  function countedBody(
    body: ReadableStream<Uint8Array>,
    done: (bytes: number, note?: string) => void,
  ) {
    const reader = body.getReader();
    let bytes = 0;
    let finished = false;
    const finish = (note?: string) => {
      if (!finished) {
        finished = true;
        done(bytes, note);
      }
    };
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { value, done: end } = await reader.read();
          if (end) {
            finish();
            controller.close();
            return;
          }
          bytes += value.length;
          controller.enqueue(value);
        } catch (e) {
          finish(`body failed: ${(e as Error).message}`);
          controller.error(e);
        }
      },
      async cancel(reason) {
        finish("client went away");
        await reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
  }

  async function handle(req: Request): Promise<Response> {
    const started = performance.now();
    const ctx: RequestContext = { route: "none", cache: undefined };
    let res: Response;
    try {
      res = await route(req, ctx);
    } catch (e) {
      const status = toErrorStatus(e);
      if (status >= 500 && !(e instanceof HttpError)) {
        log.error("internal error", {
          path: new URL(req.url).pathname,
          error: (e as Error)?.stack ?? String(e),
        });
      }
      const message = e instanceof HttpError || e instanceof BadPathError
        ? e.message
        : "internal error; see the server log";
      res = errorResponse(status, message, e instanceof HttpError ? e.headers : {});
    }
    if (res.body) {
      const body = countedBody(
        res.body,
        (bytes, note) => accessLog(req, ctx, res.status, bytes, started, note),
      );
      return new Response(body, { status: res.status, headers: res.headers });
    }
    accessLog(req, ctx, res.status, 0, started);
    return res;
  }

  return {
    config,
    log,
    packages,
    metadata,
    handle,
    async settle() {
      await packages.settle();
      await quota?.idle();
    },
    async close() {
      shutdown.abort();
      await packages.settle();
      await quota?.idle();
    },
  };
}
