/**
 * Issue 11 point 2: the signed SHA256SUMS is the authority for which archives
 * of a version exist; the registry's `platforms` list is only a hint (which
 * Terraform ignores and real registries get wrong). Handler-level tests of
 * both protocols against a fake registry whose lists are wrong in each of the
 * ways real ones are: a listed platform whose download document is 404, no
 * `platforms` key (or an empty list), an existing platform left out.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { PUBLISHED, SHAPES } from "./_platform_shapes.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { signDetached } from "./_pgp.ts";
import { parseVersions } from "../lib/protocol/registry_json.ts";
import { bytesOf, jsonOf, makeTestApp, mirrorFixture, sha256Hex, tempDir } from "./_helpers.ts";

const H = "registry.terraform.io";
type VersionJson = { archives: Record<string, { url: string; hashes: string[] }> };

Deno.test("{version}.json lists exactly the archives SHA256SUMS names, whatever the list says", async () => {
  await using t = await mirrorFixture({ providers: SHAPES });
  for (const type of ["wrong", "bare", "empty", "partial", "hidden"]) {
    const res = await t.get(`/${H}/example/${type}/1.0.0.json`);
    assertEquals(res.status, 200, `${type}: ${await res.clone().text()}`);
    const doc = await jsonOf(res) as VersionJson;
    assertEquals(Object.keys(doc.archives).sort(), [...PUBLISHED].sort(), type);
    for (const pl of PUBLISHED) {
      const a = t.fake.archive(type, "1.0.0", pl);
      assertEquals(doc.archives[pl], { url: a.filename, hashes: [`zh:${a.sha256}`] }, type);
    }
  }
});

Deno.test("a platform SHA256SUMS names but the list leaves out downloads byte for byte in both protocols", async () => {
  await using t = await mirrorFixture({ providers: SHAPES });
  for (const type of ["wrong", "bare", "partial"]) {
    const a = t.fake.archive(type, "1.0.0", "windows_amd64");
    // Registry protocol: the download document for the unlisted platform.
    const dl = await t.get(`/v1/providers/${H}/example/${type}/1.0.0/download/windows/amd64`);
    assertEquals(dl.status, 200, `${type}: ${await dl.clone().text()}`);
    const doc = await jsonOf(dl) as { shasum: string; filename: string; download_url: string };
    assertEquals([doc.shasum, doc.filename], [a.sha256, a.filename]);
    // Network mirror (and the registry's download_url): the archive.
    const zip = await t.get(`/${H}/example/${type}/${a.filename}`);
    assertEquals(zip.status, 200, type);
    const bytes = await bytesOf(zip);
    assertEquals(bytes.length, a.bytes.length);
    assertEquals(sha256Hex(bytes), a.sha256);
  }
});

Deno.test("SHA256SUMS and its signature are served when the first listed platform is 404, or none is listed", async () => {
  await using t = await mirrorFixture({ providers: SHAPES });
  for (const type of ["wrong", "bare", "empty", "hidden"]) {
    const sums = await t.get(`/v1/providers/${H}/example/${type}/1.0.0/SHA256SUMS`);
    assertEquals(sums.status, 200, `${type}: ${await sums.clone().text()}`);
    assertEquals(await bytesOf(sums), t.fake.sums.get(`example/${type}/1.0.0`));
    const sig = await t.get(`/v1/providers/${H}/example/${type}/1.0.0/SHA256SUMS.sig`);
    assertEquals(sig.status, 200, type);
    assertEquals(await bytesOf(sig), t.fake.signatures.get(`example/${type}/1.0.0`));
  }
});

Deno.test("a listed platform that is 404 or not in SHA256SUMS: 404 for it alone, remembered, no upstream call again", async () => {
  await using t = await mirrorFixture({ providers: SHAPES });
  const ok = await t.get(`/${H}/example/wrong/1.0.0.json`);
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  const before = t.fake.count();
  for (let i = 0; i < 5; i++) {
    for (
      const path of [
        `/v1/providers/${H}/example/wrong/1.0.0/download/linux/arm64`,
        `/v1/providers/${H}/example/wrong/1.0.0/download/openbsd/386`,
        `/${H}/example/wrong/terraform-provider-wrong_1.0.0_linux_arm64.zip`,
        // Named nowhere: SHA256SUMS (stored) decides without asking upstream.
        `/v1/providers/${H}/example/bare/1.0.0/download/plan9/arm64`,
        `/${H}/example/bare/terraform-provider-bare_1.0.0_plan9_arm64.zip`,
      ]
    ) {
      const res = await t.get(path);
      // The bare version's SHA256SUMS is found on the first of these requests.
      assertEquals(res.status, 404, path);
      await res.body?.cancel();
    }
  }
  // Only the bare version's first look: one download document and SHA256SUMS + signature.
  const after = t.fake.requests.slice(before).map((r) => r.path);
  // A listed platform's document is asked upstream as the client asked it
  // (once: the 404 is remembered); the others were known from the first answer.
  assertEquals(after.filter((p) => p.includes("/wrong/")), [
    "/v1/providers/example/wrong/1.0.0/download/openbsd/386",
  ]);
  // The bare version lists nothing: the search for its SHA256SUMS tries the
  // client's platform (404) first, then linux_amd64; later SHA256SUMS decides.
  assertEquals(after.filter((p) => p.includes("plan9")), [
    "/v1/providers/example/bare/1.0.0/download/plan9/arm64",
  ]);
  // openbsd_386; versions, plan9_arm64 and linux_amd64 documents, sums, sig
  assertEquals(after.length, 1 + 1 + 2 + 2, after.join("\n"));
});

Deno.test("the honest case costs what it did: one download document for SHA256SUMS, no fan-out", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "honest",
      versions: [{ version: "1.0.0", platforms: PUBLISHED }],
    }],
  });
  const res = await t.get(`/${H}/example/honest/1.0.0.json`);
  assertEquals(res.status, 200);
  assertEquals(
    Object.keys((await jsonOf(res) as VersionJson).archives).sort(),
    [...PUBLISHED].sort(),
  );
  assertEquals(t.fake.count((r) => r.path.includes("/download/")), 1);
  assertEquals(t.fake.count((r) => r.path.endsWith("/SHA256SUMS")), 1);
});

Deno.test("the first listed platform 404: the next listed is tried, and the 404 is not asked again", async () => {
  await using t = await mirrorFixture({ providers: SHAPES });
  const a = await t.get(`/${H}/example/wrong/1.0.0.json`);
  assertEquals(a.status, 200);
  await a.body?.cancel();
  assertEquals(t.fake.count((r) => r.path.endsWith("/download/linux/arm64")), 1);
  assertEquals(t.fake.count((r) => r.path.endsWith("/download/linux/amd64")), 1);
  // A listed platform SHA256SUMS does not name costs no request.
  assertEquals(t.fake.count((r) => r.path.endsWith("/download/openbsd/386")), 0);
  assertEquals(t.fake.count((r) => r.path.includes("/download/")), 2);
  // A registry-protocol request for the same version afterwards asks nothing more.
  const before = t.fake.count();
  const s = await t.get(`/v1/providers/${H}/example/wrong/1.0.0/SHA256SUMS`);
  assertEquals(s.status, 200);
  await s.body?.cancel();
  assertEquals(t.fake.count(), before);
});

Deno.test("no download document of any listed or common platform: a clear 502 naming what was tried, cheap to repeat", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "rare",
      versions: [{ version: "1.0.0", platforms: ["plan9_amd64"], listed: ["plan9_arm"] }],
    }],
  });
  const res = await t.get(`/${H}/example/rare/1.0.0.json`);
  assertEquals(res.status, 502);
  const msg = JSON.stringify(await jsonOf(res));
  assertMatch(msg, /no download document for registry\.terraform\.io\/example\/rare 1\.0\.0/);
  assertMatch(msg, /plan9_arm, linux_amd64, darwin_arm64/);
  const asked = t.fake.count((r) => r.path.includes("/download/"));
  assert(asked >= 2 && asked <= 10, `${asked} documents`);
  const again = await t.get(`/v1/providers/${H}/example/rare/1.0.0/SHA256SUMS`);
  assertEquals(again.status, 502);
  await again.body?.cancel();
  assertEquals(t.fake.count((r) => r.path.includes("/download/")), asked, "404s asked again");
});

Deno.test("offline afterwards: a stored archive of an unlisted platform is offered and served in both protocols", async () => {
  await using dir = await tempDir();
  await using fake = await startFakeRegistry({ providers: SHAPES });
  const wanted = ["bare", "partial"].map((type) => fake.archive(type, "1.0.0", "windows_amd64"));
  {
    await using online = await makeTestApp(fake, dir.path);
    for (const a of wanted) {
      const res = await online.get(`/${H}/example/${a.type}/${a.filename}`);
      assertEquals(sha256Hex(await bytesOf(res)), a.sha256);
      for (
        const path of [
          `/v1/providers/${H}/example/${a.type}/versions`,
          `/v1/providers/${H}/example/${a.type}/1.0.0/download/windows/amd64`,
          `/v1/providers/${H}/example/${a.type}/1.0.0/SHA256SUMS`,
        ]
      ) {
        const r = await online.get(path);
        assertEquals(r.status, 200, path);
        await r.body?.cancel();
      }
    }
    await online.app.settle();
  }
  await using t = await makeTestApp(undefined, dir.path, {
    offline: true,
    upstreams: { [H]: { url: "http://127.0.0.1:9" } },
  });
  for (const a of wanted) {
    const list = await jsonOf(await t.get(`/v1/providers/${H}/example/${a.type}/versions`)) as {
      versions: Array<{ version: string; platforms: unknown[] }>;
    };
    assertEquals(list.versions, [{
      version: "1.0.0",
      protocols: ["5.0"],
      platforms: [{ os: "windows", arch: "amd64" }],
    }] as unknown);
    const dl = await t.get(`/v1/providers/${H}/example/${a.type}/1.0.0/download/windows/amd64`);
    assertEquals((await jsonOf(dl) as { shasum: string }).shasum, a.sha256);
    const v = await jsonOf(await t.get(`/${H}/example/${a.type}/1.0.0.json`)) as VersionJson;
    assertEquals(Object.keys(v.archives), ["windows_amd64"]);
    assertEquals(v.archives.windows_amd64!.hashes.at(-1), `zh:${a.sha256}`);
    const zip = await t.get(`/${H}/example/${a.type}/${a.filename}`);
    assertEquals(await bytesOf(zip), a.bytes);
  }
  assertEquals(t.upstream, [], "offline never contacts an upstream");
});

/** `n` made-up platform names that no fake publishes. */
function madeUp(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `os${i}_arch${i % 7}`);
}

Deno.test("a hostile list of 700 platforms: with one real first, 1 document asked; all 404, a bounded search then 502", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "hostile",
      versions: [
        { version: "1.0.0", platforms: PUBLISHED, listed: ["linux_amd64", ...madeUp(700)] },
        { version: "2.0.0", platforms: ["plan9_amd64"], listed: madeUp(700) },
      ],
    }],
    config: { limits: { platformConcurrency: 3 } },
  });
  const docs = () => t.fake.count((r) => r.path.includes("/download/"));
  const ok = await t.get(`/${H}/example/hostile/1.0.0.json`);
  assertEquals(ok.status, 200);
  assertEquals(
    Object.keys((await jsonOf(ok) as VersionJson).archives).sort(),
    [...PUBLISHED].sort(),
  );
  assertEquals(docs(), 1, "listed platforms SHA256SUMS does not name were asked");
  const bad = await t.get(`/${H}/example/hostile/2.0.0.json`);
  assertEquals(bad.status, 502);
  await bad.body?.cancel();
  const searched = docs() - 1;
  // 32 listed and the 9 common platforms at most.
  assert(searched <= 41 && searched >= 10, `${searched} documents asked`);
  const again = await t.get(`/v1/providers/${H}/example/hostile/2.0.0/SHA256SUMS`);
  assertEquals(again.status, 502);
  await again.body?.cancel();
  assertEquals(docs() - 1, searched, "the 404s were asked again");
});

Deno.test("the search for SHA256SUMS stops at the client's deadline in both protocols", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "slow",
      versions: [{ version: "1.0.0", platforms: ["plan9_amd64"], listed: madeUp(700) }],
    }],
    registry: {
      // Every download document takes 150 ms: the whole search would take ~2 s.
      intercept: async (req) => {
        if (new URL(req.url).pathname.includes("/download/")) {
          await new Promise((r) => setTimeout(r, 150));
        }
        return undefined;
      },
    },
    config: { limits: { platformConcurrency: 2 } },
    deps: { requestDeadlineMs: 400 },
  });
  const docs = () => t.fake.count((r) => r.path.includes("/download/"));
  for (
    const path of [
      `/v1/providers/${H}/example/slow/1.0.0/SHA256SUMS`,
      `/v1/providers/${H}/example/slow/1.0.0/download/plan9/amd64`,
      `/${H}/example/slow/1.0.0.json`,
    ]
  ) {
    const before = docs();
    const res = await t.get(path);
    assertEquals(res.status, 504, path);
    await res.body?.cancel();
    // Long enough for ~10 more documents if the search went on.
    await new Promise((r) => setTimeout(r, 800));
    // At the deadline (~400 ms) at most the batch in flight finishes: ~1 + 2 + 2 + 2.
    const asked = docs() - before;
    assert(asked <= 9, `${path}: ${asked} documents asked, the search went on`);
  }
  await t.app.settle();
});

Deno.test("a release for an uncommon platform the list gets wrong: the client's own platform is tried in the search", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "rare",
      versions: [{ version: "1.0.0", platforms: ["plan9_amd64"], listed: ["plan9_arm"] }],
    }],
  });
  const a = t.fake.archive("rare", "1.0.0", "plan9_amd64");
  const dl = await t.get(`/v1/providers/${H}/example/rare/1.0.0/download/plan9/amd64`);
  assertEquals(dl.status, 200, await dl.clone().text());
  assertEquals((await jsonOf(dl) as { shasum: string }).shasum, a.sha256);
  const sums = await t.get(`/v1/providers/${H}/example/rare/1.0.0/SHA256SUMS`);
  assertEquals(await bytesOf(sums), t.fake.sums.get("example/rare/1.0.0"));
  const zip = await t.get(`/${H}/example/rare/${a.filename}`);
  assertEquals(sha256Hex(await bytesOf(zip)), a.sha256);
  // Found through plan9_arm (404), then plan9_amd64: no common platform asked.
  const asked = t.fake.requests.filter((r) => r.path.includes("/download/"))
    .map((r) => r.path.split("/download/")[1]);
  assertEquals(asked, ["plan9/arm", "plan9/amd64"]);
});

Deno.test("searches for SHA256SUMS of many versions at once share limits.platformConcurrency beyond their first document", async () => {
  const versions = ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0"];
  const seen = new Set<string>();
  let inflight = 0;
  let peak = 0;
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "many",
      versions: versions.map((version) => ({
        version,
        platforms: ["plan9_amd64"],
        listed: madeUp(40),
      })),
    }],
    registry: {
      intercept: async (req) => {
        const m = /\/many\/([^/]+)\/download\//.exec(new URL(req.url).pathname);
        if (!m) return undefined;
        // Each version's first document is not counted (honest answers never wait).
        if (!seen.has(m[1]!)) {
          seen.add(m[1]!);
          await new Promise((r) => setTimeout(r, 20));
          return undefined;
        }
        peak = Math.max(peak, ++inflight);
        await new Promise((r) => setTimeout(r, 20));
        inflight--;
        return undefined;
      },
    },
    config: { limits: { platformConcurrency: 2 } },
  });
  const answers = await Promise.all(
    versions.map((v) => t.get(`/v1/providers/${H}/example/many/${v}/SHA256SUMS`)),
  );
  for (const a of answers) {
    assertEquals(a.status, 502);
    await a.body?.cancel();
  }
  assert(t.fake.count((r) => r.path.includes("/download/")) >= 6 * 10);
  assert(peak <= 2, `${peak} documents at once beyond the first of each search`);
});

Deno.test("SHA256SUMS naming its archives otherwise (a renamed provider): each listed document says which line is its own", async () => {
  const ref: { fake?: FakeRegistry } = {};
  let renamed: Uint8Array | undefined;
  let signature: Uint8Array | undefined;
  const old = (pl: string) => `terraform-provider-oldname_1.0.0_${pl}.zip`;
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "renamed",
      versions: [{
        version: "1.0.0",
        platforms: PUBLISHED,
        listed: ["linux_amd64", "linux_arm64"],
      }],
    }],
    registry: {
      intercept: async (req, server) => {
        const f = ref.fake!;
        const path = new URL(req.url).pathname;
        if (!renamed) {
          const lines = PUBLISHED.map((pl) =>
            `${f.archive("renamed", "1.0.0", pl).sha256}  ${old(pl)}`
          );
          renamed = new TextEncoder().encode(lines.join("\n") + "\n");
          signature = await signDetached(f.signingKey.privateKeyArmored, renamed);
        }
        if (server === "release" && path.endsWith("/SHA256SUMS")) {
          return new Response(renamed as BodyInit);
        }
        if (server === "release" && path.endsWith("/SHA256SUMS.sig")) {
          return new Response(signature as BodyInit);
        }
        const m = /\/download\/([^/]+)\/([^/]+)$/.exec(path);
        if (server !== "registry" || !m) return undefined;
        const pl = `${m[1]}_${m[2]}`;
        if (!PUBLISHED.includes(pl)) return undefined;
        const a = f.archive("renamed", "1.0.0", pl);
        const dir = `${f.releaseUrl}/files/example/renamed/1.0.0`;
        return Response.json({
          protocols: ["5.0"],
          os: m[1],
          arch: m[2],
          filename: old(pl),
          download_url: `${dir}/${a.filename}`,
          shasums_url: `${dir}/SHA256SUMS`,
          shasums_signature_url: `${dir}/SHA256SUMS.sig`,
          shasum: a.sha256,
          signing_keys: {
            gpg_public_keys: [{
              key_id: f.signingKey.keyId.toUpperCase(),
              ascii_armor: f.signingKey.publicKeyArmored,
            }],
          },
        });
      },
    },
  });
  ref.fake = t.fake;
  const res = await t.get(`/${H}/example/renamed/1.0.0.json`);
  assertEquals(res.status, 200, await res.clone().text());
  const a = t.fake.archive("renamed", "1.0.0", "linux_amd64");
  // Only what the listed documents vouch for: linux_arm64 is 404, the unlisted ones unknown.
  assertEquals((await jsonOf(res) as VersionJson).archives, {
    linux_amd64: { url: a.filename, hashes: [`zh:${a.sha256}`] },
  });
  const zip = await t.get(`/${H}/example/renamed/${a.filename}`);
  assertEquals(sha256Hex(await bytesOf(zip)), a.sha256);
});

Deno.test("parseVersions: no platforms key, null, and entries that are not platforms", () => {
  const got = parseVersions(JSON.stringify({
    versions: [
      {
        version: "1.0.0",
        platforms: [{}, { os: 1, arch: 2 }, null, "linux_amd64", { os: "linux", arch: "amd64" }],
      },
      { version: "1.1.0", platforms: null },
      { version: "1.2.0" },
    ],
  }));
  assertEquals(got, [
    { version: "1.0.0", platforms: [{ os: "linux", arch: "amd64" }] },
    { version: "1.1.0" },
    { version: "1.2.0" },
  ]);
});
