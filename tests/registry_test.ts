/**
 * The pull-through registry protocol against the fake registry: documents
 * rewritten field by field, checksums and signatures byte for byte, one cache
 * shared with the network mirror.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, jsonOf, makeTestApp, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("registry versions: the upstream answer byte for byte, cached and shared with index.json", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;

  const upstream = await fetch(`${fake.registryUrl}/v1/providers/example/alpha/versions`).then((
    r,
  ) => r.text());
  const before = fake.count();
  const res = await t.get(`/v1/providers/${H}/example/alpha/versions`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("content-type"), "application/json");
  assertEquals(await res.text(), upstream);
  const afterFirst = fake.count();
  assertEquals(afterFirst - before, 2); // discovery + versions

  // The network mirror's index.json is answered from the same stored list.
  const idx = await jsonOf(await t.get(`/${H}/example/alpha/index.json`));
  assertEquals(idx, { versions: { "1.1.0": {}, "1.0.0": {} } });
  const again = await t.get(`/v1/providers/${H}/example/alpha/versions`);
  assertEquals(again.headers.get("x-repoxy-cache"), "hit");
  await again.body?.cancel();
  assertEquals(fake.count(), afterFirst);
});

Deno.test("registry download: only the three URLs change, and they serve the upstream bytes", async () => {
  const packages = (s: { os: string; arch: string }) => ({
    packages: { [`${s.os}_${s.arch}`]: { hashes: ["zh:feed"], package_size: 123 } },
  });
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { extraDownloadFields: packages },
  });
  const { fake } = t;

  const path = `/v1/providers/example/beta/2.3.4/download/darwin/arm64`;
  const upstreamDoc = await fetch(fake.registryUrl + path).then((r) => r.json());
  const res = await t.get(`/v1/providers/${H}/example/beta/2.3.4/download/darwin/arm64`);
  assertEquals(res.status, 200);
  const doc = await jsonOf(res) as Record<string, unknown>;
  assertEquals(Object.keys(doc), Object.keys(upstreamDoc));
  for (const k of Object.keys(upstreamDoc)) {
    if (["download_url", "shasums_url", "shasums_signature_url"].includes(k)) continue;
    assertEquals(doc[k], upstreamDoc[k], `field ${k} passes through`);
  }
  assertEquals(
    doc.download_url,
    `/${H}/example/beta/terraform-provider-beta_2.3.4_darwin_arm64.zip`,
  );
  assertEquals(doc.shasums_url, `/v1/providers/${H}/example/beta/2.3.4/SHA256SUMS`);
  assertEquals(doc.shasums_signature_url, `/v1/providers/${H}/example/beta/2.3.4/SHA256SUMS.sig`);
  assertEquals(doc.packages, { darwin_arm64: { hashes: ["zh:feed"], package_size: 123 } });

  const sums = await t.get(doc.shasums_url as string);
  assertEquals(sums.status, 200);
  assertEquals(await bytesOf(sums), fake.sums.get("example/beta/2.3.4"));
  const sig = await t.get(doc.shasums_signature_url as string);
  assertEquals(sig.status, 200);
  assertEquals(await bytesOf(sig), fake.signatures.get("example/beta/2.3.4"));
  const zip = await t.get(doc.download_url as string);
  assertEquals(await bytesOf(zip), fake.archive("beta", "2.3.4", "darwin_arm64").bytes);
  await t.app.settle();
});

Deno.test("one cache for both protocols: what the mirror fetched, the registry serves without upstream", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const fa = fake.archive("alpha", "1.0.0", "linux_amd64");

  // Network mirror client: index, version document, archive.
  await (await t.get(`/${H}/example/alpha/index.json`)).body?.cancel();
  await (await t.get(`/${H}/example/alpha/1.0.0.json`)).body?.cancel();
  assertEquals(await bytesOf(await t.get(`/${H}/example/alpha/${fa.filename}`)), fa.bytes);
  await t.app.settle();
  const afterMirror = fake.count();

  // Registry client for the same platform: every answer comes from the cache.
  await (await t.get(`/v1/providers/${H}/example/alpha/versions`)).body?.cancel();
  const doc = await jsonOf(
    await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/linux/amd64`),
  ) as Record<
    string,
    string
  >;
  assertEquals(await bytesOf(await t.get(doc.shasums_url!)), fake.sums.get("example/alpha/1.0.0"));
  assertEquals(
    await bytesOf(await t.get(doc.shasums_signature_url!)),
    fake.signatures.get("example/alpha/1.0.0"),
  );
  const hit = await t.get(doc.download_url!);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals(await bytesOf(hit), fa.bytes);
  assertEquals(fake.count(), afterMirror, "no upstream request for the second protocol");

  // And the other way round: a registry-protocol fetch is a mirror hit.
  const fb = fake.archive("alpha", "1.0.0", "darwin_arm64");
  const d2 = await jsonOf(
    await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/darwin/arm64`),
  ) as Record<
    string,
    string
  >;
  assertEquals(await bytesOf(await t.get(d2.download_url!)), fb.bytes);
  await t.app.settle();
  const n = fake.count();
  const viaMirror = await t.get(`/${H}/example/alpha/${fb.filename}`);
  assertEquals(viaMirror.headers.get("x-repoxy-cache"), "hit");
  assertEquals(await bytesOf(viaMirror), fb.bytes);
  assertEquals(fake.count(), n);
});

Deno.test("registry routes without a hostname use defaultUpstream", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path, {
    upstreams: { [H]: { url: fake.registryUrl }, "other.example": { url: "http://127.0.0.1:9" } },
    defaultUpstream: H,
  });
  const res = await t.get(`/v1/providers/example/beta/versions`);
  assertEquals(res.status, 200);
  assertEquals((await jsonOf(res) as { versions: unknown[] }).versions.length, 1);
  const dl = await jsonOf(
    await t.get(`/v1/providers/example/beta/2.3.4/download/linux/arm64`),
  ) as Record<
    string,
    string
  >;
  assertEquals(dl.download_url, `/${H}/example/beta/terraform-provider-beta_2.3.4_linux_arm64.zip`);
  assertEquals(t.upstream.filter((u) => u.url.startsWith("http://127.0.0.1:9/")).length, 0);
});

Deno.test("publicUrl makes rewritten URLs absolute", async () => {
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { publicUrl: "https://mirror.example.com/" },
  });
  const dl = await jsonOf(
    await t.get(`/v1/providers/${H}/example/beta/2.3.4/download/linux/arm64`),
  ) as Record<
    string,
    string
  >;
  assertEquals(
    dl.download_url,
    `https://mirror.example.com/${H}/example/beta/terraform-provider-beta_2.3.4_linux_arm64.zip`,
  );
  assertEquals(
    dl.shasums_url,
    `https://mirror.example.com/v1/providers/${H}/example/beta/2.3.4/SHA256SUMS`,
  );
});

Deno.test("a client's own Authorization header is never forwarded upstream", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const auth = { headers: { authorization: "Bearer client-token-for-registry.terraform.io" } };
  await (await t.get(`/v1/providers/${H}/example/alpha/versions`, auth)).body?.cancel();
  const doc = await jsonOf(
    await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/linux/amd64`, auth),
  ) as Record<
    string,
    string
  >;
  await bytesOf(await t.get(doc.download_url!, auth));
  await bytesOf(await t.get(doc.shasums_url!, auth));
  await t.app.settle();
  assert(fake.requests.length >= 5);
  for (const r of fake.requests) assertEquals(r.headers.get("authorization"), null, r.path);
});

Deno.test("modules.v1: the version list as the registry sent it, the download at Repoxy's own archive", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const v = await t.get(`/v1/modules/${H}/hashicorp/consul/aws/versions`);
  assertEquals(v.status, 200);
  assertEquals(await jsonOf(v), {
    modules: [{ source: "hashicorp/consul/aws", versions: [{ version: "0.1.0" }] }],
  });
  const d = await t.get(`/v1/modules/${H}/hashicorp/consul/aws/0.1.0/download`);
  assertEquals(d.status, 204);
  // An HTTP archive source is fetched and kept by Repoxy (tests/modules_test.ts).
  assertEquals(
    d.headers.get("x-terraform-get"),
    `/v1/modules/${H}/hashicorp/consul/aws/0.1.0/module.tar.gz`,
  );
  assert(fake.registryUrl);
  await d.body?.cancel();
  const missing = await t.get(`/v1/modules/${H}/hashicorp/nope/aws/versions`);
  assertEquals(missing.status, 404);
  assertMatch(((await jsonOf(missing)) as { errors: string[] }).errors[0]!, /no module/);
});
