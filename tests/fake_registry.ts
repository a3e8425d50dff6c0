/**
 * A fake origin registry for tests: two real HTTP servers on 127.0.0.1:0.
 *
 * - the *registry* serves service discovery, `versions` and `download`
 *   documents (like registry.terraform.io);
 * - the *release host* serves the zips, SHA256SUMS and its detached signature
 *   (like releases.hashicorp.com or GitHub release assets), with archive URLs
 *   that redirect once, as GitHub's do.
 *
 * Every request is recorded so tests can assert how many upstream requests a
 * step caused. `intercept` lets a test inject faults.
 * @module
 */
import { createHash } from "../lib/deps/crypto.ts";
import { makeSigningKey, signDetached } from "./_pgp.ts";
import { makeProviderZip } from "./_zip.ts";

/** A provider the fake registry publishes. */
export interface FakeProviderSpec {
  namespace: string;
  type: string;
  versions: Array<{
    version: string;
    /** The archives published (each in SHA256SUMS, each with a download document). */
    platforms: string[];
    protocols?: string[];
    /**
     * What the `versions` document lists as `platforms` when it differs from
     * what is published (real registries get it wrong): names that were not
     * published answer 404 for their download document; `null` leaves the
     * `platforms` key out. Default: `platforms`.
     */
    listed?: string[] | null;
    /** Published platforms (in SHA256SUMS) whose download document answers 404 anyway. */
    hiddenDownloads?: string[];
  }>;
}

/** One recorded request. */
export interface RecordedRequest {
  server: "registry" | "release";
  method: string;
  path: string;
  headers: Headers;
}

/** Options of {@link startFakeRegistry}. */
export interface FakeRegistryOptions {
  providers: FakeProviderSpec[];
  /** Lets a test replace any answer: return a Response to use it, undefined to go on. */
  intercept?: (
    req: Request,
    server: "registry" | "release",
  ) => Response | undefined | Promise<Response | undefined>;
  /** Zip bytes override, by archive filename. */
  zipOverride?: (filename: string, zip: Uint8Array) => Uint8Array;
  /** Whether download_url redirects once before the file (default true). */
  redirectDownloads?: boolean;
  /**
   * Validators on `versions` documents, honoured in conditional requests
   * (304 on a matching `If-None-Match` / a not-older `If-Modified-Since`):
   * `etag`, `last-modified`, `both`, or `none` (default: plain 200s).
   * Last-Modified is the provider's last publication (second precision).
   */
  versionValidators?: "etag" | "last-modified" | "both" | "none";
  /** Extra fields merged into every download document (e.g. OpenTofu `packages`). */
  extraDownloadFields?: (
    spec: { namespace: string; type: string; version: string; os: string; arch: string },
  ) => Record<string, unknown>;
  /**
   * Makes the registry's API (`/v1/...`, not service discovery or the release
   * host) require `Authorization: Bearer <token>`, as a private registry
   * does: no Authorization header is answered 401, another token 403, both
   * with the registry's `{"errors": [...]}` body.
   */
  requireToken?: string;
  /**
   * Answers the legacy-namespace lookup `/v1/providers/-/{type}/versions` as
   * registry.terraform.io does (`id`, `versions`, `warnings`, `moved_to`) for
   * the first published provider of that type; other types are 404. Without
   * it the lookup is a 404, like a registry that never offered it.
   */
  legacyLookup?: boolean;
}

/** Everything about one published archive. */
export interface FakeArchive {
  namespace: string;
  type: string;
  version: string;
  os: string;
  arch: string;
  filename: string;
  bytes: Uint8Array;
  sha256: string;
}

/** A running fake registry. */
export interface FakeRegistry extends AsyncDisposable {
  /** Base URL of the registry (use as `upstreams.<host>.url`). */
  registryUrl: string;
  /** Base URL of the release host. */
  releaseUrl: string;
  /**
   * The smallest egress allowance Repoxy needs for this fake: the release
   * host is another loopback port, which the egress policy refuses by default.
   * Put it in the config as `egressAllow`.
   */
  egressAllow: string[];
  archives: FakeArchive[];
  /** SHA256SUMS bytes by `{ns}/{type}/{version}`. */
  sums: Map<string, Uint8Array>;
  /** Detached binary signatures by `{ns}/{type}/{version}`. */
  signatures: Map<string, Uint8Array>;
  signingKey: {
    publicKeyArmored: string;
    privateKeyArmored: string;
    keyId: string;
    fingerprint: string;
  };
  requests: RecordedRequest[];
  /** Number of recorded requests whose path satisfies `match`. */
  count(match?: (r: RecordedRequest) => boolean): number;
  /** Finds an archive. */
  archive(type: string, version: string, platform: string): FakeArchive;
  /**
   * Publishes a new version of a provider while the fake runs (archives,
   * signed SHA256SUMS, listed in `versions` from now on, new validators).
   */
  publish(
    namespace: string,
    type: string,
    version: { version: string; platforms: string[]; protocols?: string[] },
  ): Promise<void>;
  /** Stops both servers (idempotent). */
  stop(): Promise<void>;
}

function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Starts the fake registry and release host. */
export async function startFakeRegistry(opts: FakeRegistryOptions): Promise<FakeRegistry> {
  // Own provider records: publish() gives one a new version list, and specs
  // are often shared constants. (The lists themselves stay the caller's, who
  // may change them while the fake runs.)
  opts = { ...opts, providers: opts.providers.map((p) => ({ ...p })) };
  const signingKey = await makeSigningKey("Fake Registry Signing Key");
  const archives: FakeArchive[] = [];
  const sums = new Map<string, Uint8Array>();
  const signatures = new Map<string, Uint8Array>();
  /** Builds the archives, SHA256SUMS and signature of one version. */
  const addVersion = async (p: FakeProviderSpec, v: FakeProviderSpec["versions"][number]) => {
    const lines: string[] = [];
    for (const platform of v.platforms) {
      const [os, arch] = platform.split("_") as [string, string];
      const filename = `terraform-provider-${p.type}_${v.version}_${os}_${arch}.zip`;
      let bytes = await makeProviderZip(p.type, v.version, platform);
      if (opts.zipOverride) bytes = opts.zipOverride(filename, bytes);
      const a: FakeArchive = {
        namespace: p.namespace,
        type: p.type,
        version: v.version,
        os,
        arch,
        filename,
        bytes,
        sha256: sha256Hex(bytes),
      };
      archives.push(a);
      lines.push(`${a.sha256}  ${filename}`);
    }
    const sumsBytes = new TextEncoder().encode(lines.join("\n") + "\n");
    const key = `${p.namespace}/${p.type}/${v.version}`;
    sums.set(key, sumsBytes);
    signatures.set(key, await signDetached(signingKey.privateKeyArmored, sumsBytes));
  };
  for (const p of opts.providers) {
    for (const v of p.versions) await addVersion(p, v);
  }
  /**
   * Last publication per provider (`{ns}/{type}`), for Last-Modified: at
   * first a minute before the fake started (a strong validator at once).
   */
  const modified = new Map<string, number>();
  const startedAt = Math.floor(Date.now() / 1000) * 1000 - 60_000;

  const requests: RecordedRequest[] = [];
  const ac = new AbortController();
  let releaseUrl = "";

  const release = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      requests.push({ server: "release", method: req.method, path, headers: req.headers });
      const intercepted = await opts.intercept?.(req, "release");
      if (intercepted) return intercepted;
      // /redirect/{ns}/{type}/{version}/{filename} → 302 → /files/...
      let m = /^\/redirect\/(.+)$/.exec(path);
      if (m) {
        return new Response(null, {
          status: 302,
          headers: { location: `${releaseUrl}/files/${m[1]}` },
        });
      }
      m = /^\/files\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(path);
      if (!m) return new Response("not found", { status: 404 });
      const [, ns, type, version, file] = m as unknown as [string, string, string, string, string];
      const key = `${ns}/${type}/${version}`;
      if (file === "SHA256SUMS" && sums.has(key)) return new Response(sums.get(key)! as BodyInit);
      if (file === "SHA256SUMS.sig" && signatures.has(key)) {
        return new Response(signatures.get(key)! as BodyInit);
      }
      const a = archives.find((x) =>
        x.namespace === ns && x.type === type && x.version === version && x.filename === file
      );
      if (!a) return new Response("not found", { status: 404 });
      return new Response(a.bytes as BodyInit, {
        headers: { "content-type": "application/zip", "content-length": String(a.bytes.length) },
      });
    },
  );
  releaseUrl = `http://127.0.0.1:${release.addr.port}`;

  const registry = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      requests.push({ server: "registry", method: req.method, path, headers: req.headers });
      const intercepted = await opts.intercept?.(req, "registry");
      if (intercepted) return intercepted;
      if (path === "/.well-known/terraform.json") {
        return json({ "modules.v1": "/v1/modules/", "providers.v1": "/v1/providers/" });
      }
      if (opts.requireToken !== undefined && path.startsWith("/v1/")) {
        const auth = req.headers.get("authorization");
        if (auth === null) return json({ errors: ["Unauthorized"] }, 401);
        if (auth !== `Bearer ${opts.requireToken}`) return json({ errors: ["Forbidden"] }, 403);
      }
      const legacy = /^\/v1\/providers\/-\/([^/]+)\/versions$/.exec(path);
      if (legacy && opts.legacyLookup) {
        const p = opts.providers.find((x) => x.type === legacy[1]);
        if (!p) return json({ errors: ["Not Found"] }, 404);
        return json({
          id: `${p.namespace}/${p.type}`,
          versions: p.versions.map((v) => ({
            version: v.version,
            protocols: v.protocols ?? ["5.0"],
            platforms: [],
          })),
          warnings: null,
          moved_to: null,
        });
      }
      // One module, hashicorp/consul/aws 0.1.0, for the modules.v1 pass-through.
      if (path === "/v1/modules/hashicorp/consul/aws/versions") {
        return json({
          modules: [{ source: "hashicorp/consul/aws", versions: [{ version: "0.1.0" }] }],
        });
      }
      if (path === "/v1/modules/hashicorp/consul/aws/0.1.0/download") {
        return new Response(null, {
          status: 204,
          headers: { "x-terraform-get": "/archives/consul-0.1.0.tar.gz" },
        });
      }
      let m = /^\/v1\/providers\/([^/]+)\/([^/]+)\/versions$/.exec(path);
      if (m) {
        const p = opts.providers.find((x) => x.namespace === m![1] && x.type === m![2]);
        if (!p) return json({ errors: ["Not Found"] }, 404);
        const doc = {
          id: `${p.namespace}/${p.type}`,
          versions: p.versions.map((v) => {
            const listed = v.listed === undefined ? v.platforms : v.listed;
            return {
              version: v.version,
              protocols: v.protocols ?? ["5.0"],
              ...(listed === null ? {} : {
                platforms: listed.map((pl) => {
                  const [os, arch] = pl.split("_");
                  return { os, arch };
                }),
              }),
            };
          }),
          warnings: null,
        };
        return withValidators(req, JSON.stringify(doc), `${p.namespace}/${p.type}`);
      }
      m = /^\/v1\/providers\/([^/]+)\/([^/]+)\/([^/]+)\/download\/([^/]+)\/([^/]+)$/.exec(path);
      if (m) {
        const [, ns, type, version, os, arch] = m as unknown as [
          string,
          string,
          string,
          string,
          string,
          string,
        ];
        const a = archives.find((x) =>
          x.namespace === ns && x.type === type && x.version === version && x.os === os &&
          x.arch === arch
        );
        if (!a) return json({ errors: ["Not Found"] }, 404);
        const p = opts.providers.find((x) => x.namespace === ns && x.type === type)!;
        const v = p.versions.find((x) => x.version === version)!;
        if (v.hiddenDownloads?.includes(`${os}_${arch}`)) {
          return json({ errors: ["Not Found"] }, 404);
        }
        const dir = `${ns}/${type}/${version}`;
        const redirect = opts.redirectDownloads ?? true;
        return json({
          protocols: v.protocols ?? ["5.0"],
          os,
          arch,
          filename: a.filename,
          download_url: `${releaseUrl}/${redirect ? "redirect" : "files"}/${dir}/${a.filename}`,
          shasums_url: `${releaseUrl}/files/${dir}/SHA256SUMS`,
          shasums_signature_url: `${releaseUrl}/files/${dir}/SHA256SUMS.sig`,
          shasum: a.sha256,
          signing_keys: {
            gpg_public_keys: [{
              key_id: signingKey.keyId.toUpperCase(),
              ascii_armor: signingKey.publicKeyArmored,
              trust_signature: "",
              source: "Fake",
              source_url: null,
            }],
          },
          ...(opts.extraDownloadFields?.({ namespace: ns, type, version, os, arch }) ?? {}),
        });
      }
      return json({ errors: ["Not Found"] }, 404);
    },
  );

  /** A `versions` answer with the configured validators, or 304 when the request's condition holds. */
  function withValidators(req: Request, body: string, key: string): Response {
    const mode = opts.versionValidators ?? "none";
    const headers = new Headers({ "content-type": "application/json" });
    const etag = `"${sha256Hex(new TextEncoder().encode(body)).slice(0, 32)}"`;
    const lastModified = new Date(modified.get(key) ?? startedAt).toUTCString();
    if (mode === "etag" || mode === "both") headers.set("etag", etag);
    if (mode === "last-modified" || mode === "both") headers.set("last-modified", lastModified);
    const inm = req.headers.get("if-none-match");
    const ims = req.headers.get("if-modified-since");
    // RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since.
    const unchanged = headers.has("etag") && inm !== null
      ? inm.split(",").map((t) => t.trim()).includes(etag)
      : headers.has("last-modified") && ims !== null && Date.parse(ims) >= Date.parse(lastModified);
    if (unchanged) {
      headers.delete("content-type");
      return new Response(null, { status: 304, headers });
    }
    return new Response(body, { headers });
  }

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    ac.abort();
    await Promise.all([registry.finished, release.finished]);
  };

  return {
    registryUrl: `http://127.0.0.1:${registry.addr.port}`,
    releaseUrl,
    egressAllow: [new URL(releaseUrl).host],
    archives,
    sums,
    signatures,
    signingKey,
    requests,
    count: (match) => match ? requests.filter(match).length : requests.length,
    archive(type, version, platform) {
      const a = archives.find((x) =>
        x.type === type && x.version === version && `${x.os}_${x.arch}` === platform
      );
      if (!a) throw new Error(`fake registry has no ${type} ${version} ${platform}`);
      return a;
    },
    async publish(namespace, type, version) {
      const p = opts.providers.find((x) => x.namespace === namespace && x.type === type);
      if (!p) throw new Error(`fake registry has no provider ${namespace}/${type}`);
      await addVersion(p, version);
      p.versions = [...p.versions, version];
      // Last-Modified has second precision: a publication always moves it.
      const key = `${namespace}/${type}`;
      const now = Math.floor(Date.now() / 1000) * 1000;
      modified.set(key, Math.max(now, (modified.get(key) ?? startedAt) + 1000));
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
