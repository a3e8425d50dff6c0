/**
 * Bad input: generated paths and methods never give a 500 and never name a
 * file outside the cache dir. A seeded generator keeps failures reproducible.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join, resolve } from "../lib/deps/path.ts";
import { refKeys } from "../lib/cache/refs_store.ts";
import { parseRoute } from "../lib/protocol/paths.ts";
import { makeTestApp, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

/** Mulberry32: tiny seeded PRNG. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NASTY = [
  "..",
  ".",
  "%2e%2e",
  "%2E%2e",
  "%2f",
  "%5c",
  "%00",
  "\\",
  "..\\..",
  "\u0000",
  "%252e%252e",
  "…",
  "é",
  "%c0%ae%c0%ae",
  "a".repeat(300),
  "",
  " ",
  "index.json",
  "1.0.0.json",
  "terraform-provider-alpha_1.0.0_linux_amd64.zip",
  "terraform-provider-alpha_../../x_linux_amd64.zip",
  "v1",
  "providers",
  "modules",
  H,
  "example",
  "alpha",
  "1.0.0",
  "download",
  "linux",
  "amd64",
  "SHA256SUMS",
  "-",
  "healthz",
  "etc",
  "passwd",
  "xn--",
  "UPPER",
  "a:99999",
];

function generatePath(r: () => number): string {
  const n = 1 + Math.floor(r() * 8);
  const segs: string[] = [];
  for (let i = 0; i < n; i++) {
    const pick = r();
    if (pick < 0.6) segs.push(NASTY[Math.floor(r() * NASTY.length)]!);
    else {
      const len = Math.floor(r() * 12);
      let s = "";
      for (let j = 0; j < len; j++) s += String.fromCharCode(32 + Math.floor(r() * 95));
      segs.push(encodeURIComponent(s).replace(/%2F/g, r() < 0.5 ? "/" : "%2F"));
    }
  }
  return "/" + segs.join("/");
}

Deno.test("thousands of generated paths: never a 5xx, always JSON, nothing outside the cache", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake, dir } = t;
  const cacheRoot = resolve(dir.path);
  const r = rng(20261124);
  const statuses = new Map<number, number>();
  for (let i = 0; i < 3000; i++) {
    const path = generatePath(r);
    let url: URL;
    try {
      url = new URL(`http://mirror.test${path}`);
    } catch {
      continue; // not a URL a client could send
    }
    // Every route that parses must map to files inside the cache dir.
    try {
      const route = parseRoute(url.pathname, H);
      if (route && "provider" in route) {
        const keys = [refKeys.versions(route.provider)];
        if ("version" in route) keys.push(refKeys.sums(route.provider, route.version));
        if ("os" in route) keys.push(refKeys.archive(route.provider, route.version, route));
        for (const k of keys) {
          const p = resolve(join(cacheRoot, "refs", k));
          assert(p.startsWith(cacheRoot + "/refs/"), `${path} → ${p}`);
        }
        if (route.kind === "archive") {
          const p = resolve(
            t.app.cache.storage.pathOf(t.app.packages.keyOf(route.provider, route.version, route)),
          );
          assert(p.startsWith(cacheRoot + "/packages/"), `${path} → ${p}`);
        }
      }
    } catch { /* rejected paths are checked below through the handler */ }

    const method = r() < 0.9
      ? "GET"
      : ["HEAD", "POST", "PUT", "DELETE", "OPTIONS"][Math.floor(r() * 5)]!;
    const res = await t.app.handle(new Request(url, { method }));
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    assert(res.status < 500 || res.status === 502, `${method} ${path} → ${res.status}`);
    if (res.status >= 400) {
      assertEquals(res.headers.get("content-type"), "application/json", path);
      const body = await res.json();
      assert(Array.isArray(body.errors) && typeof body.errors[0] === "string", path);
    } else await res.body?.cancel();
  }
  await t.app.settle();
  // The generator must actually reach the interesting answers.
  for (const s of [400, 404, 405]) {
    assert((statuses.get(s) ?? 0) > 10, `status ${s}: ${statuses.get(s)}`);
  }
  assert(!statuses.has(500));
  // Nothing outside the configured registry was contacted.
  assert(
    t.upstream.every((u) =>
      u.url.startsWith(fake.registryUrl) || u.url.startsWith(fake.releaseUrl)
    ),
  );
});

Deno.test("raw requests over a socket: traversal attempts get 4xx JSON", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path, {
    upstreams: { [H]: { url: "http://127.0.0.1:9" } },
  });
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => t.app.handle(req),
  );
  for (
    const target of [
      "/../../../../etc/passwd",
      `/${H}/..%2f..%2fetc/passwd/index.json`,
      `/${H}/a/b/..\\..\\x.zip`,
      // A trailing slash is a 404 on a well-formed path, never a way past the traversal checks.
      `/${H}/../../etc/`,
      `/${H}/a/b/%2e%2e/`,
      `/${H}/a/b/..%5c/`,
    ]
  ) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(
      new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    conn.close();
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
    assert(status >= 400 && status < 500, `${target} → ${text.slice(0, 80)}`);
    assert(!text.includes("root:"), target);
  }
});
