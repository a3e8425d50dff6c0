/**
 * The benchmark's origin registry: service discovery, `versions`, `download`
 * documents, SHA256SUMS with a real detached signature, and archives streamed
 * from files on disk. Every answer waits `latencyMs` first, and every archive
 * body is paced to `bandwidth` bytes per second (per response), so a cold miss
 * through Repoxy can be compared with fetching straight from here.
 *
 * Run it as its own process (`deno run -P=bench bench/upstream.ts spec.json`):
 * it prints `{"url": "..."}` on one stdout line once it listens, and stops on
 * SIGTERM or when stdin closes. `startBenchUpstream` is the same in-process.
 * @module
 */
import { makeSigningKey, signDetached } from "../tests/_pgp.ts";

/** One downloadable archive of a provider version. */
export interface UpstreamArchive {
  os: string;
  arch: string;
  /** File on disk with the zip bytes (several platforms may share one file). */
  path: string;
  sha256: string;
  size: number;
}

/** A provider the upstream publishes. */
export interface UpstreamProvider {
  namespace: string;
  type: string;
  versions: Array<{ version: string; archives: UpstreamArchive[] }>;
}

/** What the upstream serves and how slowly. */
export interface UpstreamSpec {
  providers: UpstreamProvider[];
  /** Archive bytes per second per response; 0 means unlimited. */
  bandwidth: number;
  /** Delay before every response, in ms. */
  latencyMs: number;
}

/** A running upstream. */
export interface BenchUpstream extends AsyncDisposable {
  url: string;
  /** Requests served, by kind. */
  stats: Record<string, number>;
  close(): Promise<void>;
}

const CHUNK = 64 * 1024;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** A file body paced to `bandwidth` bytes/s from the first byte on. */
function pacedFile(file: Deno.FsFile, bandwidth: number): ReadableStream<Uint8Array> {
  let sent = 0;
  let started = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (started === 0) started = performance.now();
      if (bandwidth > 0) {
        const due = started + (sent / bandwidth) * 1000;
        const wait = due - performance.now();
        if (wait >= 1) await sleep(wait);
      }
      const buf = new Uint8Array(CHUNK);
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      sent += n;
      controller.enqueue(n === CHUNK ? buf : buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  }, { highWaterMark: 0 });
}

/** Starts the upstream on 127.0.0.1 (port 0 = any free port). */
export async function startBenchUpstream(spec: UpstreamSpec, port = 0): Promise<BenchUpstream> {
  const key = await makeSigningKey("Bench Registry Signing Key");
  const stats: Record<string, number> = {};
  const sigCache = new Map<string, Promise<Uint8Array>>();
  let base = "";

  const find = (ns: string, type: string) =>
    spec.providers.find((p) => p.namespace === ns && p.type === type);
  const filename = (type: string, v: string, a: { os: string; arch: string }) =>
    `terraform-provider-${type}_${v}_${a.os}_${a.arch}.zip`;
  const sumsOf = (p: UpstreamProvider, v: string): Uint8Array | undefined => {
    const ver = p.versions.find((x) => x.version === v);
    if (!ver) return undefined;
    const lines = ver.archives.map((a) => `${a.sha256}  ${filename(p.type, v, a)}\n`);
    return new TextEncoder().encode(lines.join(""));
  };

  async function handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (spec.latencyMs > 0) await sleep(spec.latencyMs);
    const count = (k: string) => stats[k] = (stats[k] ?? 0) + 1;
    if (path === "/.well-known/terraform.json") {
      count("discovery");
      return json({ "providers.v1": "/v1/providers/", "modules.v1": "/v1/modules/" });
    }
    let m = /^\/v1\/providers\/([^/]+)\/([^/]+)\/versions$/.exec(path);
    if (m) {
      count("versions");
      const p = find(m[1]!, m[2]!);
      if (!p) return json({ errors: ["Not Found"] }, 404);
      return json({
        id: `${p.namespace}/${p.type}`,
        versions: p.versions.map((v) => ({
          version: v.version,
          protocols: ["5.0"],
          platforms: v.archives.map((a) => ({ os: a.os, arch: a.arch })),
        })),
        warnings: null,
      });
    }
    m = /^\/v1\/providers\/([^/]+)\/([^/]+)\/([^/]+)\/download\/([^/]+)\/([^/]+)$/.exec(path);
    if (m) {
      count("download");
      const [, ns, type, v, os, arch] = m as unknown as string[];
      const p = find(ns!, type!);
      const a = p?.versions.find((x) => x.version === v)?.archives.find((x) =>
        x.os === os && x.arch === arch
      );
      if (!p || !a) return json({ errors: ["Not Found"] }, 404);
      const dir = `${base}/files/${ns}/${type}/${v}`;
      return json({
        protocols: ["5.0"],
        os,
        arch,
        filename: filename(p.type, v!, a),
        download_url: `${dir}/${filename(p.type, v!, a)}`,
        shasums_url: `${dir}/SHA256SUMS`,
        shasums_signature_url: `${dir}/SHA256SUMS.sig`,
        shasum: a.sha256,
        signing_keys: {
          gpg_public_keys: [{ key_id: key.keyId, ascii_armor: key.publicKeyArmored }],
        },
      });
    }
    m = /^\/files\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(path);
    if (m) {
      const [, ns, type, v, file] = m as unknown as string[];
      const p = find(ns!, type!);
      if (!p) return new Response("not found", { status: 404 });
      const sums = sumsOf(p, v!);
      if (file === "SHA256SUMS" && sums) {
        count("sums");
        return new Response(sums as BodyInit);
      }
      if (file === "SHA256SUMS.sig" && sums) {
        count("sig");
        const k = `${ns}/${type}/${v}`;
        let sig = sigCache.get(k);
        if (!sig) sigCache.set(k, sig = signDetached(key.privateKeyArmored, sums));
        return new Response(await sig as BodyInit);
      }
      const a = p.versions.find((x) => x.version === v)?.archives.find((x) =>
        filename(p.type, v!, x) === file
      );
      if (!a) return new Response("not found", { status: 404 });
      count("archive");
      const f = await Deno.open(a.path, { read: true });
      return new Response(pacedFile(f, spec.bandwidth), {
        headers: { "content-type": "application/zip", "content-length": String(a.size) },
      });
    }
    return json({ errors: ["Not Found"] }, 404);
  }

  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, signal: ac.signal, onListen() {} },
    handle,
  );
  base = `http://127.0.0.1:${server.addr.port}`;
  const close = async () => {
    ac.abort();
    await server.finished;
  };
  return { url: base, stats, close, [Symbol.asyncDispose]: close };
}

if (import.meta.main) {
  const spec = JSON.parse(await Deno.readTextFile(Deno.args[0]!)) as UpstreamSpec;
  const up = await startBenchUpstream(spec, Number(Deno.args[1] ?? 0));
  // deno-lint-ignore no-console
  console.log(JSON.stringify({ url: up.url }));
  // Stop when the parent goes away (stdin closes) even if it never signals.
  for await (const _ of Deno.stdin.readable) { /* drain */ }
  await up.close();
}
