/**
 * A fake module registry for tests, on 127.0.0.1:0: service discovery,
 * `versions` and `{version}/download` (204 with `X-Terraform-Get`), and an
 * archive host under `/archives/` on the same server. Locations and
 * archives are the test's to set (and change) while it runs; every request
 * is recorded.
 * @module
 */

/** Options of {@link startFakeModuleRegistry}. */
export interface FakeModuleRegistryOptions {
  /** `ns/name/system` → version → location (`X-Terraform-Get`). */
  modules?: Record<string, Record<string, string>>;
  /** Answers the download as 200 + JSON `location` instead of 204 + header. */
  jsonLocation?: boolean;
  /** Awaited before an archive is answered (tests hold archives back). */
  beforeArchive?: (name: string) => Promise<void>;
}

/** A running fake module registry. */
export interface FakeModuleRegistry extends AsyncDisposable {
  /** `http://127.0.0.1:{port}/` */
  url: string;
  /** The `modules.v1` base for a direct `host` block. */
  modulesUrl: string;
  modules: Map<string, Map<string, string>>;
  /** Archive host: `/archives/{name}` → bytes. */
  archives: Map<string, Uint8Array>;
  requests: string[];
  /** Requests whose path starts with `prefix`. */
  count(prefix: string): number;
  close(): Promise<void>;
}

/** Starts the fake. */
export function startFakeModuleRegistry(
  opts: FakeModuleRegistryOptions = {},
): Promise<FakeModuleRegistry> {
  const modules = new Map(
    Object.entries(opts.modules ?? {}).map(([k, v]) => [k, new Map(Object.entries(v))]),
  );
  const archives = new Map<string, Uint8Array>();
  const requests: string[] = [];
  const json = (body: unknown, status = 200) =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const u = new URL(req.url);
    requests.push(u.pathname);
    if (u.pathname === "/.well-known/terraform.json") {
      return json({ "modules.v1": "/v1/modules/", "providers.v1": "/v1/providers/" });
    }
    if (u.pathname.startsWith("/archives/")) {
      await opts.beforeArchive?.(u.pathname.slice("/archives/".length));
      const bytes = archives.get(u.pathname.slice("/archives/".length));
      return bytes ? new Response(bytes as BodyInit) : new Response("no", { status: 404 });
    }
    const m = /^\/v1\/modules\/([^/]+\/[^/]+\/[^/]+)\/(?:versions|([^/]+)\/download)$/.exec(
      u.pathname,
    );
    const mod = m && modules.get(m[1]!);
    if (!m || !mod) return json({ errors: ["Not Found"] }, 404);
    if (m[2] === undefined) {
      return json({ modules: [{ versions: [...mod.keys()].map((version) => ({ version })) }] });
    }
    const loc = mod.get(m[2]);
    if (!loc) return json({ errors: ["Not Found"] }, 404);
    if (opts.jsonLocation) return json({ location: loc });
    return new Response(null, { status: 204, headers: { "x-terraform-get": loc } });
  });
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/`;
  const close = () => server.shutdown();
  return Promise.resolve({
    url,
    modulesUrl: `${url}v1/modules/`,
    modules,
    archives,
    requests,
    count: (prefix) => requests.filter((p) => p.startsWith(prefix)).length,
    close,
    [Symbol.asyncDispose]: close,
  });
}

/** One tar entry for {@link makeTarGz}. */
export interface TarEntry {
  name: string;
  content?: string | Uint8Array;
  /** "0" file (default), "5" directory, "2" symlink, "1" hard link. */
  type?: "0" | "5" | "2" | "1";
  linkname?: string;
  mode?: number;
}

/** A .tar.gz of exactly these entries, in this order (hostile names welcome). */
export async function makeTarGz(entries: TarEntry[]): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const body = typeof e.content === "string"
      ? enc.encode(e.content)
      : e.content ?? new Uint8Array();
    const h = new Uint8Array(512);
    const put = (s: string, at: number) => h.set(enc.encode(s), at);
    put(e.name, 0);
    put((e.mode ?? 0o644).toString(8).padStart(7, "0") + "\0", 100);
    put("0000000\0", 108);
    put("0000000\0", 116);
    put(body.length.toString(8).padStart(11, "0") + "\0", 124);
    put("00000000000\0", 136);
    put("        ", 148);
    put(e.type ?? "0", 156);
    if (e.linkname) put(e.linkname, 157);
    put("ustar\u000000", 257);
    let sum = 0;
    for (const b of h) sum += b;
    put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    parts.push(h, body, new Uint8Array((512 - (body.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  const tar = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    tar.set(p, off);
    off += p.length;
  }
  const gz = new Blob([tar]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(gz).arrayBuffer());
}
