/**
 * Signature verification on ingest: a release whose SHA256SUMS, signature or
 * checksums do not hold together is refused (502), and nothing is cached.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  exists,
  jsonOf,
  listDir,
  makeTestApp,
  mirrorFixture,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import { makeSigningKey, signDetached } from "./_pgp.ts";

const H = "registry.terraform.io";

async function expectRefused(
  fake: FakeRegistry,
  raw: Record<string, unknown>,
  reason: RegExp,
  path = `/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`,
  sumsRefused = true,
) {
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path, raw);
  const res = await t.get(path);
  assertEquals(res.status, 502);
  const body = await jsonOf(res) as { errors: string[] };
  assertMatch(body.errors[0]!, reason);
  await t.app.settle();
  assertEquals(await listDir(join(dir.path, "packages", H)), [], "nothing enters packages/");
  // Signed sums that fail verification are never stored; genuine ones may be.
  if (sumsRefused) {
    assertEquals(
      await exists(join(dir.path, "refs", H, "example", "alpha", "1.0.0", "SHA256SUMS.json")),
      false,
    );
  }
  assertEquals(await tempLeftovers(dir.path), []);
  return t;
}

Deno.test("a signature by a key the upstream does not offer is refused", async () => {
  const other = await makeSigningKey("Somebody Else");
  // The intercept closure reads `fake` only after it is assigned.
  const fake: FakeRegistry = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: async (req) => {
      if (new URL(req.url).pathname === "/files/example/alpha/1.0.0/SHA256SUMS.sig") {
        return new Response(
          await signDetached(
            other.privateKeyArmored,
            fake.sums.get("example/alpha/1.0.0")!,
          ) as BodyInit,
        );
      }
    },
  });
  await using _ = fake;
  await expectRefused(
    fake,
    {},
    /refusing SHA256SUMS of .*alpha 1\.0\.0: Signature of SHA256SUMS does not verify/,
  );
});

Deno.test("tampered SHA256SUMS (signature no longer matches) is refused", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req) => {
      if (new URL(req.url).pathname === "/files/example/alpha/1.0.0/SHA256SUMS") {
        return new Response(`${"0".repeat(64)}  terraform-provider-alpha_1.0.0_linux_amd64.zip\n`);
      }
    },
  });
  await expectRefused(fake, {}, /does not verify/);
  // The network mirror refuses the version document for the same reason.
  await expectRefused(fake, {}, /does not verify/, `/${H}/example/alpha/1.0.0.json`);
});

Deno.test("SHA256SUMS without a line for the archive is refused", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    extraDownloadFields: (s) =>
      s.os === "linux"
        ? { filename: "terraform-provider-alpha_1.0.0_linux_amd64_RENAMED.zip" }
        : {},
  });
  await expectRefused(
    fake,
    {},
    /SHA256SUMS has no line for terraform-provider-alpha_1\.0\.0_linux_amd64_RENAMED\.zip/,
    undefined,
    false,
  );
});

Deno.test("a download document whose shasum differs from the signed SHA256SUMS is refused", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    extraDownloadFields: (s) => s.os === "linux" ? { shasum: "ab".repeat(32) } : {},
  });
  await expectRefused(
    fake,
    {},
    /download document's shasum (ab){32} differs from SHA256SUMS/,
    undefined,
    false,
  );
});

Deno.test("trustedKeys: only the pinned key may sign, whatever the upstream offers", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  const other = await makeSigningKey("Pinned But Not The Signer");
  await expectRefused(
    fake,
    { upstreams: { [H]: { url: fake.registryUrl, trustedKeys: [other.publicKeyArmored] } } },
    /trusted signing keys pinned by the operator/,
  );
  // Pinning the key that did sign works.
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path, {
    upstreams: { [H]: { url: fake.registryUrl, trustedKeys: [fake.signingKey.publicKeyArmored] } },
  });
  const fa = fake.archive("alpha", "1.0.0", "linux_amd64");
  const res = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(res.status, 200);
  assertEquals(await bytesOf(res), fa.bytes);
  await t.app.settle();
  assert(
    t.log.records.some((r) =>
      r.msg === "SHA256SUMS signature verified" && r.keyId === fake.signingKey.keyId
    ),
  );
});

// The platforms list is only a hint (issue 11): what makes this version
// unusable is that no download document leads to a SHA256SUMS.
Deno.test("a version with no platforms and no download document anywhere is refused with 502", async () => {
  await using t = await mirrorFixture({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: [] }],
    }],
  });
  const res = await t.get(`/${H}/example/alpha/1.0.0.json`);
  assertEquals(res.status, 502);
  assertMatch(
    (await jsonOf(res) as { errors: string[] }).errors[0]!,
    /no download document for .*example\/alpha 1\.0\.0 \(tried linux_amd64, /,
  );
});

Deno.test("a refused release does not replace the last good metadata", async () => {
  let tamper = false;
  let now = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (tamper && new URL(req.url).pathname.endsWith("/versions")) {
          return new Response("{not json");
        }
      },
    },
    deps: { now: () => now },
  });
  const { dir } = t;
  const good = await jsonOf(await t.get(`/${H}/example/alpha/index.json`));
  tamper = true;
  now += 3_600_000;
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "stale");
  assertEquals(await jsonOf(res), good);
  const stored = JSON.parse(
    await Deno.readTextFile(join(dir.path, "refs", H, "example", "alpha", "versions.json")),
  );
  assertEquals(stored.fetchedAt, 0, "the good copy is still the stored one");
});
