/** Offline mode: no upstream contact, and only what is cached is offered. */
import { assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, jsonOf, makeTestApp, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("offline: lists only cached versions and platforms, serves them, contacts nobody", async () => {
  await using dir = await tempDir();
  const fa = await (async () => {
    await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
    await using online = await makeTestApp(fake, dir.path);
    const a = fake.archive("alpha", "1.0.0", "linux_amd64");
    assertEquals(await bytesOf(await online.get(`/${H}/example/alpha/${a.filename}`)), a.bytes);
    await (await online.get(`/v1/providers/${H}/example/alpha/versions`)).body?.cancel();
    await online.app.settle();
    return a;
  })();

  await using t = await makeTestApp(undefined, dir.path, {
    offline: true,
    upstreams: { [H]: { url: "http://127.0.0.1:9" } },
  });
  assertEquals(await jsonOf(await t.get(`/${H}/example/alpha/index.json`)), {
    versions: { "1.0.0": {} },
  });
  const v = await jsonOf(await t.get(`/${H}/example/alpha/1.0.0.json`)) as {
    archives: Record<string, { url: string; hashes: string[] }>;
  };
  assertEquals(Object.keys(v.archives), ["linux_amd64"]);
  assertEquals(v.archives.linux_amd64!.url, fa.filename);
  assertEquals(v.archives.linux_amd64!.hashes.length, 2);
  assertMatch(v.archives.linux_amd64!.hashes[0]!, /^h1:/);
  assertEquals(v.archives.linux_amd64!.hashes[1], `zh:${fa.sha256}`);

  const notCached = await t.get(`/${H}/example/alpha/1.1.0.json`);
  assertEquals(notCached.status, 404);
  assertMatch((await jsonOf(notCached) as { errors: string[] }).errors[0]!, /offline/);
  const nothing = await t.get(`/${H}/example/beta/index.json`);
  assertEquals(nothing.status, 404);
  await nothing.body?.cancel();

  const hit = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(hit.status, 200);
  assertEquals(await bytesOf(hit), fa.bytes);
  const miss = await t.get(`/${H}/example/alpha/terraform-provider-alpha_1.0.0_darwin_arm64.zip`);
  assertEquals(miss.status, 404);
  assertMatch(
    (await jsonOf(miss) as { errors: string[] }).errors[0]!,
    /not cached and this mirror is offline/,
  );

  const reg = await jsonOf(await t.get(`/v1/providers/${H}/example/alpha/versions`)) as {
    versions: Array<{ version: string; platforms: unknown[] }>;
  };
  assertEquals(reg.versions.map((x) => [x.version, x.platforms]), [["1.0.0", [{
    os: "linux",
    arch: "amd64",
  }]]]);
  assertEquals(t.upstream, [], "offline never contacts an upstream");
});
