/**
 * Edge → central chaining (issue 13 point 6), with two real Repoxy processes
 * over HTTPS and the real terraform: the edge's config names the central
 * once (`via` with the token the central's `auth` accepts), the central's
 * upstream is the fake origin registry.
 *
 * Between them sits a transparent TLS relay owned by the test: it records
 * what the edge sends the central (the token) and, on demand, flips a byte of
 * the archives the central serves — a tampered central.
 */
import { createApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { assert, assertEquals, assertMatch, assertNotEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { ROOT, writeConfig } from "./_cli.ts";
import { exists, sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import { makeTestTls, type TestTls } from "./_tls.ts";
import {
  findTerraform,
  parseLockFile,
  requiredProvidersTf,
  runTerraform,
  skip,
} from "./_terraform.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";

const NAME = "edge chained to a central Repoxy: terraform init in both protocols, " +
  "one origin fetch, tampered central refused, central down served, central token";

// Decided before registration, so a missing terraform is reported as ignored, never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

const TOKEN = "edge-site-berlin-0123456789";
const PLATFORM = `linux_${Deno.build.arch === "aarch64" ? "arm64" : "amd64"}`;
const MAIN = join(ROOT, "main.ts");

/** The transparent relay in front of the central (see the module doc). */
interface Relay {
  url: string;
  /** Requests the edge sent: path and Authorization header. */
  seen: Array<{ path: string; authorization: string | null }>;
  /** Flip one byte of every `.zip` body the central sends. */
  tamper: boolean;
  stop(): Promise<void>;
}

function startRelay(tls: TestTls, central: string): Relay {
  const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
  const relay: Relay = {
    url: "",
    seen: [],
    tamper: false,
    stop: async () => {
      await server.shutdown();
      client.close();
    },
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: tls.certPem,
    key: tls.keyPem,
    onListen() {},
  }, async (req) => {
    const url = new URL(req.url);
    relay.seen.push({ path: url.pathname, authorization: req.headers.get("authorization") });
    const headers = new Headers(req.headers);
    headers.delete("host");
    let res: Response;
    try {
      res = await fetch(new URL(url.pathname + url.search, central), {
        headers,
        redirect: "manual",
        client,
      });
    } catch {
      return new Response("central unreachable", { status: 502 });
    }
    if (!relay.tamper || !url.pathname.endsWith(".zip") || res.status !== 200) return res;
    const body = new Uint8Array(await res.arrayBuffer());
    body[Math.floor(body.length / 2)]! ^= 0xff; // same length: only the hash can tell
    const out = new Headers(res.headers);
    out.set("content-length", String(body.length));
    return new Response(body, { status: 200, headers: out });
  });
  relay.url = `https://127.0.0.1:${server.addr.port}/`;
  return relay;
}

const archivePath = (cacheDir: string, type: string, version: string, platform: string) =>
  join(
    cacheDir,
    "packages/registry.terraform.io/example",
    type,
    `terraform-provider-${type}_${version}_${platform}.zip`,
  );

/** Origin fetches of archives: GETs of the file itself on the fake's release host (after its redirect). */
const originFetches = (fake: FakeRegistry, filename?: string) =>
  fake.count((r) =>
    r.server === "release" && r.method === "GET" && r.path.startsWith("/files/") &&
    (filename ? r.path.endsWith("/" + filename) : r.path.endsWith(".zip"))
  );

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  const centralCache = join(dir.path, "central-cache");
  const edgeCache = join(dir.path, "edge-cache");
  const serve = (config: string, env: Record<string, string> = {}) =>
    spawnRepoxy(Deno.execPath(), [
      "run",
      "--config",
      join(ROOT, "deno.json"),
      "-P=serve",
      MAIN,
      "serve",
      "--config",
      config,
    ], { env: { NO_COLOR: "1", ...env } });

  await Deno.mkdir(join(dir.path, "central"));
  const central = await serve(
    await writeConfig(join(dir.path, "central"), {
      listen: "127.0.0.1:0",
      cacheDir: centralCache,
      tls: { cert: tls.certPath, key: tls.keyPath },
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
      auth: { tokens: [{ name: "edge-berlin", token: TOKEN }] },
    }),
  );
  const relay = startRelay(tls, central.url);
  await Deno.mkdir(join(dir.path, "edge"));
  await Deno.writeTextFile(join(dir.path, "edge", "central.token"), TOKEN + "\n");
  // The whole chaining config: no upstreams (the two public registries, both
  // through the central), no egressAllow (the central is a configured upstream).
  const edge = await serve(
    await writeConfig(join(dir.path, "edge"), {
      listen: "127.0.0.1:0",
      cacheDir: edgeCache,
      tls: { cert: tls.certPath, key: tls.keyPath },
      via: { url: relay.url, token: "file:central.token" },
      // Every version list is due for revalidation: with the central down,
      // the edge must serve what it holds (stale), not a fresh copy.
      metadataTtl: 0,
    }),
    // The edge trusts the central's CA as a deployment would (DENO_CERT).
    { DENO_CERT: tls.caCertPath },
  );
  const ca = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
  let stopped = false;
  try {
    // The start-up line says where the upstreams are reached.
    assert(
      edge.stderr.concat(edge.stdout).some((l) =>
        l.includes("repoxy started") && l.includes(`via=${relay.url}`)
      ),
      "the start-up line names the central",
    );
    const mainTf = requiredProvidersTf([
      { name: "alpha", source: "example/alpha", version: "1.1.0" },
      { name: "beta", source: "registry.terraform.io/example/beta", version: ">= 2.0.0" },
    ]);
    const init = async (name: string, cliConfig: string) => {
      const work = join(dir.path, name);
      await Deno.mkdir(work);
      await Deno.writeTextFile(join(work, "main.tf"), mainTf);
      const r = await runTerraform(["init", "-input=false", "-no-color"], {
        cwd: work,
        cliConfig,
        home: work,
        caCertFile: tls.caCertPath,
      });
      assertEquals(r.code, 0, `terraform init (${name}) failed:\n${r.stdout}\n${r.stderr}`);
      return { r, lock: await Deno.readTextFile(join(work, ".terraform.lock.hcl")) };
    };
    const hostBlock = (providersV1: string) =>
      `host "registry.terraform.io" {\n  services = {\n    "providers.v1" = "${providersV1}"\n  }\n}\n`;

    // The reference: terraform straight at the origin registry.
    const direct = await init("direct", hostBlock(`${fake.registryUrl}/v1/providers/`));
    const atStart = originFetches(fake);
    const perFile = new Map(
      fake.archives.map((a) => [a.filename, originFetches(fake, a.filename)]),
    );

    // 1. Network mirror protocol through the edge, every cache cold.
    const mirror = await init(
      "mirror",
      `provider_installation {\n  network_mirror {\n    url = "${edge.url}"\n  }\n}\n`,
    );
    const directLock = parseLockFile(direct.lock);
    for (const [addr, locked] of parseLockFile(mirror.lock)) {
      const want = directLock.get(addr)!;
      assertEquals(locked.version, want.version, addr);
      // The mirror protocol gives terraform this platform's h1: only; it is the direct one.
      assert(locked.hashes.length > 0 && locked.hashes.every((h) => want.hashes.includes(h)));
      assert(locked.hashes.some((h) => h.startsWith("h1:")), mirror.lock);
    }
    // One origin fetch per archive, and the archive is in both caches, byte-identical.
    assertEquals(originFetches(fake) - atStart, 2, "one origin fetch per archive (alpha, beta)");
    for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
      const a = fake.archive(type, version, PLATFORM);
      assertEquals(originFetches(fake, a.filename) - perFile.get(a.filename)!, 1, a.filename);
      for (const cache of [centralCache, edgeCache]) {
        const p = archivePath(cache, type, version, PLATFORM);
        assertEquals(sha256Hex(await readWhenThere(p)), a.sha256, p);
      }
    }

    // 2. Registry protocol through the edge: the client checks the ORIGIN's
    // signature (passed through edge and central) and the lock is the direct one.
    const registry = await init(
      "registry",
      hostBlock(`${edge.url}v1/providers/registry.terraform.io/`),
    );
    const keyId = fake.signingKey.keyId.toUpperCase();
    assertMatch(
      registry.r.stdout,
      new RegExp(`Installed example/alpha v1\\.1\\.0 \\(self-signed, key ID ${keyId}\\)`),
    );
    assertEquals(registry.lock, direct.lock);
    // The edge itself verified SHA256SUMS against the origin's key, passed through by the central.
    assert(
      edge.stderr.concat(edge.stdout).some((l) =>
        l.includes("SHA256SUMS signature verified") && l.toUpperCase().includes(keyId)
      ),
      "the edge verified the origin's signature",
    );
    assertEquals(originFetches(fake) - atStart, 2, "archives came from the edge's cache");

    // 3. The central's token: every API request the edge made carried it, and
    // the central answers nothing without it.
    const api = relay.seen.filter((s) =>
      !s.path.endsWith(".zip") && !s.path.includes("SHA256SUMS")
    );
    assert(api.length > 0);
    for (const s of api) assertEquals(s.authorization, `Bearer ${TOKEN}`, s.path);
    const bare = await fetch(
      `${central.url}v1/providers/registry.terraform.io/example/alpha/versions`,
      {
        client: ca,
      },
    );
    await bare.body?.cancel();
    assertEquals(bare.status, 401);

    // An edge with a token the central does not accept gets nothing and says which key is wrong.
    {
      const log = memoryLogger();
      const app = await createApp(
        await buildConfig({
          cacheDir: join(dir.path, "wrong-token-cache"),
          via: { url: central.url, token: "not-the-central-token-0000" },
        }),
        {
          log,
          fetch: (input, init) =>
            fetch(input, { client: ca, ...init } as RequestInit & { client: Deno.HttpClient }),
        },
      );
      try {
        const res = await app.handle(
          new Request("http://edge.test/v1/providers/registry.terraform.io/example/alpha/versions"),
        );
        const text = await res.text();
        assertEquals(res.status, 403, text);
        assertMatch(text, /rejected the token configured as via\.token/);
        // The operator is told which key to fix, in the log and on the status page.
        assert(log.records.some((r) => r.configKey === "via.token"), "warning names via.token");
        const page = await (await app.handle(new Request("http://edge.test/"))).text();
        assertMatch(page, /credentials refused.*HTTP 401: via\.token was rejected/s);
      } finally {
        await app.close();
      }
    }

    // 4. A central that serves a tampered archive: the edge refuses it against
    // the origin's signed SHA256SUMS; the client never gets the bad bytes.
    const other = fake.archive("alpha", "1.1.0", "darwin_arm64");
    const otherUrl = `${edge.url}registry.terraform.io/example/alpha/${other.filename}`;
    relay.tamper = true;
    let got = new Uint8Array();
    let status = 0;
    try {
      const res = await fetch(otherUrl, { client: ca });
      status = res.status;
      got = new Uint8Array(await res.arrayBuffer());
    } catch { /* the edge cut the body: the client saw an error, not an archive */ }
    relay.tamper = false;
    assert(
      status !== 200 || got.length < other.bytes.length,
      `the edge delivered ${got.length} bytes with status ${status}`,
    );
    assertNotEquals(sha256Hex(got), sha256Hex(tampered(other.bytes)));
    assert(!await exists(archivePath(edgeCache, "alpha", "1.1.0", "darwin_arm64")));
    assert(
      edge.stderr.concat(edge.stdout).some((l) => l.includes("archive checksum mismatch")),
      "the edge logs the refused archive",
    );
    // The honest central's copy is then taken, verified and kept.
    const honest = await fetch(otherUrl, { client: ca });
    assertEquals(honest.status, 200);
    assertEquals(sha256Hex(new Uint8Array(await honest.arrayBuffer())), other.sha256);
    assertEquals(
      originFetches(fake, other.filename),
      1,
      "the central fetched it from the origin once",
    );

    // 5. Central down: the edge serves what it holds, to a fresh client.
    const beforeDown = fake.count();
    assertEquals((await central.stop("SIGTERM")).code, 0);
    stopped = true;
    await relay.stop();
    const offline = await init(
      "central-down",
      hostBlock(`${edge.url}v1/providers/registry.terraform.io/`),
    );
    assertEquals(offline.lock, direct.lock);
    assertEquals(fake.count(), beforeDown);
  } finally {
    ca.close();
    if (!stopped) {
      await relay.stop().catch(() => {});
      await central.stop("SIGKILL");
    }
    await edge.stop("SIGKILL");
    await fake.stop();
  }
});

/**
 * The file's bytes once it is there: a cache commits an archive (rename)
 * just after its client got the last byte, and these are other processes.
 */
async function readWhenThere(path: string): Promise<Uint8Array> {
  for (let i = 0;; i++) {
    try {
      return await Deno.readFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound) || i >= 100) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** What the relay makes of an archive when tampering. */
function tampered(bytes: Uint8Array): Uint8Array {
  const b = bytes.slice();
  b[Math.floor(b.length / 2)]! ^= 0xff;
  return b;
}
