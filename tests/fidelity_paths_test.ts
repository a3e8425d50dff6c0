/**
 * Issue 11, point 3: the smaller divergences from talking to the registry
 * directly, at handler level (the end-to-end run with the real terraform is
 * in fidelity_paths_e2e_test.ts):
 *
 * - the legacy-namespace lookup `/v1/providers/[{host}/]-/{type}/versions`
 *   (Terraform's "Did you intend to use datadog/datadog?") is passed through
 *   byte for byte, 404 stays 404, never cached, bounded by
 *   `limits.metadataDocument`, and needs a token under client auth;
 * - an upstream that refuses Repoxy's own token (401/403) is a 403 naming
 *   `upstreams.<host>.token`, not a retried 502, with one log warning, a
 *   `reason="credentials"` metric and a status page line;
 * - a trailing slash or an unknown file name is a 404; traversal, encoded
 *   bytes and bad names on known shapes stay 400.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "../lib/deps/assert.ts";
import { BadPathError, parseRoute } from "../lib/protocol/paths.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { type FakeRegistryOptions, startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";
const DATADOG = {
  namespace: "datadog",
  type: "datadog",
  versions: [{ version: "3.1.0", platforms: ["linux_amd64"] }],
};
const PROVIDERS = [...TWO_PROVIDERS, DATADOG];
const LEGACY_UPSTREAM_PATH = "/v1/providers/-/datadog/versions";

async function text(res: Response): Promise<string> {
  return new TextDecoder().decode(await bytesOf(res));
}

Deno.test("legacy lookup: both path forms answer the upstream's bytes and status; a 200 is never kept, a 404 is remembered", async () => {
  await using t = await mirrorFixture({
    providers: PROVIDERS,
    registry: { legacyLookup: true },
  });
  // What the client would get from the registry directly.
  const direct = await fetch(`${t.fake.registryUrl}${LEGACY_UPSTREAM_PATH}`);
  const directBody = await bytesOf(direct);
  assertEquals(direct.status, 200);
  assertEquals(JSON.parse(new TextDecoder().decode(directBody)).id, "datadog/datadog");

  for (
    const path of [`/v1/providers/${H}/-/datadog/versions`, `/v1/providers/-/datadog/versions`]
  ) {
    const res = await t.get(path);
    const body = await bytesOf(res);
    assertEquals(res.status, 200, path);
    assertEquals(body, directBody, path);
    assertEquals(res.headers.get("content-type"), "application/json");
    assertEquals(res.headers.get("cache-control"), "no-store");
  }
  // Passed through, not kept: each lookup asks the registry again.
  assertEquals(t.fake.count((r) => r.path === LEGACY_UPSTREAM_PATH), 3);

  // A type the registry does not know stays a 404 with the registry's body,
  // remembered for limits.negativeTtl like an unknown provider: asking again
  // (or for it under the other path form) costs no upstream request.
  for (const path of [`/v1/providers/${H}/-/nosuch/versions`, `/v1/providers/-/nosuch/versions`]) {
    const missing = await t.get(path);
    assertEquals(missing.status, 404);
    assertEquals(await missing.json(), { errors: ["Not Found"] });
  }
  assertEquals(t.fake.count((r) => r.path === "/v1/providers/-/nosuch/versions"), 1);

  // HEAD: same status and length, no body.
  const head = await t.get(`/v1/providers/${H}/-/datadog/versions`, { method: "HEAD" });
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("content-length"), String(directBody.length));
  assertEquals((await bytesOf(head)).length, 0);
});

Deno.test("legacy lookup: concurrent identical lookups share one upstream request; made-up types are remembered", async () => {
  await using t = await mirrorFixture({
    providers: PROVIDERS,
    registry: {
      legacyLookup: true,
      // Slow enough that all clients below ask while the first is in flight.
      intercept: async (req) => {
        if (new URL(req.url).pathname === LEGACY_UPSTREAM_PATH) {
          await new Promise((r) => setTimeout(r, 300));
        }
        return undefined;
      },
    },
  });
  const answers = await Promise.all(
    Array.from({ length: 8 }, () => t.get(`/v1/providers/${H}/-/datadog/versions`)),
  );
  const bodies = new Set<string>();
  for (const res of answers) {
    assertEquals(res.status, 200);
    bodies.add(await text(res));
  }
  assertEquals(bodies.size, 1);
  assertEquals(JSON.parse([...bodies][0]!).id, "datadog/datadog");
  assertEquals(t.fake.count((r) => r.path === LEGACY_UPSTREAM_PATH), 1);

  // 200 distinct made-up types asked twice: 200 upstream requests, not 400.
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 200; i++) {
      const res = await t.get(`/v1/providers/-/madeup${i}/versions`);
      assertEquals(res.status, 404);
      await res.body?.cancel();
    }
  }
  assertEquals(t.fake.count((r) => /^\/v1\/providers\/-\/madeup\d+\/versions$/.test(r.path)), 200);
});

Deno.test("legacy lookup: a registry without it answers 404 through Repoxy too; unknown registries are never asked", async () => {
  await using t = await mirrorFixture({ providers: PROVIDERS });
  const res = await t.get(`/v1/providers/${H}/-/datadog/versions`);
  assertEquals(res.status, 404);
  await res.body?.cancel();
  assertEquals(t.fake.count((r) => r.path === LEGACY_UPSTREAM_PATH), 1);

  const other = await t.get(`/v1/providers/other.example/-/datadog/versions`);
  assertEquals(other.status, 404);
  assertMatch((await other.json()).errors[0], /other\.example is not configured/);
  // An invalid type on the lookup is a bad name (400), and nothing is fetched.
  const upstreamBefore = t.fake.count();
  const bad = await t.get(`/v1/providers/${H}/-/-bad-/versions`);
  assertEquals(bad.status, 400);
  await bad.body?.cancel();
  assertEquals(t.fake.count(), upstreamBefore);
});

Deno.test("legacy lookup: an answer over limits.metadataDocument is refused, not passed on", async () => {
  const huge = JSON.stringify({ id: "datadog/datadog", pad: "x".repeat(64 * 1024) });
  await using t = await mirrorFixture({
    providers: PROVIDERS,
    registry: {
      intercept: (req) =>
        new URL(req.url).pathname === LEGACY_UPSTREAM_PATH
          ? new Response(huge, { headers: { "content-type": "application/json" } })
          : undefined,
    },
    config: { limits: { metadataDocument: 16 * 1024 } },
  });
  const res = await t.get(`/v1/providers/${H}/-/datadog/versions`);
  const body = await res.json();
  assertEquals(res.status, 502);
  assertMatch(body.errors[0], /over 16384 bytes/);
});

Deno.test("legacy lookup under client auth: a token is needed, and upstream and namespace rules hold", async () => {
  const tokenOf = (s: string) => ({ headers: { authorization: `Bearer ${s}` } });
  const ALL = "all-token-0123456789abcdef";
  const NS = "ns-token-0123456789abcdef";
  const UP = "up-token-0123456789abcdef";
  await using t = await mirrorFixture({
    providers: PROVIDERS,
    registry: { legacyLookup: true },
    config: {
      auth: {
        tokens: [
          { name: "all", sha256: createHash("sha256").update(ALL).digest("hex") },
          { name: "ns", token: NS, namespaces: ["datadog"] },
          { name: "up", token: UP, upstreams: ["private.example"] },
        ],
      },
    },
  });
  const path = `/v1/providers/${H}/-/datadog/versions`;
  const none = await t.get(path);
  assertEquals(none.status, 401);
  await none.body?.cancel();
  const wrong = await t.get(path, tokenOf("not-a-token-0123456789"));
  assertEquals(wrong.status, 401);
  await wrong.body?.cancel();
  assertEquals(t.fake.count((r) => r.path === LEGACY_UPSTREAM_PATH), 0);

  const ok = await t.get(path, tokenOf(ALL));
  assertEquals(ok.status, 200);
  assertEquals((await ok.json()).id, "datadog/datadog");
  // A token limited to namespaces cannot ask which namespace a type lives in,
  // and one limited to another upstream does not see this one: both 404.
  for (const token of [NS, UP]) {
    const hidden = await t.get(path, tokenOf(token));
    assertEquals(hidden.status, 404);
    await hidden.body?.cancel();
  }
  assertEquals(t.fake.count((r) => r.path === LEGACY_UPSTREAM_PATH), 1);
});

/** An app whose upstream requires a token; `token` is what Repoxy is configured with. */
async function tokenFixture(
  token: string | undefined,
  intercept?: FakeRegistryOptions["intercept"],
) {
  const fake = await startFakeRegistry({
    providers: PROVIDERS,
    requireToken: "right-token",
    legacyLookup: true,
    ...(intercept ? { intercept } : {}),
  });
  const dir = await tempDir();
  const t = await makeTestApp(fake, dir.path, {
    upstreams: { [H]: { url: fake.registryUrl, ...(token ? { token } : {}) } },
  });
  return Object.assign(t, {
    fake,
    async [Symbol.asyncDispose]() {
      await t.app.close();
      await fake.stop();
      await dir[Symbol.asyncDispose]();
    },
  });
}

const CREDENTIAL_ROUTES = [
  `/${H}/example/alpha/index.json`,
  `/v1/providers/${H}/example/alpha/versions`,
  `/v1/providers/example/alpha/1.1.0/download/linux/amd64`,
  `/v1/providers/${H}/-/datadog/versions`,
  `/v1/modules/${H}/hashicorp/consul/aws/versions`,
];

for (
  const [token, status, problem, words] of [
    [undefined, 401, "missing", "is not set"],
    ["wrong-token", 403, "rejected", "rejected the token"],
  ] as const
) {
  Deno.test(`upstream ${status} (token ${problem}): 403 naming upstreams.<host>.token on every route, no retry, one warning, metric, status page`, async () => {
    await using t = await tokenFixture(token);
    for (const path of CREDENTIAL_ROUTES) {
      const res = await t.get(path);
      const body = await res.json();
      assertEquals(res.status, 403, `${path}: ${JSON.stringify(body)}`);
      const msg: string = body.errors[0];
      assert(msg.includes(`upstreams."${H}".token`), msg);
      assert(msg.includes(words), msg);
      assert(msg.includes(`HTTP ${status}`), msg);
      assert(!/try again/i.test(msg), msg);
      if (token) assert(!msg.includes(token), "the token is never shown");
    }
    // Not transient: exactly one registry request per client request (no
    // retries), and nothing but the refused ones.
    const api = t.fake.requests.filter((r) => r.server === "registry" && r.path.startsWith("/v1/"));
    assertEquals(api.length, CREDENTIAL_ROUTES.length);
    // Sent only when configured.
    assert(
      api.every((r) => r.headers.get("authorization") === (token ? `Bearer ${token}` : null)),
    );

    // One clear warning for the episode, not one per request.
    const warnings = t.log.records.filter((r) =>
      r.level === "warn" && typeof r.msg === "string" &&
      r.msg.includes("refused Repoxy's credentials")
    );
    assertEquals(warnings.length, 1, JSON.stringify(t.log.records));
    assertEquals(warnings[0]!.upstream, H);
    assertEquals(warnings[0]!.credentials, problem);
    assertEquals(warnings[0]!.configKey, `upstreams.${H}.token`);
    assert(!t.log.lines.some((l) => token !== undefined && l.includes(token)));

    assertEquals(
      t.app.telemetry.upstreamErrors.get({ upstream: H, reason: "credentials" }),
      CREDENTIAL_ROUTES.length,
    );
    assertEquals(t.app.telemetry.upstreamErrors.get({ upstream: H, reason: "bad_status" }), 0);
    const metrics = await text(await t.get("/-/metrics"));
    assertMatch(
      metrics,
      new RegExp(
        `repoxy_upstream_errors_total\\{[^}]*reason="credentials"[^}]*\\} ${CREDENTIAL_ROUTES.length}`,
      ),
    );
    const page = await text(await t.get("/"));
    assert(page.includes("credentials refused"), page);
    assert(
      page.includes(
        `HTTP ${status}: upstreams.${H}.token ${
          problem === "missing" ? "is not set" : "was rejected"
        }`,
      ),
      page,
    );
  });
}

Deno.test("refused credentials: one warning per episode however many requests; the page clears on success and warns anew", async () => {
  let refuse = true;
  await using fake = await startFakeRegistry({
    providers: PROVIDERS,
    intercept: (req, server) =>
      refuse && server === "registry" && new URL(req.url).pathname.startsWith("/v1/")
        ? new Response(JSON.stringify({ errors: ["Unauthorized"] }), { status: 401 })
        : undefined,
  });
  await using dir = await tempDir();
  let clock = Date.UTC(2026, 0, 1);
  await using t = await makeTestApp(fake, dir.path, {}, { now: () => clock++ });
  const warned = () =>
    t.log.records.filter((r) => String(r.msg).includes("refused Repoxy's credentials")).length;
  const page = async () => await text(await t.get("/"));
  // Ten clients at once, on three routes: one warning.
  const answers = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      t.get(
        [
          `/${H}/example/alpha/index.json`,
          `/v1/providers/${H}/example/beta/versions`,
          `/${H}/datadog/datadog/index.json`,
        ][i % 3]!,
      )),
  );
  for (const res of answers) {
    assertEquals(res.status, 403);
    await res.body?.cancel();
  }
  assertEquals(warned(), 1);
  assert((await page()).includes("credentials refused"));

  // The operator fixed it: the next success clears the page.
  refuse = false;
  const ok = await t.get(`/${H}/example/beta/index.json`);
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  assert(!(await page()).includes("credentials refused"));

  // Refused again later: a new episode, a new warning.
  refuse = true;
  const again = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(again.status, 403);
  await again.body?.cancel();
  assertEquals(warned(), 2);
  assert((await page()).includes("credentials refused"));
});

Deno.test("the right upstream token: served; a download host's 403 is not blamed on it", async () => {
  // An expired presigned URL on the release host says nothing about the registry token.
  await using t = await tokenFixture(
    "right-token",
    (req, server) =>
      server === "release" && new URL(req.url).pathname.endsWith("/1.1.0/SHA256SUMS")
        ? new Response("AccessDenied", { status: 403 })
        : undefined,
  );
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 200);
  assertEquals(Object.keys((await res.json()).versions).sort(), ["1.0.0", "1.1.0"]);
  const legacy = await t.get(`/v1/providers/${H}/-/datadog/versions`);
  assertEquals(legacy.status, 200);
  assertEquals((await legacy.json()).id, "datadog/datadog");
  const sums = await t.get(`/v1/providers/${H}/example/alpha/1.1.0/SHA256SUMS`);
  const body = await sums.json();
  assertEquals(sums.status, 502);
  assertMatch(body.errors[0], /403/);
  assertEquals(t.app.telemetry.upstreamErrors.get({ upstream: H, reason: "credentials" }), 0);
  assertEquals(t.app.telemetry.upstreamErrors.get({ upstream: H, reason: "bad_status" }), 1);
  const page = await text(await t.get("/"));
  assert(!page.includes("credentials refused"));
  assert(!t.log.records.some((r) => String(r.msg).includes("refused Repoxy's credentials")));
});

Deno.test("paths: a trailing slash or an unknown file is 404; traversal, encodings and bad names stay 400", async () => {
  await using t = await mirrorFixture({ providers: PROVIDERS });
  const notFound = [
    `/${H}/example/alpha/index.json/`,
    `/${H}/example/alpha/`,
    `/${H}/example/alpha/1.1.0.json/`,
    `/v1/providers/${H}/example/alpha/versions/`,
    `/v1/providers/example/alpha/versions/`,
    `/v1/providers/`,
    `/v1/modules/${H}/hashicorp/consul/aws/versions/`,
    `/.well-known/terraform.json/`,
    `/-/healthz/`,
    `/robots.txt`,
    `/favicon.ico`,
    `/${H}/example/alpha/readme.txt`,
    `/UPPER.example/a/b/readme.txt`,
    `/${H}/-a/b/LICENSE`,
    `/v1/modules/${H}/a/b/c/d/e/f`,
    `/v1/modules/-bad-/a/b`,
  ];
  for (const path of notFound) {
    const res = await t.get(path);
    const body = await res.json();
    assertEquals(res.status, 404, `${path}: ${JSON.stringify(body)}`);
    assertEquals(res.headers.get("content-type"), "application/json");
    if (path.endsWith("/")) assertMatch(body.errors[0], /no trailing slash/);
  }
  // `new Request` resolves "." and ".." (even encoded) and turns "\\" into "/"
  // itself; a client that sends them raw meets the router, which refuses
  // them before the trailing-slash rule.
  for (
    const path of [
      `/${H}/../../etc/passwd`,
      `/${H}/example/../alpha/index.json`,
      `/${H}/example/alpha/../`,
      `/${H}/example/alpha/./`,
      `/${H}/./alpha/index.json`,
      `/v1/providers/${H}/-/../versions`,
      `/${H}/a/%2e%2e/index.json`,
      `/${H}/a/%2e%2e/`,
      `/${H}/a\\b/c/index.json`,
      `/${H}/a/b/..\\..\\x.zip`,
    ]
  ) {
    assertThrows(() => parseRoute(path, H), BadPathError, path);
  }
  const badRequest = [
    `/${H}/a%2fb/c/index.json`,
    `/${H}/a/b%00/index.json`,
    `/${H}//alpha/index.json`,
    `/UPPER.example/a/b/index.json`,
    `/${H}/-a/b/index.json`,
    `/${H}/example/alpha/1.2.json`,
    `/${H}/example/alpha/terraform-provider-beta_1.0.0_linux_amd64.zip`,
    `/v1/providers/${H}/example/alpha/x.y/download/linux/amd64`,
    `/v1/modules/${H}/hashicorp/consul/aws/x.y/download`,
    `/${H}/${"a".repeat(300)}/b/index.json`,
  ];
  for (const path of badRequest) {
    const res = await t.get(path);
    const body = await res.json();
    assertEquals(res.status, 400, `${path}: ${JSON.stringify(body)}`);
  }
  // Nothing above reached the registry.
  assertEquals(t.fake.count(), 0);
});

Deno.test("a registry whose discovery puts providers.v1 on another origin gets its token there (as terraform sends it), never to the release host", async () => {
  // The API host: the registry's /v1/ answers on another origin, token required.
  const target = { url: "" }; // the fake registry's, once it runs
  const seen: Array<{ path: string; auth: string | null }> = [];
  const api = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const u = new URL(req.url);
    seen.push({ path: u.pathname, auth: req.headers.get("authorization") });
    if (req.headers.get("authorization") !== "Bearer right-token") {
      return Response.json({ errors: ["Unauthorized"] }, { status: 401 });
    }
    const res = await fetch(`${target.url}${u.pathname}`);
    return new Response(res.body, { status: res.status, headers: res.headers });
  });
  const apiOrigin = `http://127.0.0.1:${api.addr.port}`;
  const fake = await startFakeRegistry({
    providers: PROVIDERS,
    intercept: (req) =>
      new URL(req.url).pathname === "/.well-known/terraform.json"
        ? Response.json({ "providers.v1": `${apiOrigin}/v1/providers/` })
        : undefined,
  });
  target.url = fake.registryUrl;
  await using dir = await tempDir();
  const t = await makeTestApp(fake, dir.path, {
    upstreams: { [H]: { url: fake.registryUrl, token: "right-token" } },
    egressAllow: [...fake.egressAllow, new URL(apiOrigin).host],
  });
  try {
    const index = await t.get(`/${H}/example/alpha/index.json`);
    assertEquals(index.status, 200, await index.clone().text());
    const zip = await t.get(`/${H}/example/alpha/terraform-provider-alpha_1.1.0_linux_amd64.zip`);
    assertEquals(zip.status, 200);
    assertEquals(
      new Uint8Array(await zip.arrayBuffer()),
      fake.archive("alpha", "1.1.0", "linux_amd64").bytes,
    );
    assert(seen.length >= 2, JSON.stringify(seen));
    assertEquals(seen.filter((s) => s.auth !== "Bearer right-token"), []);
    // The release host (download_url, SHA256SUMS) never sees it.
    const release = fake.requests.filter((r) => r.server === "release");
    assert(release.length >= 1);
    assertEquals(release.filter((r) => r.headers.has("authorization")).map((r) => r.path), []);
  } finally {
    await t.app.close();
    await api.shutdown();
    await fake.stop();
  }
});
