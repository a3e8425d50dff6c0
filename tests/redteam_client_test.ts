/**
 * Red team, client and filesystem side (issue 10): attacks a hostile client
 * or local user would try that the feature tests did not, each pinned here
 * once it held. Handler-level where the socket is not the point.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { dirname, join } from "../lib/deps/path.ts";
import { makeTestApp, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { verifyCache } from "../lib/commands/verify.ts";
import { memoryLogger } from "../lib/base/log.ts";

const ALL = "rt-all-token-0123456789abcdef";
const OTHER_NS = "rt-otherns-token-0123456789abcdef";
const OTHER_UP = "rt-otherup-token-0123456789abcdef";
const AUTH = {
  tokens: [
    { name: "all", token: ALL },
    { name: "otherns", token: OTHER_NS, namespaces: ["visible"] },
    { name: "otherup", token: OTHER_UP, upstreams: ["private.example"] },
  ],
};
const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });

/** Every provider and module route, with NS for the namespace. */
const HIDEABLE = [
  "/registry.terraform.io/NS/alpha/index.json",
  "/registry.terraform.io/NS/alpha/1.1.0.json",
  "/registry.terraform.io/NS/alpha/terraform-provider-alpha_1.1.0_linux_amd64.zip",
  "/v1/providers/registry.terraform.io/NS/alpha/versions",
  "/v1/providers/NS/alpha/versions",
  "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/download/linux/amd64",
  "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/SHA256SUMS",
  "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/SHA256SUMS.sig",
  "/v1/modules/registry.terraform.io/NS/net/aws/versions",
  "/v1/modules/registry.terraform.io/NS/net/aws/1.0.0/download",
];

/** Status, headers and body of an answer, for comparing two answers whole. */
async function whole(res: Response): Promise<string> {
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).sort().join("\n");
  return `${res.status}\n${headers}\n\n${await res.text()}`;
}

Deno.test("a provider a token may not see answers byte for byte like one the upstream lacks", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS, config: { auth: AUTH } });
  // `example/alpha` exists but is outside the token's rules; `visible/alpha` (same
  // length, inside the rules) does not exist upstream.
  for (const route of HIDEABLE) {
    for (const method of ["GET", "HEAD"]) {
      const init = { method, ...bearer(OTHER_NS) };
      const hidden = await whole(await f.get(route.replace("NS", "example"), init));
      const missing = await whole(await f.get(route.replace("NS", "visible"), init));
      assertEquals(hidden.replaceAll("example", "visible"), missing, `${method} ${route}`);
      assertEquals(hidden.split("\n")[0], "404");
    }
  }
});

Deno.test("offline: a hidden provider that is cached answers like one that is not", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS, config: { auth: AUTH } });
  // Cache everything of example/alpha 1.1.0 linux_amd64 through the registry protocol.
  const dl = await f.get(
    "/v1/providers/registry.terraform.io/example/alpha/1.1.0/download/linux/amd64",
    bearer(ALL),
  );
  const doc = await dl.json() as Record<string, string>;
  for (const key of ["download_url", "shasums_url", "shasums_signature_url"]) {
    const res = await f.get(doc[key]!);
    assertEquals(res.status, 200, key);
    await res.arrayBuffer();
  }
  await f.app.settle();
  await using t = await makeTestApp(f.fake, f.config.cacheDir, { auth: AUTH, offline: true });
  const seen = await t.get("/registry.terraform.io/example/alpha/index.json", bearer(ALL));
  assertEquals(seen.status, 200, "cached, and served offline to a token that may see it");
  await seen.arrayBuffer();
  for (const route of HIDEABLE) {
    for (const method of ["GET", "HEAD"]) {
      const init = { method, ...bearer(OTHER_NS) };
      const hidden = await whole(await t.get(route.replace("NS", "example"), init));
      const missing = await whole(await t.get(route.replace("NS", "visible"), init));
      assertEquals(hidden.replaceAll("example", "visible"), missing, `${method} ${route}`);
    }
  }
});

Deno.test("the status page shows a token only what its rules let it see; metrics refuse a ruled token", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS, config: { auth: AUTH } });
  // Cache one archive of example/alpha, through a token that may see it.
  const doc = await f.get("/registry.terraform.io/example/alpha/1.1.0.json", bearer(ALL));
  const { archives } = await doc.json() as { archives: Record<string, { url: string }> };
  const zip = await f.get(`/registry.terraform.io/example/alpha/${archives.linux_amd64!.url}`);
  assertEquals(zip.status, 200);
  await zip.arrayBuffer();

  // The archive is recorded once its commit finished, just after the body ended.
  let fullText = "";
  for (let i = 0; i < 200 && !fullText.includes("alpha"); i++) {
    if (i) await new Promise((r) => setTimeout(r, 10));
    const full = await f.get("/", bearer(ALL));
    assertEquals(full.status, 200);
    fullText = await full.text();
  }
  assert(fullText.includes("alpha"), "the cached provider is listed for a token without rules");
  assert(fullText.includes("registry.terraform.io"));
  assert(fullText.includes("hit ratio") && fullText.includes(f.dir.path));

  for (const token of [OTHER_NS, OTHER_UP]) {
    const page = await f.get("/", bearer(token));
    assertEquals(page.status, 200);
    const text = await page.text();
    assert(!text.includes("alpha"), "a hidden provider is not listed");
    // Activity over every provider (hit ratios, downloads in flight) and the
    // cache path would tell that hidden ones are in use.
    assert(!text.includes("hit ratio") && !text.includes("Downloads in flight"));
    assert(!text.includes(f.dir.path), "nor the cache dir");
    if (token === OTHER_UP) {
      assert(!text.includes("registry.terraform.io"), "nor a hidden upstream");
    }
    const m = await f.get("/-/metrics", bearer(token));
    assertEquals(m.status, 403);
    const body = await m.text();
    assert(!body.includes("registry.terraform.io") && !body.includes("alpha"));
  }
  const m = await f.get("/-/metrics", bearer(ALL));
  assertEquals(m.status, 200);
  assert((await m.text()).includes("registry.terraform.io"));
});

/** The names in a directory. */
async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** `mkfifo path`: a FIFO blocks whoever opens it for reading until a writer comes. */
async function mkfifo(path: string): Promise<void> {
  const out = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert(out.success, "mkfifo failed");
}

/** `p`, or an error once `ms` passed (a hang is a failure, not a stuck test). */
async function notHung<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`${what}: no answer (hung)`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("a planted refs file (FIFO, link to /dev/zero or outside, oversized) is never read: fetched again instead", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cache = join(dir.path, "cache");
  const refsFile = join(cache, "refs/registry.terraform.io/example/alpha/versions.json");
  await Deno.mkdir(dirname(refsFile), { recursive: true });
  // A fresh, well-formed envelope naming a version the upstream never listed.
  const forged = (pad: number) =>
    JSON.stringify({
      fetchedAt: Date.now(),
      url: `${fake.registryUrl}example/alpha/versions`,
      body: JSON.stringify({ versions: [{ version: "9.9.9", protocols: ["5.0"], platforms: [] }] }),
    }) + " ".repeat(pad);
  const outside = join(dir.path, "outside.json");
  await Deno.writeTextFile(outside, forged(0));
  const fifo = join(dir.path, "fifo");
  await mkfifo(fifo);
  const plants: Array<[string, () => Promise<void>]> = [
    ["a FIFO", () => mkfifo(refsFile)],
    ["a link to a FIFO", () => Deno.symlink(fifo, refsFile)],
    ["a link to /dev/zero", () => Deno.symlink("/dev/zero", refsFile)],
    ["a link to a file outside the cache", () => Deno.symlink(outside, refsFile)],
    // 4 MiB, past 2 × limits.metadataDocument (1 MiB) + 1 MiB.
    ["an oversized file", () => Deno.writeTextFile(refsFile, forged(4 * 2 ** 20))],
  ];
  for (const [what, plant] of plants) {
    await Deno.remove(refsFile).catch(() => {});
    await plant();
    await using t = await makeTestApp(fake, cache, { limits: { metadataDocument: "1MiB" } });
    const res = await notHung(t.get("/registry.terraform.io/example/alpha/index.json"), what);
    assertEquals(res.status, 200, what);
    const doc = await res.json() as { versions: Record<string, unknown> };
    assertEquals(Object.keys(doc.versions).sort(), ["1.0.0", "1.1.0"], what);
    assertEquals(t.upstream.filter((u) => u.url.endsWith("/alpha/versions")).length, 1, what);
  }
});

Deno.test("auth/url.key or auth/ planted as a link or FIFO: refused at start-up, nothing followed", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const auth = { tokens: [{ name: "all", token: ALL }] };
  // A key whose bytes the attacker knows, left readable by everyone.
  const known = join(dir.path, "known.key");
  await Deno.writeTextFile(known, "a".repeat(64) + "\n");
  await Deno.chmod(known, 0o644);
  const knownDir = join(dir.path, "knowndir");
  await Deno.mkdir(knownDir);
  await Deno.writeTextFile(join(knownDir, "url.key"), "b".repeat(64) + "\n");
  const cases: Array<[string, (authDir: string) => Promise<void>, RegExp]> = [
    ["url.key linked to a known file", async (d) => {
      await Deno.mkdir(d);
      await Deno.symlink(known, join(d, "url.key"));
    }, /url\.key is a symbolic link/],
    ["url.key a FIFO", async (d) => {
      await Deno.mkdir(d);
      await mkfifo(join(d, "url.key"));
    }, /url\.key is not a regular file/],
    ["auth/ linked elsewhere", (d) => Deno.symlink(knownDir, d), /auth is a symbolic link/],
  ];
  for (const [what, plant, message] of cases) {
    const cache = join(dir.path, crypto.randomUUID());
    await Deno.mkdir(cache);
    await plant(join(cache, "auth"));
    let err: Error | undefined;
    try {
      // Disposed if it started after all (the old code): the test then fails below.
      await using _t = await notHung(makeTestApp(fake, cache, { auth }), what);
    } catch (e) {
      err = e as Error;
    }
    assert(err, `${what}: started anyway`);
    assertMatch(err.message, message, what);
  }
  assertEquals((await Deno.stat(known)).mode! & 0o777, 0o644, "the link's target was not chmod-ed");
});

Deno.test("refs/<host> and packages/<host> planted as links: nothing read, created or written through them", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cache = join(dir.path, "cache");
  const outside = join(dir.path, "outside");
  await Deno.mkdir(join(outside, "example/alpha"), { recursive: true });
  await Deno.writeTextFile(
    join(outside, "example/alpha/versions.json"),
    JSON.stringify({
      fetchedAt: Date.now(),
      url: "https://x/",
      body: JSON.stringify({ versions: [{ version: "9.9.9", protocols: ["5.0"], platforms: [] }] }),
    }),
  );
  const before = await names(join(outside, "example/alpha"));
  await using t = await makeTestApp(fake, cache);
  // Planted while running (at start-up they are refused).
  await Deno.mkdir(join(cache, "refs"), { recursive: true });
  await Deno.symlink(outside, join(cache, "refs/registry.terraform.io"));
  const index = await t.get("/registry.terraform.io/example/alpha/index.json");
  assertEquals(index.status, 200);
  assertEquals(Object.keys((await index.json()).versions).sort(), ["1.0.0", "1.1.0"]);
  const doc = await t.get("/registry.terraform.io/example/alpha/1.1.0.json");
  assertEquals(doc.status, 200);
  await doc.arrayBuffer();
  assertEquals(
    await names(join(outside, "example/alpha")),
    before,
    "no directory or file was made through the link",
  );
  const pkgs = join(dir.path, "pkgs");
  await Deno.mkdir(pkgs);
  await Deno.mkdir(join(cache, "packages"), { recursive: true });
  await Deno.symlink(pkgs, join(cache, "packages/registry.terraform.io"));
  const zip = await t.get(
    "/registry.terraform.io/example/alpha/terraform-provider-alpha_1.1.0_linux_amd64.zip",
  );
  assertEquals(zip.status, 200, "served (passed through) all the same");
  const bytes = new Uint8Array(await zip.arrayBuffer());
  assertEquals(bytes, fake.archive("alpha", "1.1.0", "linux_amd64").bytes);
  assertEquals(await names(pkgs), [], "nothing was made through the packages link");
});

Deno.test("verify with quarantine/ planted as a link: the bad archive never leaves the cache through it", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS });
  const a = f.fake.archive("alpha", "1.1.0", "linux_amd64");
  const zip = await f.get(`/registry.terraform.io/example/alpha/${a.filename}`);
  assertEquals(zip.status, 200);
  await zip.arrayBuffer();
  await f.app.settle();
  const cache = f.config.cacheDir;
  const path = join(cache, "packages/registry.terraform.io/example/alpha", a.filename);
  const bytes = await Deno.readFile(path);
  bytes[bytes.length >> 1]! ^= 1;
  await Deno.writeFile(path, bytes);
  const outside = join(f.dir.path, "elsewhere");
  await Deno.mkdir(outside);
  await Deno.symlink(outside, join(cache, "quarantine"));

  const report = await verifyCache(cache, { log: memoryLogger() });
  assertEquals(report.mismatches.length, 1, "the flipped byte is found");
  assertMatch(report.mismatches[0]!.quarantined, /removed/);
  assertEquals(await names(outside), [], "nothing moved or written outside the cache");
  assertEquals(await Deno.lstat(path).catch(() => null), null, "the bad file is gone");
  // And the bad bytes are still never served: the next request gets good ones.
  const again = await f.get(`/registry.terraform.io/example/alpha/${a.filename}`);
  const got = new Uint8Array(await again.arrayBuffer());
  assertEquals(again.status, 200);
  assertEquals(got, a.bytes, "downloaded again, good bytes");
});

Deno.test("tmp/ or this process's temp folder replaced by a link while running: no temp file is written through it", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS });
  const cache = f.config.cacheDir;
  const tmp = join(cache, "tmp");
  const outside = join(f.dir.path, "outside-tmp");
  await Deno.mkdir(outside);
  const cases: Array<[string, () => Promise<void>, string]> = [
    ["own temp folder", async () => {
      // Our folder is the one with a lock file beside it.
      let own: string | undefined;
      for await (const e of Deno.readDir(tmp)) if (e.isDirectory) own = e.name;
      if (own) {
        // Background work (h1, upkeep) may make the folder again between the
        // two steps: plant until the link is what is there.
        for (let i = 0;; i++) {
          await Deno.remove(join(tmp, own), { recursive: true }).catch(() => {});
          try {
            await Deno.symlink(outside, join(tmp, own));
            break;
          } catch (e) {
            if (!(e instanceof Deno.errors.AlreadyExists) || i >= 20) throw e;
          }
        }
      }
    }, "1.1.0"],
    ["tmp/", async () => {
      await Deno.rename(tmp, join(f.dir.path, "old-tmp"));
      await Deno.symlink(outside, tmp);
    }, "1.0.0"],
  ];
  // One download first, so the temp folder exists.
  const first = await f.get(
    "/registry.terraform.io/example/beta/terraform-provider-beta_2.3.4_linux_amd64.zip",
  );
  assertEquals(first.status, 200);
  await first.arrayBuffer();
  for (const [what, plant, version] of cases) {
    await plant();
    // A temp file made and renamed away again still moves the directory's mtime.
    const before = (await Deno.stat(outside)).mtime!.getTime();
    await new Promise((r) => setTimeout(r, 20));
    const a = f.fake.archive("alpha", version, "linux_amd64");
    const res = await f.get(`/registry.terraform.io/example/alpha/${a.filename}`);
    assertEquals(res.status, 200, what);
    assertEquals(new Uint8Array(await res.arrayBuffer()), a.bytes, what);
    await f.app.settle();
    const found: string[] = [];
    for await (const e of Deno.readDir(outside)) found.push(e.name);
    assertEquals(found, [], `${what}: nothing written through the link`);
    assertEquals(
      (await Deno.stat(outside)).mtime!.getTime(),
      before,
      `${what}: nothing made there`,
    );
  }
});

Deno.test("a cached archive replaced by a FIFO or a device: never opened for long, never served, fetched again", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS });
  const a = f.fake.archive("alpha", "1.1.0", "linux_amd64");
  const url = `/registry.terraform.io/example/alpha/${a.filename}`;
  const path = join(f.config.cacheDir, "packages/registry.terraform.io/example/alpha", a.filename);
  for (const what of ["a FIFO", "a link to /dev/zero"]) {
    const warm = await f.get(url);
    assertEquals(warm.status, 200);
    await warm.arrayBuffer();
    await f.app.settle();
    await Deno.remove(path);
    if (what === "a FIFO") await mkfifo(path);
    else await Deno.symlink("/dev/zero", path);
    const res = await notHung(f.get(url), what);
    assertEquals(res.status, 200, what);
    assertEquals(new Uint8Array(await res.arrayBuffer()), a.bytes, what);
    await f.app.settle();
  }
});
