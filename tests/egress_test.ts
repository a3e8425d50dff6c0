/**
 * The egress policy against a hostile registry: download URLs and redirect
 * hops that point at internal services are refused before any connection,
 * after DNS resolution, pinned against rebinding; the operator's allowances
 * and HTTP(S) proxies work; presigned URLs never reach the logs.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import type { AppDeps } from "../lib/app.ts";
import type { FetchFn } from "../lib/upstream/client.ts";
import { EgressPolicy, EgressRefusedError, internalReason } from "../lib/upstream/egress.ts";
import { makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";
import { internalService } from "./hostile_upstream.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";

const H = "registry.terraform.io";
const ONE = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
}];
const ZIP = `/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`;
const FILES = "/files/example/alpha/1.0.0";
const ZIP_NAME = "terraform-provider-alpha_1.0.0_linux_amd64.zip";

/**
 * A fake registry whose download documents and release answers a test can
 * rewrite at will (the hostile registry).
 */
async function hostileRegistry() {
  const hostile: {
    fields: Record<string, unknown>;
    release?: ((req: Request) => Response | undefined) | undefined;
    registry?: ((req: Request) => Response | undefined) | undefined;
  } = { fields: {} };
  const fake = await startFakeRegistry({
    providers: ONE,
    extraDownloadFields: () => hostile.fields,
    intercept: (req, server) => hostile[server]?.(req),
  });
  return { fake, hostile };
}

/** fetch that records every URL Repoxy asks for and never connects to the metadata address. */
function recordingFetch(): { fetch: FetchFn; urls: URL[] } {
  const urls: URL[] = [];
  const f: FetchFn = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    urls.push(url);
    if (url.hostname === "169.254.169.254" || url.hostname.includes("a9fe")) {
      return Promise.reject(new TypeError("test: metadata address contacted"));
    }
    return fetch(input, init);
  };
  return { fetch: f, urls };
}

/** An app on `fake` with a fresh cache dir; `raw` merged over the config. */
async function appOn(fake: FakeRegistry, raw: Record<string, unknown> = {}, deps: AppDeps = {}) {
  const dir = await tempDir();
  const t = await makeTestApp(fake, dir.path, raw, deps);
  return Object.assign(t, {
    async [Symbol.asyncDispose]() {
      await t.app.close();
      await dir[Symbol.asyncDispose]();
    },
  });
}

async function errorOf(res: Response): Promise<string> {
  const body = await res.json() as { errors: string[] };
  return body.errors.join("\n");
}

Deno.test("a download_url on another loopback port is refused: 502, the internal service sees nothing", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  await using internal = internalService();
  hostile.fields = { download_url: `${internal.url}/admin/export?all=1` };
  {
    await using t = await appOn(fake);
    const res = await t.get(ZIP);
    assertEquals(res.status, 502);
    const msg = await errorOf(res);
    assertMatch(msg, new RegExp(`127\\.0\\.0\\.1:${internal.port}`));
    assertMatch(msg, /loopback/);
    assert(!msg.includes("INTERNAL-SECRET"));
    assert(!msg.includes("all=1"), "the query string is not echoed");
    assertEquals(internal.hits.length, 0);
  }
  // Service discovery naming another host is vetted the same way.
  hostile.fields = {};
  {
    await using t = await appOn(fake, {}, {});
    const wellKnown = { "providers.v1": `${internal.url}/v1/providers/` };
    hostile.registry = (req) =>
      new URL(req.url).pathname === "/.well-known/terraform.json"
        ? Response.json(wellKnown)
        : undefined;
    const res = await t.get(`/${H}/example/alpha/index.json`);
    hostile.registry = undefined;
    assertEquals(res.status, 502);
    assertMatch(await errorOf(res), /a loopback address/);
    assertEquals(internal.hits.length, 0);
  }
  // The release host is itself "another loopback port": without the
  // fixture's allowance even SHA256SUMS is refused, and it is never contacted.
  hostile.fields = {};
  {
    await using t = await appOn(fake, { egressAllow: [] });
    const before = fake.count((r) => r.server === "release");
    const res = await t.get(ZIP);
    assertEquals(res.status, 502);
    assertMatch(await errorOf(res), /refused to fetch from 127\.0\.0\.1:\d+: a loopback address/);
    assertEquals(fake.count((r) => r.server === "release"), before);
    assert(fake.count((r) => r.server === "registry") > 0, "the upstream itself stays exempt");
  }
});

Deno.test("a redirect hop to the metadata address, in any spelling, is refused before connecting", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  await using internal = internalService();
  const targets: Array<[string, RegExp]> = [
    ["http://169.254.169.254/latest/meta-data/iam/", /169\.254\.169\.254: a cloud metadata/],
    ["http://0xa9.0xfe.0xa9.0xfe/latest/", /169\.254\.169\.254: a cloud metadata/],
    ["http://2852039166/latest/", /169\.254\.169\.254: a cloud metadata/],
    ["http://[::ffff:169.254.169.254]/latest/", /\[::ffff:a9fe:a9fe\]: a cloud metadata/],
    ["http://[64:ff9b::a9fe:a9fe]/latest/", /NAT64 IPv6 embedding a cloud metadata/],
    [`http://127.1:${internal.port}/`, /127\.0\.0\.1:\d+: a loopback address/],
    [`http://0177.0.0.1:${internal.port}/`, /127\.0\.0\.1:\d+: a loopback address/],
    [`http://[::ffff:7f00:1]:${internal.port}/`, /a loopback address/],
    [`http://[2002:7f00:1::]:${internal.port}/`, /6to4 IPv6 embedding a loopback address/],
  ];
  for (const [location, reason] of targets) {
    hostile.release = (req) =>
      new URL(req.url).pathname.startsWith("/redirect/")
        ? new Response(null, { status: 302, headers: { location } })
        : undefined;
    const rec = recordingFetch();
    await using t = await appOn(fake, {}, { fetch: rec.fetch });
    const res = await t.get(ZIP);
    assertEquals(res.status, 502, location);
    assertMatch(await errorOf(res), reason);
    // The hop before was fetched; the refused one never was.
    assert(rec.urls.some((u) => u.pathname.startsWith("/redirect/")), location);
    const target = new URL(location);
    assertEquals(rec.urls.filter((u) => u.host === target.host).length, 0, location);
  }
  assertEquals(internal.hits.length, 0);
});

Deno.test("a host name is judged by what it resolves to: internal answers are refused", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  await using internal = internalService();
  const asked: string[] = [];
  const answers: Record<string, string[]> = {
    "files.evil.test": ["93.184.216.34", "127.0.0.1"], // one bad answer is enough
    "ten.evil.test": ["10.0.0.5"],
    "v6.evil.test": ["fd00::1"],
  };
  const resolve = (h: string) => {
    asked.push(h);
    return Promise.resolve(answers[h] ?? []);
  };
  const cases: Array<[string, RegExp]> = [
    ["files.evil.test", /files\.evil\.test:\d+: resolves to 127\.0\.0\.1, a loopback address/],
    ["ten.evil.test", /resolves to 10\.0\.0\.5, a private address/],
    ["v6.evil.test", /resolves to fd00::1, a unique-local/],
  ];
  for (const [host, reason] of cases) {
    hostile.fields = { download_url: `http://${host}:${internal.port}/x.zip` };
    await using t = await appOn(fake, {}, { resolve });
    const res = await t.get(ZIP);
    assertEquals(res.status, 502, host);
    assertMatch(await errorOf(res), reason);
    assert(asked.includes(host), `${host} was resolved by the injected resolver`);
  }
  assertEquals(internal.hits.length, 0);
});

Deno.test("DNS rebinding: plain http connects to the vetted address, never to the later answer", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  // The same port on two loopback addresses: 127.0.0.2 plays the vetted
  // public host, 127.0.0.1 the internal service the second answer points at.
  await using internal = internalService("127.0.0.1");
  const legitHits: Array<string | null> = [];
  const ac = new AbortController();
  const archive = fake.archive("alpha", "1.0.0", "linux_amd64");
  const legit = Deno.serve(
    { hostname: "127.0.0.2", port: internal.port, signal: ac.signal, onListen() {} },
    (req) => {
      legitHits.push(req.headers.get("host"));
      return new Response(archive.bytes as BodyInit);
    },
  );
  try {
    let calls = 0;
    const resolve = () => Promise.resolve(calls++ === 0 ? ["127.0.0.2"] : ["127.0.0.1"]);
    // "localhost": the system resolver answers 127.0.0.1 for it, so a fetch
    // by name after vetting would reach the internal service.
    const host = `localhost:${internal.port}`;
    hostile.fields = { download_url: `http://${host}/${ZIP_NAME}` };
    await using t = await appOn(fake, {
      egressAllow: [...fake.egressAllow, "127.0.0.2/32"],
    }, { resolve });
    const res = await t.get(ZIP);
    assertEquals(res.status, 200);
    assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), archive.sha256);
    assertEquals(legitHits, [host], "connected to the vetted address, URL and Host kept");
    assertEquals(internal.hits.length, 0);
    assertEquals(calls, 1, "resolved once, by the policy; fetch did not look the name up again");
  } finally {
    ac.abort();
    await legit.finished;
  }
});

Deno.test("allowPrivateNetworks and each egressAllow form let an internal host through", async () => {
  const { fake } = await hostileRegistry();
  await using _f = fake;
  const port = new URL(fake.releaseUrl).port;
  const archive = fake.archive("alpha", "1.0.0", "linux_amd64");
  const cases: Array<[Record<string, unknown>, number]> = [
    [{ egressAllow: [], allowPrivateNetworks: true }, 200],
    [{ egressAllow: ["127.0.0.1"] }, 200], // host, any port
    [{ egressAllow: [`127.0.0.1:${port}`] }, 200], // host:port
    [{ egressAllow: [`2130706433:${port}`] }, 200], // spelled as URLs spell it
    [{ egressAllow: ["127.0.0.0/8"] }, 200], // CIDR
    [{ egressAllow: ["::ffff:127.0.0.0/104"] }, 200], // the same CIDR, IPv6-mapped
    [{ egressAllow: ["127.0.0.1:1"] }, 502], // another port
    [{ egressAllow: ["127.0.0.2/32"] }, 502], // another address
    [{ egressAllow: ["localhost"] }, 502], // another name
  ];
  for (const [raw, status] of cases) {
    const before = fake.count((r) => r.server === "release");
    await using t = await appOn(fake, raw);
    const res = await t.get(ZIP);
    assertEquals(res.status, status, JSON.stringify(raw));
    if (status === 200) {
      assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), archive.sha256);
      assert(fake.count((r) => r.server === "release") > before);
    } else {
      assertMatch(await errorOf(res), /a loopback address/);
      assertEquals(fake.count((r) => r.server === "release"), before, JSON.stringify(raw));
    }
  }
});

/** A tiny forward proxy: absolute-form requests are answered from the fake release host; CONNECT is recorded and refused. */
function fakeProxy(fake: FakeRegistry) {
  const seen: string[] = [];
  /** Client port of each request: equal ports mean one kept-alive connection. */
  const ports: number[] = [];
  const ac = new AbortController();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req, info) => {
      ports.push((info.remoteAddr as Deno.NetAddr).port);
      if (req.method === "CONNECT") {
        seen.push(`CONNECT ${req.headers.get("host") ?? req.url}`);
        return new Response("tunnels are not allowed here", { status: 403 });
      }
      seen.push(`${req.method} ${req.url}`);
      const u = new URL(req.url);
      return await fetch(fake.releaseUrl + u.pathname);
    },
  );
  return {
    seen,
    ports,
    url: `http://127.0.0.1:${srv.addr.port}`,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await srv.finished;
    },
  };
}

Deno.test("HTTP(S)_PROXY carries download hosts; NO_PROXY is honoured; internal targets still refused", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  await using proxy = fakeProxy(fake);
  const archive = fake.archive("alpha", "1.0.0", "linux_amd64");
  const port = new URL(fake.releaseUrl).port;
  const airGap = (h: string) => Promise.reject(new Error(`getaddrinfo ENOTFOUND ${h}`));
  const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

  // Air gap behind a proxy: the name does not resolve here, the proxy resolves it.
  const corp = `http://releases.corp.test:${port}${FILES}`;
  hostile.fields = {
    download_url: `${corp}/${ZIP_NAME}`,
    shasums_url: `${corp}/SHA256SUMS`,
    shasums_signature_url: `${corp}/SHA256SUMS.sig`,
  };
  {
    // Without a scheme, as curl users write it.
    const env = envOf({
      HTTP_PROXY: proxy.url.replace("http://", ""),
      https_proxy: proxy.url,
      no_proxy: "127.0.0.1",
    });
    await using t = await appOn(fake, {}, { resolve: airGap, env });
    const res = await t.get(ZIP);
    assertEquals(res.status, 200);
    assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), archive.sha256);
    assertEquals(proxy.seen.sort(), [
      `GET ${corp}/SHA256SUMS`,
      `GET ${corp}/SHA256SUMS.sig`,
      `GET ${corp}/${ZIP_NAME}`,
    ]);
    // SHA256SUMS and its signature are fetched at once; the archive after
    // them reuses a kept-alive connection to the proxy.
    assert(new Set(proxy.ports).size < proxy.ports.length, `connections: ${proxy.ports}`);
    // NO_PROXY=127.0.0.1: the registry API and SHA256SUMS went direct.
    assert(fake.count((r) => r.server === "registry") > 0);
  }

  // A host NO_PROXY names goes direct, pinned to its (allowed) address, and
  // the proxy sees nothing.
  proxy.seen.length = 0;
  hostile.fields = { download_url: `http://localhost:${port}${FILES}/${ZIP_NAME}` };
  {
    const env = envOf({ HTTP_PROXY: proxy.url, NO_PROXY: "example.org, localhost,127.0.0.1" });
    const resolve = () => Promise.resolve(["127.0.0.1"]);
    await using t = await appOn(fake, {}, { resolve, env });
    const res = await t.get(ZIP);
    assertEquals(res.status, 200);
    assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), archive.sha256);
    assertEquals(proxy.seen, []);
  }

  // https goes through the proxy as a CONNECT tunnel (refused by this proxy: 502).
  hostile.fields = { download_url: `https://releases.corp.test${FILES}/${ZIP_NAME}` };
  {
    const env = envOf({ HTTPS_PROXY: proxy.url, NO_PROXY: "127.0.0.1" });
    await using t = await appOn(fake, {}, { resolve: airGap, env });
    const res = await t.get(ZIP);
    assertEquals(res.status, 502);
    await res.body?.cancel();
    assertEquals(proxy.seen, ["CONNECT releases.corp.test:443"]);
  }

  // Behind a proxy, literal internal addresses and internal names are still refused.
  for (
    const [url, reason] of [
      ["http://169.254.169.254/latest/meta-data/", /a cloud metadata address/],
      ["http://metadata.google.internal/computeMetadata/v1/", /a cloud metadata host name/],
      [`http://localhost:${port}${FILES}/${ZIP_NAME}`, /an internal host name/],
      ["http://wiki/", /a single-label \(intranet\) host name/],
      ["http://wiki.corp/", /an internal host name/],
      ["http://api.svc.cluster.local/", /an internal host name/],
      ["http://db.internal./", /an internal host name/],
    ] as const
  ) {
    proxy.seen.length = 0;
    hostile.fields = { download_url: url };
    const env = envOf({ HTTP_PROXY: proxy.url, NO_PROXY: "127.0.0.1" });
    await using t = await appOn(fake, {}, { resolve: airGap, env });
    const res = await t.get(ZIP);
    assertEquals(res.status, 502, url);
    assertMatch(await errorOf(res), reason);
    assertEquals(proxy.seen, [], url);
  }
});

Deno.test("presigned URLs: no query string in logs, errors or request records", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  const closed = (() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (l.addr as Deno.NetAddr).port;
    l.close();
    return p;
  })();
  const secrets = ["SUMSSECRET", "ZIPSECRET", "REFUSEDSECRET", "CONN)SECRET", "SECRET)", "user:pw"];
  let sumsFailures = 0;
  hostile.release = (req) => {
    const u = new URL(req.url);
    // SHA256SUMS fails once: the retry is logged with its URL.
    if (u.pathname.endsWith("/SHA256SUMS") && sumsFailures++ === 0) {
      return new Response("busy", { status: 503 });
    }
    // The archive's presigned URL answers wrong bytes: the mismatch is logged with its URL.
    if (u.search.includes("ZIPSECRET")) return new Response("not the archive");
    return undefined;
  };
  const bodies: string[] = [];
  const rel = fake.releaseUrl;
  const q = (s: string) => `?X-Amz-Credential=AKIA%2F${s}&X-Amz-Signature=${s}`;
  hostile.fields = {
    download_url: `${rel}${FILES}/${ZIP_NAME}${q("ZIPSECRET")}`,
    shasums_url: `${rel.replace("://", "://user:pw@")}${FILES}/SHA256SUMS${q("SUMSSECRET")}`,
  };
  await using t = await appOn(fake, { egressAllow: ["127.0.0.1"] });
  // Streamed while it downloads: the mismatch shows as a cut-off body.
  let res = await t.get(ZIP);
  bodies.push(await res.text().catch(() => ""));
  hostile.fields.download_url = `http://169.254.169.254/x${q("REFUSEDSECRET")}`;
  await using t2 = await appOn(fake, {});
  res = await t2.get(ZIP);
  assertEquals(res.status, 502);
  bodies.push(await res.text());
  // ")" is legal in a query and ends the URL in Deno's "(url)" error text.
  hostile.fields.download_url = `http://127.0.0.1:${closed}/x.zip${q("CONN)SECRET")}`;
  await using t3 = await appOn(fake, { egressAllow: ["127.0.0.1"] });
  res = await t3.get(ZIP);
  assertEquals(res.status, 502);
  bodies.push(await res.text());

  const logs = [t, t2, t3].flatMap((x) => x.log.lines).join("\n");
  const records = [t, t2, t3].flatMap((x) => x.upstream.map((u) => u.url)).join("\n");
  // The events were logged, with their URLs redacted.
  assertMatch(logs, /retrying/);
  assertMatch(logs, /checksum mismatch/);
  assertMatch(logs, /egress refused/);
  assertMatch(logs, /SHA256SUMS\?REDACTED/);
  assertMatch(records, /\?REDACTED/);
  for (const s of secrets) {
    assert(!logs.includes(s), `log text contains ${s}:\n${logs}`);
    assert(!records.includes(s), `request records contain ${s}`);
    assert(!bodies.join("\n").includes(s), `an error answer contains ${s}`);
  }
});

Deno.test("a token for a plain-http upstream is warned about once at start-up (not for https or loopback)", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path, {
    upstreams: {
      "plain.example": { url: "http://registry.plain.example", token: "tok-plain-0123456789" },
      "tls.example": { url: "https://registry.tls.example", token: "tok-tls-0123456789" },
      "local.example": { url: "http://127.0.0.1:9", token: "tok-local-0123456789" },
      "open.example": { url: "http://registry.open.example" },
    },
  });
  const warnings = t.log.records.filter((r) =>
    /token will be sent over plain http/.test(String(r.msg ?? r.message))
  );
  assertEquals(warnings.map((w) => w.upstream), ["plain.example"]);
  assert(!t.log.lines.join("\n").includes("tok-"), "the token itself is never logged");
});

Deno.test("the address table: internal ranges, embedded IPv4 forms and public addresses", async () => {
  for (
    const a of [
      "127.0.0.1",
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "100.64.0.1",
      "169.254.1.1",
      "0.0.0.0",
      "224.0.0.1",
      "255.255.255.255",
      "::1",
      "::",
      "fe80::1",
      "fc00::1",
      "fd12::1",
      "ff02::1",
      "::ffff:10.0.0.1",
      "::127.0.0.1",
      "64:ff9b::7f00:1",
      "2002:a00:1::1",
      "fd00:ec2::254",
      "100.100.100.200",
      "168.63.129.16",
      "fe80::1%eth0",
    ]
  ) assert(internalReason(a), `${a} is internal`);
  for (
    const a of [
      "93.184.216.34",
      "2606:4700::1111",
      "::ffff:93.184.216.34",
      "64:ff9b::5db8:d822",
      "2002:5db8:d822::1",
      "172.32.0.1",
      "100.128.0.1",
    ]
  ) {
    assertEquals(internalReason(a), undefined, a);
  }
  // NO_PROXY forms, as Deno reads them.
  const proxied = (noProxy: string, url: string) =>
    new EgressPolicy({ allowPrivateNetworks: false, egressAllow: [] }, {
      exemptOrigins: [],
      env: (n) =>
        ({ HTTPS_PROXY: "proxy.corp:3128", NO_PROXY: noProxy } as Record<string, string>)[n],
    }).proxyFor(new URL(url));
  assertEquals(proxied("", "https://a.example/"), "http://proxy.corp:3128");
  assertEquals(proxied(".corp.test", "https://a.b.corp.test/"), undefined);
  assertEquals(proxied("corp.test", "https://corp.test/"), undefined);
  assertEquals(proxied("corp.test", "https://notcorp.test/"), "http://proxy.corp:3128");
  assertEquals(proxied("10.0.0.0/8", "https://10.1.2.3/"), undefined);
  assertEquals(proxied("::1", "https://[::1]/"), undefined);
  assertEquals(proxied("*", "https://any.example/"), undefined);
  assertEquals(proxied("x", "http://plain.example/"), undefined, "HTTPS_PROXY is not for http");
  // The exact upstream origin is exempt, another port on its host is not.
  const policy = new EgressPolicy({ allowPrivateNetworks: false, egressAllow: [] }, {
    exemptOrigins: ["http://127.0.0.1:9000"],
    resolve: () => Promise.resolve(["127.0.0.1"]),
    env: () => undefined,
  });
  assertEquals(await policy.route(new URL("http://127.0.0.1:9000/v1/")), { via: "direct" });
  for (const u of ["http://127.0.0.1:9001/", "https://127.0.0.1:9000/", "http://localhost:9000/"]) {
    let refused: unknown;
    await policy.route(new URL(u)).catch((e) => refused = e);
    assert(refused instanceof EgressRefusedError, u);
    assertEquals(refused.status, 502);
    assertEquals(refused.transient, false);
  }
});

Deno.test("an allowed IPv6 address is pinned too; a resolver that never answers times out", async () => {
  const { fake, hostile } = await hostileRegistry();
  await using _f = fake;
  const archive = fake.archive("alpha", "1.0.0", "linux_amd64");
  const hits: Array<string | null> = [];
  const ac = new AbortController();
  const v6 = Deno.serve({ hostname: "::1", port: 0, signal: ac.signal, onListen() {} }, (req) => {
    hits.push(req.headers.get("host"));
    return new Response(archive.bytes as BodyInit);
  });
  try {
    // The system resolves localhost to 127.0.0.1 only: only the pin reaches ::1.
    const host = `localhost:${v6.addr.port}`;
    hostile.fields = { download_url: `http://${host}/${ZIP_NAME}` };
    const resolve = () => Promise.resolve(["::1"]);
    await using t = await appOn(fake, { egressAllow: [...fake.egressAllow, "::1/128"] }, {
      resolve,
    });
    const res = await t.get(ZIP);
    assertEquals(res.status, 200);
    assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), archive.sha256);
    assertEquals(hits, [host]);
  } finally {
    ac.abort();
    await v6.finished;
  }
  // DNS has no deadline of its own: the request's deadline covers it.
  hostile.fields = { shasums_url: "http://hangs.corp.test/SHA256SUMS" };
  const never = () => new Promise<string[]>(() => {});
  await using t = await appOn(fake, { upstreamTimeout: "1s" }, { resolve: never });
  let guard: ReturnType<typeof setTimeout> | undefined;
  const res = await Promise.race([
    t.get(ZIP),
    new Promise<Response>((r) =>
      guard = setTimeout(() => r(new Response(null, { status: 599 })), 10_000)
    ),
  ]);
  clearTimeout(guard);
  assertEquals(res.status, 504);
  await res.body?.cancel();
});
