/**
 * Red team of issue 11: hostile inputs to the new surfaces (version
 * constraints, version-list revalidation, the SHA256SUMS search, the legacy
 * lookup, refused credentials, `repoxy lock`). Each test failed on the code
 * as merged and pins the mended behaviour.
 * @module
 */
import { assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { readDirRequirements } from "../lib/commands/lock_inputs.ts";
import { memoryLogger } from "../lib/base/log.ts";
import type { RefsStore } from "../lib/cache/refs_store.ts";
import { NOT_MODIFIED, RefCache } from "../lib/upstream/ref_cache.ts";
import { LockFileError } from "../lib/protocol/lockfile.ts";
import { ArgumentError } from "../lib/protocol/provider_address.ts";
import { compareVersions } from "../lib/protocol/names.ts";
import {
  ConstraintError,
  newestAllowed,
  parseConstraints,
  parseRequiredVersion,
} from "../lib/protocol/version_constraints.ts";
import { bytesOf, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { signDetached } from "./_pgp.ts";

/** Whether the real terraform runs here (decided at module load). */
const TERRAFORM = (() => {
  try {
    return new Deno.Command("terraform", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();
if (!TERRAFORM) {
  // deno-lint-ignore no-console
  console.log("SKIP: red11 constraints vs terraform: no terraform binary on PATH");
}

/** Constraint strings near the edges of Terraform's grammar. */
const CONSTRAINTS = [
  "v1.2.3",
  "=v1",
  ">=\t1.0",
  ">=  1.0",
  "~>  1.2",
  "99999999999999999999.0.0",
  "1.9223372036854775808.0",
  "1.2.3-a..b",
  "1.2.3-a.",
  "1.2.3+a..b",
  "",
  " ",
  // Accepted by both (the grammar must not get stricter than Terraform's).
  "1.2.3",
  "= 1.2.3",
  ">=1.0",
  "~> 1.2.3, != 1.2.5",
  " >= 1.0 ",
  "1.2.3-beta.1+build.7",
  "1.2.3-a-b",
  "9223372036854775807.0.0",
  "01.2.3",
];

Deno.test({
  name: "version constraints: refused exactly where terraform refuses them (required_providers)",
  ignore: !TERRAFORM,
  async fn() {
    await using dir = await tempDir();
    const disagree: string[] = [];
    for (const c of CONSTRAINTS) {
      await Deno.writeTextFile(
        `${dir.path}/main.tf`,
        `terraform {\n  required_providers {\n    x = { source = "hashicorp/x", version = ${
          JSON.stringify(c)
        } }\n  }\n}\n`,
      );
      const out = await new Deno.Command("terraform", {
        args: ["providers", "-no-color"],
        cwd: dir.path,
        env: { TF_CLI_CONFIG_FILE: "/dev/null", CHECKPOINT_DISABLE: "1", HOME: dir.path },
        stdout: "piped",
        stderr: "piped",
      }).output();
      let ours = true;
      try {
        parseRequiredVersion(c);
      } catch (e) {
        if (!(e instanceof ConstraintError)) throw e;
        ours = false;
      }
      if (ours !== out.success) {
        disagree.push(`${JSON.stringify(c)}: terraform ${out.success ? "accepts" : "refuses"}`);
      }
    }
    assertEquals(disagree, []);
  },
});

Deno.test("version constraints: a lock file's empty constraints means none; a config's is refused", () => {
  assertEquals(parseConstraints(""), []);
  assertThrows(() => parseRequiredVersion(""), ConstraintError);
  assertThrows(() => parseConstraints("v1.2.3"), ConstraintError, "v1.2.3");
});

const H = "registry.terraform.io";
const LEGACY_PATH = "/v1/providers/-/datadog/versions";

Deno.test("legacy lookup: a hostile upstream cannot serve HTML (or any non-JSON) from the mirror's origin", async () => {
  const page = "<html><script>alert(document.cookie)</script></html>";
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      legacyLookup: true,
      intercept: (req) => {
        const path = new URL(req.url).pathname;
        if (path === LEGACY_PATH) {
          return new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });
        }
        if (path === "/v1/providers/-/aws/versions") {
          // JSON, but labelled as a page.
          return new Response(JSON.stringify({ id: "hashicorp/aws" }), {
            headers: { "content-type": "text/html" },
          });
        }
        return undefined;
      },
    },
  });
  const html = await t.get(`/v1/providers/${H}/-/datadog/versions`);
  const body = new TextDecoder().decode(await bytesOf(html));
  assertEquals(html.status, 502);
  assertEquals(body.includes("<script>"), false);
  assertEquals(html.headers.get("content-type")?.startsWith("application/json"), true);

  const labelled = await t.get(`/v1/providers/-/aws/versions`);
  assertEquals(labelled.status, 200);
  assertEquals(labelled.headers.get("content-type"), "application/json");
  assertEquals(JSON.parse(new TextDecoder().decode(await bytesOf(labelled))).id, "hashicorp/aws");
});

Deno.test("refused credentials: a 403 from another host the registry redirects to is not blamed on the mirror's token", async () => {
  let releaseUrl = "";
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      legacyLookup: true,
      intercept: (req, server) => {
        const path = new URL(req.url).pathname;
        if (server === "registry" && path === LEGACY_PATH) {
          return Response.redirect(`${releaseUrl}/elsewhere/datadog`, 302);
        }
        if (server === "release" && path === "/elsewhere/datadog") {
          return new Response("AccessDenied", { status: 403 });
        }
        return undefined;
      },
    },
  });
  releaseUrl = t.fake.releaseUrl;
  const res = await t.get(`/v1/providers/${H}/-/datadog/versions`);
  const body = new TextDecoder().decode(await bytesOf(res));
  assertEquals(t.fake.count((r) => r.path === "/elsewhere/datadog"), 1);
  // Whatever the status, the answer must not send the operator after a token.
  assertEquals(/token|credentials/i.test(body), false, body);
  assertEquals(t.log.lines.filter((l) => /token|credentials/i.test(l)), []);
});

Deno.test("repoxy lock inputs: a hostile lock file or modules.json is a usage error naming the file, never a crash", async () => {
  await using dir = await tempDir();
  const lockPath = `${dir.path}/.terraform.lock.hcl`;
  const modules = `${dir.path}/.terraform/modules`;
  await Deno.mkdir(modules, { recursive: true });
  const cases: Array<[string, string, string, typeof LockFileError | typeof ArgumentError]> = [
    ["lock", lockPath, "a {".repeat(100_000) + "}".repeat(100_000), LockFileError],
    ["lock", lockPath, "x = " + "[".repeat(100_000) + "]".repeat(100_000), LockFileError],
    ["lock", lockPath, "x = " + "{a = ".repeat(100_000) + "1" + "}".repeat(100_000), LockFileError],
    ["modules", `${modules}/modules.json`, "null", ArgumentError],
    ["modules", `${modules}/modules.json`, '{"Modules": 5}', ArgumentError],
    ["modules", `${modules}/modules.json`, '{"Modules": [null]}', ArgumentError],
    ["modules", `${modules}/modules.json`, '"text"', ArgumentError],
  ];
  for (const [kind, path, text, want] of cases) {
    await Deno.remove(lockPath).catch(() => {});
    await Deno.remove(`${modules}/modules.json`).catch(() => {});
    await Deno.writeTextFile(`${dir.path}/main.tf`, kind === "modules" ? "" : "# none\n");
    if (kind === "modules") await Deno.writeTextFile(`${dir.path}/main.tf`, 'provider "aws" {}\n');
    await Deno.writeTextFile(path, text);
    const e: unknown = await readDirRequirements(dir.path).then(() => undefined, (e) => e);
    assertEquals(e instanceof want, true, `${text.slice(0, 40)}: ${e}`);
    assertEquals((e as Error).message.includes(path), true, (e as Error).message);
  }
});

Deno.test("version constraints: versions compare as terraform compares them (big numbers, numeric pre-release identifiers)", () => {
  const pick = (c: string, versions: string[]) => newestAllowed(parseConstraints(c), versions);
  // A boundary past nine digits is still a number, not a string to sort.
  assertEquals(pick(">= 1000000000.0.0", ["2.0.0", "3.1.0"]), undefined);
  assertEquals(pick("< 1000000000.0.0", ["2.0.0", "3.1.0"]), "3.1.0");
  assertEquals(pick("~> 1.10000000000", ["1.9.0", "1.2.0"]), undefined);
  // go-versions: numeric identifiers compare by length, then digit by digit
  // ("01" is not "1"), exactly past 2^53.
  for (const order of [["1.0.0-beta.01", "1.0.0-beta.1"], ["1.0.0-beta.1", "1.0.0-beta.01"]]) {
    assertEquals(pick("= 1.0.0-beta.1", order), "1.0.0-beta.1");
  }
  assertEquals(compareVersions("1.0.0-rc.9007199254740993", "1.0.0-rc.9007199254740992") > 0, true);
  assertEquals(compareVersions("1.0.0-beta.01", "1.0.0-beta.1") > 0, true);
  assertEquals(compareVersions("1.0.0-rc.10", "1.0.0-rc.9") > 0, true);
  assertEquals(compareVersions("1.0.0+b", "1.0.0+a"), 0);
});

Deno.test("outage gap: one provider the registry keeps failing does not hide every other provider's new releases", async () => {
  let now = 1_000_000;
  let betaBroken = false;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) =>
        betaBroken && new URL(req.url).pathname === "/v1/providers/example/beta/versions"
          ? new Response("broken", { status: 500 })
          : undefined,
    },
    deps: { now: () => now },
  });
  const alpha = `/${H}/example/alpha/index.json`;
  const beta = `/${H}/example/beta/index.json`;
  for (const p of [alpha, beta]) assertEquals((await t.get(p)).status, 200);
  await t.app.settle();
  betaBroken = true;
  await t.fake.publish("example", "alpha", { version: "1.2.0", platforms: ["linux_amd64"] });
  // A CI asks for both every 31 s, the broken one first: the healthy
  // registry must not stay marked failing by that one document.
  const seen: string[] = [];
  for (let round = 0; round < 4; round++) {
    now += 31_000;
    const b = await t.get(beta);
    assertEquals(b.headers.get("x-repoxy-cache"), "stale");
    await b.body?.cancel();
    const a = await t.get(alpha);
    seen.push(
      Object.keys(
        (JSON.parse(new TextDecoder().decode(await bytesOf(a))) as {
          versions: Record<string, unknown>;
        }).versions,
      ).sort().join(","),
    );
    await t.app.settle();
  }
  assertEquals(seen.at(-1), "1.0.0,1.1.0,1.2.0", seen.join(" | "));
  // The broken document still costs at most one failed refresh per round.
  const betaTries = t.fake.count((r) => r.path === "/v1/providers/example/beta/versions");
  assertEquals(betaTries <= 1 + 4 * 3, true, String(betaTries));
});

Deno.test("repoxy lock inputs: a .tf that cannot be read (dangling symlink, a directory) is named, not a crash", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/main.tf`, 'provider "aws" {}\n');
  for (const target of [`${dir.path}/nowhere`, `${dir.path}/subdir`]) {
    await Deno.remove(`${dir.path}/bad.tf`).catch(() => {});
    if (target.endsWith("subdir")) await Deno.mkdir(target, { recursive: true });
    await Deno.symlink(target, `${dir.path}/bad.tf`);
    const e: unknown = await readDirRequirements(dir.path).then(() => undefined, (e) => e);
    assertEquals(e instanceof ArgumentError, true, String(e));
    assertEquals((e as Error).message.includes(`${dir.path}/bad.tf`), true, (e as Error).message);
  }
});

Deno.test("repoxy lock inputs: a .tf linked to /dev/zero, a FIFO or an oversized file is refused by name, never read for ever", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/main.tf`, 'provider "aws" {}\n');
  const bad = `${dir.path}/bad.tf`;
  const plant = [
    () => Deno.symlink("/dev/zero", bad),
    async () => {
      const mk = await new Deno.Command("mkfifo", { args: [bad] }).output();
      if (!mk.success) throw new Error("mkfifo failed");
    },
    async () => {
      // Sparse: 17 MiB on paper, nothing on disk.
      using f = await Deno.open(bad, { write: true, create: true });
      await f.truncate(17 * 1024 * 1024);
    },
  ];
  for (const make of plant) {
    await Deno.remove(bad).catch(() => {});
    await make();
    const e: unknown = await readDirRequirements(dir.path).then(() => undefined, (e) => e);
    assertEquals(e instanceof ArgumentError, true, String(e));
    assertEquals((e as Error).message.includes(bad), true, (e as Error).message);
  }
});

Deno.test({
  name:
    "repoxy lock inputs: control characters outside strings and comments are refused as terraform refuses them",
  ignore: !TERRAFORM,
  async fn() {
    await using dir = await tempDir();
    const REQ =
      'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws", version = "1.0.0" }\n  }\n}\n';
    const disagree: string[] = [];
    for (const c of ["\0", "\x01", "\f", "\v", "\x1b", "\x7f", "# \0 in a comment", "\t"]) {
      await Deno.writeTextFile(`${dir.path}/main.tf`, `${REQ}${c}\n`);
      const out = await new Deno.Command("terraform", {
        args: ["providers", "-no-color"],
        cwd: dir.path,
        env: { TF_CLI_CONFIG_FILE: "/dev/null", CHECKPOINT_DISABLE: "1", HOME: dir.path },
        stdout: "null",
        stderr: "null",
      }).output();
      const ours = await readDirRequirements(dir.path).then(() => true, () => false);
      if (ours !== out.success) disagree.push(`${JSON.stringify(c)}: terraform ${out.success}`);
    }
    assertEquals(disagree, []);
  },
});

Deno.test("{version}.json: a version listing thousands of platforms with no SHA256SUMS costs a bounded number of upstream requests", async () => {
  const LISTED = 2000;
  const platforms = Array.from({ length: LISTED }, (_, i) => ({ os: "linux", arch: `x${i}` }));
  let registryUrl = "";
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: async (req) => {
        const path = new URL(req.url).pathname;
        if (req.headers.has("x-red11-pass")) return undefined;
        if (path === "/v1/providers/example/beta/versions") {
          return Response.json({
            versions: [{ version: "2.3.4", protocols: ["5.0"], platforms }],
          });
        }
        if (path === "/v1/providers/example/beta/2.3.4/download/linux/x0") {
          // A real document, without SHA256SUMS: each platform is its own authority.
          const real = await fetch(
            `${registryUrl}/v1/providers/example/beta/2.3.4/download/linux/amd64`,
            { headers: { "x-red11-pass": "1" } },
          );
          const doc = await real.json();
          delete doc.shasums_url;
          delete doc.shasums_signature_url;
          doc.arch = "x0";
          return Response.json(doc);
        }
        return undefined;
      },
    },
  });
  registryUrl = t.fake.registryUrl;
  const res = await t.get(`/${H}/example/beta/2.3.4.json`);
  await res.body?.cancel();
  await t.app.settle();
  const downloads = t.fake.count((r) => r.path.includes("/2.3.4/download/"));
  // Real providers list a few dozen platforms at most; 2000 listed must not mean 2000 requests.
  assertEquals(downloads <= 520, true, `${downloads} download documents for one request`);
});

Deno.test("{version}.json: a signed SHA256SUMS naming thousands of archives of the version gives a bounded answer, listed platforms kept", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const key = "example/beta/2.3.4";
  const real = new TextDecoder().decode(t.fake.sums.get(key)!);
  let extra = "";
  for (let i = 0; i < 5_000; i++) {
    extra += `${"a".repeat(64)}  terraform-provider-beta_2.3.4_os${i}_amd64.zip\n`;
  }
  const sums = new TextEncoder().encode(extra + real);
  t.fake.sums.set(key, sums);
  t.fake.signatures.set(key, await signDetached(t.fake.signingKey.privateKeyArmored, sums));
  const res = await t.get(`/${H}/example/beta/2.3.4.json`);
  const body = await bytesOf(res);
  assertEquals(res.status, 200);
  const archives = Object.keys(
    (JSON.parse(new TextDecoder().decode(body)) as { archives: Record<string, unknown> }).archives,
  );
  assertEquals(archives.length <= 512, true, `${archives.length} archives, ${body.length} bytes`);
  // The platforms the version lists (the real ones) are kept.
  for (const pl of ["linux_amd64", "darwin_arm64", "linux_arm64"]) {
    assertEquals(archives.includes(pl), true, pl);
  }
  await t.app.settle();
});

Deno.test("clock set back: a registry marked failing (and a remembered 404) does not stay so for as long as the clock went back", async () => {
  let now = 10_000_000;
  let down = false;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { intercept: () => down ? new Response("down", { status: 503 }) : undefined },
    deps: { now: () => now },
  });
  const alpha = `/${H}/example/alpha/index.json`;
  const ghost = `/${H}/example/ghost/index.json`;
  assertEquals((await t.get(alpha)).status, 200);
  await t.app.settle();
  now += 3_600_000;
  const missing = await t.get(ghost);
  assertEquals(missing.status, 404);
  await missing.body?.cancel();
  down = true;
  const stale = await t.get(alpha);
  assertEquals(stale.headers.get("x-repoxy-cache"), "stale");
  await stale.body?.cancel();
  // The upstream is back with a new release and the ghost published; the
  // clock is corrected half an hour back (the list is still stale).
  down = false;
  await t.fake.publish("example", "alpha", { version: "1.2.0", platforms: ["linux_amd64"] });
  now -= 1_800_000;
  const fresh = await t.get(alpha);
  const versions = Object.keys(
    (JSON.parse(new TextDecoder().decode(await bytesOf(fresh))) as {
      versions: Record<string, unknown>;
    }).versions,
  );
  assertEquals(versions.includes("1.2.0"), true, `${fresh.headers.get("x-repoxy-cache")}`);
  const before = t.fake.count((r) => r.path === "/v1/providers/example/ghost/versions");
  const ghostAgain = await t.get(ghost);
  await ghostAgain.body?.cancel();
  assertEquals(t.fake.count((r) => r.path === "/v1/providers/example/ghost/versions"), before + 1);
  await t.app.settle();
});

Deno.test("revalidation: an entry pruned between the 304's touch and its read is still answered, not a 500", async () => {
  const stored = { fetchedAt: 0, url: "https://r.example/v", body: '{"versions":[]}', etag: '"a"' };
  let gets = 0;
  // A store whose entry vanishes right after the touch (prune racing the 304).
  const refs = {
    get: () => Promise.resolve(gets++ === 0 ? stored : undefined),
    touch: () => Promise.resolve(true),
    put: () => Promise.resolve(),
  } as unknown as RefsStore;
  const cache = new RefCache(refs, memoryLogger(), () => 100_000, 60_000, 100);
  const got = await cache.cached("k", 30_000, () => Promise.resolve(NOT_MODIFIED), {
    hostname: "r.example",
  });
  assertEquals([got.status, got.value.body, got.value.fetchedAt], [
    "revalidated",
    stored.body,
    100_000,
  ]);
});
