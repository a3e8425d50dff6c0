/**
 * Client auth (config `auth`), handler level: bearer tokens, per-token rules
 * answered as "does not exist", signed archive / SHA256SUMS links that work
 * without credentials and only as issued, operator pages behind the tokens,
 * health open, the token never in a log line, no answer shared across tokens,
 * the signing key kept in the cache dir, and the start-up warning.
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { spawnRepoxy } from "./_process.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { openAccessWarning } from "../lib/commands/serve.ts";
import { loadUrlKey } from "../lib/auth/url_key.ts";
import { buildConfig } from "../lib/config/config.ts";
import {
  bytesOf,
  jsonOf,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const ALL = "all-token-0123456789abcdef";
const OTHER_NS = "otherns-token-0123456789abcdef";
const OTHER_UP = "otherup-token-0123456789abcdef";
const SCOPED = "scoped-token-0123456789abcdef";
const DROPPED = "dropped-token-0123456789abcdef";

const AUTH = {
  tokens: [
    { name: "all", token: ALL },
    // Stored as its hash only, as an operator would.
    {
      name: "otherns",
      sha256: createHash("sha256").update(OTHER_NS).digest("hex"),
      namespaces: ["other"],
    },
    { name: "otherup", token: OTHER_UP, upstreams: ["private.example"] },
    { name: "scoped", token: SCOPED, namespaces: ["registry.terraform.io/example"] },
    { name: "dropped", token: DROPPED },
  ],
};

const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
const ALPHA = "/registry.terraform.io/example/alpha";
const ZIP = "terraform-provider-alpha_1.1.0_linux_amd64.zip";

/** A fixture with auth on and a clock the test moves. */
async function authFixture(extra: Record<string, unknown> = {}) {
  const clock = { t: Date.UTC(2026, 0, 1) };
  const f = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { auth: AUTH, ...extra },
    deps: { now: () => clock.t },
  });
  return Object.assign(f, { clock });
}

async function expectStatus(res: Response, status: number): Promise<unknown> {
  const text = await res.text();
  assertEquals(res.status, status, text);
  return text;
}

/** The signed URL of a platform in a `{version}.json` answer. */
async function archiveUrl(res: Response, platform = "linux_amd64"): Promise<string> {
  const doc = await jsonOf(res) as { archives: Record<string, { url: string }> };
  return doc.archives[platform]!.url;
}

Deno.test("auth off (the default): open, and archive URLs are embedded bare", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS });
  assertEquals(f.config.auth, undefined);
  const res = await f.get(`${ALPHA}/1.1.0.json`);
  assertEquals(res.status, 200);
  assertEquals(await archiveUrl(res), ZIP);
});

Deno.test("no token or a wrong token: 401 with WWW-Authenticate, JSON body, no upstream call", async () => {
  await using f = await authFixture();
  const paths = [
    `${ALPHA}/index.json`,
    `${ALPHA}/1.1.0.json`,
    `${ALPHA}/${ZIP}`,
    "/v1/providers/registry.terraform.io/example/alpha/versions",
    "/v1/providers/registry.terraform.io/example/alpha/1.1.0/download/linux/amd64",
    "/v1/providers/registry.terraform.io/example/alpha/1.1.0/SHA256SUMS",
    "/v1/modules/registry.terraform.io/example/net/aws/versions",
    "/-/metrics",
    "/",
    "/no/such/thing",
    "/unconfigured.example/example/alpha/index.json",
  ];
  for (const path of paths) {
    for (
      const init of [{}, bearer("not-a-configured-token-000000"), {
        headers: { authorization: `Basic ${btoa(`x:${ALL}`)}` },
      }]
    ) {
      const res = await f.get(path, init);
      assertEquals(res.status, 401, path);
      assertMatch(res.headers.get("www-authenticate") ?? "", /^Bearer realm="repoxy"/);
      const body = await jsonOf(res) as { errors: string[] };
      assertMatch(body.errors[0]!, /token/);
      assert(!body.errors[0]!.includes("configured-token") && !body.errors[0]!.includes(ALL));
    }
  }
  const wrong = await f.get(`${ALPHA}/index.json`, bearer("not-a-configured-token-000000"));
  assertMatch(wrong.headers.get("www-authenticate")!, /error="invalid_token"/);
  await wrong.body?.cancel();
  assertEquals(f.upstream.length, 0, "nothing was asked upstream for an unauthenticated client");
  assertEquals(f.fake.count(), 0);
});

Deno.test("health, readiness and discovery stay open; metrics and status follow protectOps", async () => {
  await using f = await authFixture();
  for (const path of ["/-/healthz", "/-/readyz", "/.well-known/terraform.json"]) {
    await expectStatus(await f.get(path), 200);
  }
  await expectStatus(await f.get("/-/metrics"), 401);
  await expectStatus(await f.get("/"), 401);
  const m = await f.get("/-/metrics", bearer(ALL));
  const text = await expectStatus(m, 200) as string;
  assert(!text.includes(ALL), "metrics never show a token");
  await expectStatus(await f.get("/", bearer(OTHER_NS)), 200);

  await using open = await authFixture({ auth: { ...AUTH, protectOps: false } });
  await expectStatus(await open.get("/-/metrics"), 200);
  await expectStatus(await open.get("/"), 200);
  await expectStatus(await open.get(`${ALPHA}/index.json`), 401);
});

Deno.test("a valid token: metadata served, links signed, archive bytes through the link without credentials", async () => {
  await using f = await authFixture();
  const idx = await f.get(`${ALPHA}/index.json`, bearer(ALL));
  assertEquals(await jsonOf(idx), { versions: { "1.1.0": {}, "1.0.0": {} } });
  const url = await archiveUrl(await f.get(`${ALPHA}/1.1.0.json`, bearer(ALL)));
  assertMatch(url, new RegExp(`^${ZIP.replace(/\./g, "\\.")}\\?exp=\\d+&tok=all&sig=[\\w-]{43}$`));
  const exp = Number(new URL(url, "http://x/").searchParams.get("exp"));
  assertEquals(exp, Math.floor((f.clock.t + 3_600_000) / 1000), "expiry = now + urlTtl");

  const got = await f.get(`${ALPHA}/${url}`);
  assertEquals(got.status, 200);
  const bytes = await bytesOf(got);
  assertEquals(sha256Hex(bytes), f.fake.archive("alpha", "1.1.0", "linux_amd64").sha256);
  await f.app.settle();
  // A cache hit through the link, and HEAD, too.
  const hit = await f.get(`${ALPHA}/${url}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(hit)), sha256Hex(bytes));
  await expectStatus(await f.get(`${ALPHA}/${url}`, { method: "HEAD" }), 200);
  // Shared caches must not keep what a token (or a link) was given.
  for (
    const [path, init] of [
      [`${ALPHA}/index.json`, bearer(ALL)],
      [`${ALPHA}/1.1.0.json`, bearer(ALL)],
      [`${ALPHA}/${url}`, {}],
      [`${ALPHA}/${ZIP}`, bearer(ALL)],
    ] as const
  ) {
    const res = await f.get(path, init);
    assertEquals(res.status, 200);
    await res.body?.cancel();
    assertMatch(res.headers.get("cache-control")!, /^private\b/, path);
    assert(!/public/.test(res.headers.get("cache-control")!));
    assertMatch(res.headers.get("vary")!, /Authorization/);
  }
  // The bearer token alone opens the archive too.
  await expectStatus(await f.get(`${ALPHA}/${ZIP}`, bearer(ALL)), 200);
  // Without either: refused.
  await expectStatus(await f.get(`${ALPHA}/${ZIP}`), 401);

  // The access log names the client, never its token or the link's signature.
  const lines = JSON.stringify(f.log.records);
  for (const secret of [ALL, new URL(url, "http://x/").searchParams.get("sig")!]) {
    assert(!lines.includes(secret), "a secret reached the log");
  }
  assert(f.log.records.some((r) => r.msg === "request" && r.client === "all" && r.status === 200));
});

Deno.test("signed links: expired, tampered, for another path, revoked (token or rule), malformed → 403", async () => {
  await using f = await authFixture();
  const url = await archiveUrl(await f.get(`${ALPHA}/1.1.0.json`, bearer(ALL)));
  const q = new URL(url, "http://x/").searchParams;
  const sig = q.get("sig")!;
  const flip = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
  const refused = [
    // Tampered signature, expiry, token name.
    `${ALPHA}/${ZIP}?exp=${q.get("exp")}&tok=all&sig=${flip}`,
    `${ALPHA}/${ZIP}?exp=${Number(q.get("exp")) + 3600}&tok=all&sig=${sig}`,
    `${ALPHA}/${ZIP}?exp=${q.get("exp")}&tok=otherup&sig=${sig}`,
    // The signature of one archive used for another platform and another provider.
    `${ALPHA}/terraform-provider-alpha_1.1.0_darwin_arm64.zip?exp=${
      q.get("exp")
    }&tok=all&sig=${sig}`,
    `/registry.terraform.io/example/beta/terraform-provider-beta_2.3.4_linux_amd64.zip?exp=${
      q.get("exp")
    }&tok=all&sig=${sig}`,
    `/v1/providers/registry.terraform.io/example/alpha/1.1.0/SHA256SUMS?exp=${
      q.get("exp")
    }&tok=all&sig=${sig}`,
    // Malformed.
    `${ALPHA}/${ZIP}?exp=${q.get("exp")}&tok=all`,
    `${ALPHA}/${ZIP}?exp=soon&tok=all&sig=${sig}`,
    `${ALPHA}/${ZIP}?exp=${q.get("exp")}&tok=all&sig=${sig}%00`,
  ];
  for (const path of refused) {
    const res = await f.get(path);
    assertEquals(res.status, 403, path);
    assertMatch((await jsonOf(res) as { errors: string[] }).errors[0]!, /expired or is not valid/);
  }
  // Still good just before expiry, refused at it.
  f.clock.t = Number(q.get("exp")) * 1000 - 1;
  const ok = await f.get(`${ALPHA}/${url}`);
  assertEquals(ok.status, 200);
  assertEquals(
    sha256Hex(await bytesOf(ok)),
    f.fake.archive("alpha", "1.1.0", "linux_amd64").sha256,
  );
  f.clock.t = Number(q.get("exp")) * 1000;
  await expectStatus(await f.get(`${ALPHA}/${url}`), 403);
  assertEquals(f.fake.count((r) => r.path.endsWith("darwin_arm64.zip")), 0);
  assert(f.log.records.some((r) => r.msg === "refused a signed link" && r.problem === "expired"));

  // A token removed from the config takes its links with it (same cache dir, same key).
  f.clock.t = Date.UTC(2026, 0, 1);
  const dropped = await archiveUrl(
    await f.get(`${ALPHA}/1.0.0.json`, bearer(DROPPED)),
    "linux_amd64",
  );
  assertMatch(dropped, /tok=dropped/);
  await using again = await makeTestApp(f.fake, f.dir.path, {
    auth: { tokens: AUTH.tokens.filter((t) => t.name !== "dropped") },
  }, { now: () => f.clock.t });
  const res = await again.get(`${ALPHA}/${dropped}`);
  assertEquals(res.status, 403);
  await res.body?.cancel();

  // So does a rule change that hides the provider from a token still configured.
  await using narrowed = await makeTestApp(f.fake, f.dir.path, {
    auth: {
      tokens: AUTH.tokens.map((t) => t.name === "dropped" ? { ...t, namespaces: ["other"] } : t),
    },
  }, { now: () => f.clock.t });
  const ruled = await narrowed.get(`${ALPHA}/${dropped}`);
  assertEquals(ruled.status, 403);
  await ruled.body?.cancel();
});

Deno.test("per-token rules: what a token may not see answers 404 exactly as the unknown does", async () => {
  await using f = await authFixture();
  const before = f.fake.count();
  // Namespace rule: the existing provider and a made-up one give the same bytes.
  for (const token of [OTHER_NS]) {
    const paths = [
      `${ALPHA}/index.json`,
      `${ALPHA}/1.1.0.json`,
      `${ALPHA}/${ZIP}`,
      "/v1/providers/registry.terraform.io/example/alpha/versions",
      "/v1/providers/registry.terraform.io/example/alpha/1.1.0/download/linux/amd64",
      "/v1/providers/registry.terraform.io/example/alpha/1.1.0/SHA256SUMS",
      "/v1/modules/registry.terraform.io/example/net/aws/versions",
    ];
    for (const path of paths) {
      const real = await f.get(path, bearer(token));
      const madeUp = await f.get(path.replaceAll("alpha", "nosuch"), bearer(token));
      assertEquals(real.status, 404, path);
      assertEquals(madeUp.status, 404);
      const a = await real.text();
      const b = await madeUp.text();
      assertEquals(a.replaceAll("alpha", "nosuch"), b, "same answer whether it exists or not");
    }
  }
  // Upstream rule: a configured registry looks exactly like an unconfigured one.
  const hidden = await f.get(`${ALPHA}/index.json`, bearer(OTHER_UP));
  const unknown = await f.get("/unconfigured.example/example/alpha/index.json", bearer(ALL));
  assertEquals(hidden.status, 404);
  assertEquals(unknown.status, 404);
  assertEquals(
    (await hidden.text()).replace("registry.terraform.io", "unconfigured.example"),
    await unknown.text(),
  );
  assertEquals(f.fake.count(), before, "a hidden provider costs no upstream call");
  // A "host/ns" rule: that namespace is visible, the other is not.
  assertEquals((await f.get(`${ALPHA}/index.json`, bearer(SCOPED))).status, 200);
  await expectStatus(await f.get(`${ALPHA}/index.json`, bearer(SCOPED)), 200);
  // A link one token got does not open another namespace's archive for it.
  const other = await f.get("/registry.terraform.io/other/alpha/index.json", bearer(SCOPED));
  await expectStatus(other, 404);
});

Deno.test("answers are never shared across tokens: each carries its own links, hidden stays hidden", async () => {
  await using f = await authFixture();
  const path = `${ALPHA}/1.1.0.json`;
  const a1 = await archiveUrl(await f.get(path, bearer(ALL)));
  // The same path for a token that may not see it: not the kept answer.
  await expectStatus(await f.get(path, bearer(OTHER_NS)), 404);
  await expectStatus(await f.get(path), 401);
  const s1 = await archiveUrl(await f.get(path, bearer(SCOPED)));
  assertMatch(a1, /tok=all&/);
  assertMatch(s1, /tok=scoped&/);
  f.clock.t += 5_000;
  const a2 = await archiveUrl(await f.get(path, bearer(ALL)));
  assertNotEquals(a2, a1, "a later answer carries a fresh link, not a kept one");
  // index.json is kept per token: another token, or none, never gets it.
  for (let i = 0; i < 3; i++) {
    await expectStatus(await f.get(`${ALPHA}/index.json`, bearer(ALL)), 200);
  }
  await expectStatus(await f.get(`${ALPHA}/index.json`), 401);
  await expectStatus(
    await f.get(`${ALPHA}/index.json`, bearer("not-a-configured-token-000000")),
    401,
  );
  await expectStatus(await f.get(`${ALPHA}/index.json`, bearer(OTHER_NS)), 404);
  await expectStatus(await f.get(`${ALPHA}/index.json`, bearer(OTHER_UP)), 404);
  const kept = await f.get(`${ALPHA}/index.json`, bearer(ALL));
  assertMatch(kept.headers.get("cache-control")!, /^private\b/);
  assertEquals(await jsonOf(kept), { versions: { "1.1.0": {}, "1.0.0": {} } });
  assert(f.log.records.some((r) => r.msg === "request" && r.client === "all" && r.cache === "hit"));
});

Deno.test("registry protocol: the three URLs are signed links; SHA256SUMS and .sig byte for byte without a token", async () => {
  await using f = await authFixture();
  const doc = await jsonOf(
    await f.get(
      "/v1/providers/registry.terraform.io/example/alpha/1.1.0/download/linux/amd64",
      bearer(ALL),
    ),
  ) as Record<string, string>;
  for (const key of ["download_url", "shasums_url", "shasums_signature_url"]) {
    assertMatch(doc[key]!, /^\/[^?]+\?exp=\d+&tok=all&sig=[\w-]{43}$/, key);
    await expectStatus(await f.get(doc[key]!.split("?")[0]!), 401);
  }
  const sums = await f.get(doc.shasums_url!);
  assertEquals(await bytesOf(sums), f.fake.sums.get("example/alpha/1.1.0"));
  const sig = await f.get(doc.shasums_signature_url!);
  assertEquals(await bytesOf(sig), f.fake.signatures.get("example/alpha/1.1.0"));
  const zip = await f.get(doc.download_url!);
  assertEquals(
    sha256Hex(await bytesOf(zip)),
    f.fake.archive("alpha", "1.1.0", "linux_amd64").sha256,
  );
});

Deno.test("the signing key: made once at <cacheDir>/auth/url.key (0600), kept across restarts; or configured", async () => {
  await using f = await authFixture();
  const keyFile = join(f.dir.path, "auth", "url.key");
  const st = await Deno.stat(keyFile);
  assertEquals(st.mode! & 0o777, 0o600);
  const key = await Deno.readTextFile(keyFile);
  assertMatch(key, /^[0-9a-f]{64}\n$/);
  const url = await archiveUrl(await f.get(`${ALPHA}/1.1.0.json`, bearer(ALL)));
  // A restart (or a second instance) on the same cache dir honours the link.
  await using again = await makeTestApp(f.fake, f.dir.path, { auth: AUTH }, {
    now: () => f.clock.t,
  });
  assertEquals(await Deno.readTextFile(keyFile), key, "the key is not replaced");
  const res = await again.get(`${ALPHA}/${url}`);
  assertEquals(res.status, 200);
  assertEquals(
    sha256Hex(await bytesOf(res)),
    f.fake.archive("alpha", "1.1.0", "linux_amd64").sha256,
  );

  // A configured key is used instead, and no key file is made; another key refuses the link.
  await using dir2 = await Deno.makeTempDir().then((path) => ({
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  }));
  const urlKey = "k".repeat(40);
  await using c1 = await makeTestApp(f.fake, join(dir2.path, "c1"), { auth: { ...AUTH, urlKey } });
  await using c2 = await makeTestApp(f.fake, join(dir2.path, "c2"), { auth: { ...AUTH, urlKey } });
  const linked = await archiveUrl(await c1.get(`${ALPHA}/1.1.0.json`, bearer(ALL)));
  await expectStatus(await c2.get(`${ALPHA}/${linked}`), 200);
  await expectStatus(await again.get(`${ALPHA}/${linked}`), 403);
  assertEquals(await Deno.stat(join(dir2.path, "c1", "auth", "url.key")).catch(() => null), null);
});

Deno.test("start-up warning: non-loopback listen without auth, with how to turn it on", async () => {
  const open = await buildConfig({ listen: "0.0.0.0:8080", cacheDir: "/tmp/x" });
  assertMatch(openAccessWarning(open)!, /without client auth.*"auth".*credentials/s);
  const lan = await buildConfig({ listen: "192.168.1.5:8080", cacheDir: "/tmp/x" });
  assert(openAccessWarning(lan));
  for (
    const listen of ["127.0.0.1:8080", "[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", "localhost:8080"]
  ) {
    assertEquals(openAccessWarning(await buildConfig({ listen, cacheDir: "/tmp/x" })), undefined);
  }
  const authed = await buildConfig({ listen: "0.0.0.0:8080", cacheDir: "/tmp/x", auth: AUTH });
  assertEquals(openAccessWarning(authed), undefined);
});

Deno.test("the signing key: processes starting at once on one cache dir agree on one key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const keys = await Promise.all(Array.from({ length: 8 }, () => loadUrlKey(dir)));
    for (const k of keys) assertEquals(k, keys[0]);
    assertEquals(
      await Array.fromAsync(Deno.readDir(join(dir, "auth")), (e) => e.name),
      ["url.key"],
      "no temp files left",
    );
    // A key left readable by others is tightened to 0600.
    await Deno.chmod(join(dir, "auth", "url.key"), 0o644);
    assertEquals(await loadUrlKey(dir), keys[0]);
    assertEquals((await Deno.stat(join(dir, "auth", "url.key"))).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const DENO_RUN = ["run", "-q", "--frozen", "--config", join(ROOT, "deno.json"), "-P=serve"];

Deno.test("the real server: warns at start-up when open beyond loopback; with auth, 401 on the socket", async () => {
  await using dir = await Deno.makeTempDir().then((path) => ({
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  }));
  const run = async (cfg: Record<string, unknown>) => {
    const file = join(dir.path, `cfg-${crypto.randomUUID()}.json`);
    await Deno.writeTextFile(file, JSON.stringify({ cacheDir: join(dir.path, "cache"), ...cfg }));
    return await spawnRepoxy(Deno.execPath(), [
      ...DENO_RUN,
      join(ROOT, "main.ts"),
      "serve",
      "--config",
      file,
      "--log-format",
      "json",
      "--listen",
      "0.0.0.0:0",
    ], { cwd: dir.path });
  };
  const warnings = (lines: string[]) =>
    lines.map((l) => JSON.parse(l)).filter((r) =>
      r.level === "warn" && /without client auth/.test(r.msg)
    );

  const open = await run({});
  try {
    await (await fetch(open.url + "-/healthz")).arrayBuffer();
  } finally {
    await open.stop("SIGTERM");
  }
  const w = warnings(open.stderr);
  assertEquals(w.length, 1, open.stderr.join("\n"));
  assertMatch(w[0].msg, /"auth"/);

  const closed = await run({ auth: { tokens: [{ name: "ci", token: ALL }] } });
  try {
    const port = new URL(closed.url).port;
    const health = await fetch(`http://127.0.0.1:${port}/-/healthz`);
    assertEquals(health.status, 200);
    await health.arrayBuffer();
    const refused = await fetch(`http://127.0.0.1:${port}${ALPHA}/index.json`);
    assertEquals(refused.status, 401);
    assertEquals(refused.headers.get("www-authenticate"), 'Bearer realm="repoxy"');
    await refused.arrayBuffer();
  } finally {
    await closed.stop("SIGTERM");
  }
  assertEquals(warnings(closed.stderr), []);
  assert(!closed.stderr.join("\n").includes(ALL), "the token is never logged");
});
