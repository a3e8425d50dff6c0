/**
 * The air gap through the registry protocol (`host` blocks): `repoxy export`
 * carries the version list, download documents (with the signing keys), the
 * signed SHA256SUMS and its `.sig` in a `.repoxy/` sidecar; `repoxy import`
 * stores them only after the same checks serving makes (signature by the
 * carried keys or `trustedKeys`, SHA256SUMS' line, the archive's sha256), so
 * an offline Repoxy answers `terraform init` through a `host` block with the
 * lock file terraform writes against the registry directly, byte for byte.
 * Tampered documents are refused by name and not stored; a tree without the
 * sidecar imports as before.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { exportCache } from "../lib/commands/export.ts";
import { importTree } from "../lib/commands/import.ts";
import { warm } from "../lib/commands/warm.ts";
import { buildConfig, type Config } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { platformString } from "../lib/protocol/names.ts";
import { currentPlatform } from "../lib/protocol/provider_address.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { runCli, writeConfig } from "./_cli.ts";
import {
  exists,
  jsonOf,
  listDir,
  makeTestApp,
  sha256Hex,
  tempDir,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import { makeSigningKey, signDetached } from "./_pgp.ts";
import { requiredProviders, runTerraform, terraformOrSkip } from "./_terraform_cli.ts";
import { makeProviderZip } from "./_zip.ts";
import { makeTestTls } from "./_tls.ts";

const H = "registry.terraform.io";
const ALPHA = { hostname: H, namespace: "example", type: "alpha" };
const HERE = platformString(currentPlatform());
const OTHER = HERE === "darwin_arm64" ? "linux_amd64" : "darwin_arm64";
const EXPORTED = [HERE, OTHER].sort();
/** Exported nowhere: its SHA256SUMS line exists, its archive does not travel. */
const ABSENT = "windows_amd64";
const SIDE = [".repoxy", "registry", H, "example", "alpha"];
const REG = `/v1/providers/${H}/example/alpha`;

// Decided at load, so a missing tool is reported as ignored, never as passed.
const TF = await terraformOrSkip("the air gap through the registry protocol");
const NO_MKFIFO = (() => {
  try {
    return !new Deno.Command("mkfifo", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return true;
  }
})();
// deno-lint-ignore no-console
if (NO_MKFIFO) console.log("SKIP: mkfifo is not available; the FIFO case is not run");

const pl = (s: string) => {
  const [os, arch] = s.split("_") as [string, string];
  return { os, arch };
};

/** A fake whose download documents carry credentials in a URL (as presigned ones do). */
async function fakeWithSecrets(): Promise<FakeRegistry> {
  let release = "";
  const fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    extraDownloadFields: ({ namespace, type, version, os, arch }) => ({
      download_url:
        `${release}/files/${namespace}/${type}/${version}/terraform-provider-${type}_${version}_${os}_${arch}.zip?X-Amz-Signature=SECRET-ONE`,
      mirrors: [{ url: `https://carrier:SECRET-TWO@cdn.example.com/${type}.zip` }],
    }),
  });
  release = fake.releaseUrl;
  return fake;
}

/** Warms alpha 1.1.0 for two platforms into `<dir>/connected` and exports it to `<dir>/out`. */
async function warmAndExport(fake: FakeRegistry, dir: string, version = "1.1.0"): Promise<string> {
  const cache = join(dir, "connected");
  {
    await using t = await makeTestApp(fake, cache);
    const r = await warm(t.app, {
      targets: [{ provider: ALPHA, version, source: "test" }],
      platforms: EXPORTED.map(pl),
      concurrency: 2,
    });
    assertEquals(r.failures, []);
  }
  const out = join(dir, `out-${version}`);
  const report = await exportCache(cache, out, {
    providers: [{ provider: ALPHA, version }],
    log: memoryLogger(),
  });
  assertEquals([report.archives, report.registryVersions, report.problems], [2, 1, []]);
  return out;
}

async function offlineConfig(cacheDir: string, extra: Record<string, unknown> = {}) {
  return await buildConfig({ cacheDir, offline: true, upstreams: { [H]: {} }, ...extra });
}

/** What `refs/` of a cache holds for alpha 1.1.0's registry documents. */
async function storedRefs(cacheDir: string): Promise<string[]> {
  const base = join(cacheDir, "refs", H, "example", "alpha");
  const out = (await exists(join(base, "versions.json"))) ? ["versions"] : [];
  if (await exists(join(base, "1.1.0"))) {
    for (const n of await listDir(join(base, "1.1.0"))) {
      if (!n.startsWith("archive_")) out.push(n.replace(/\.json$/, ""));
    }
  }
  return out.sort();
}

async function copyTree(from: string, to: string): Promise<string> {
  const cp = await new Deno.Command("cp", { args: ["-a", from, to] }).output();
  assert(cp.success, new TextDecoder().decode(cp.stderr));
  return to;
}

Deno.test("export writes the registry documents of each exported version into .repoxy/, byte for byte, credentials redacted", async () => {
  await using fake = await fakeWithSecrets();
  await using dir = await tempDir();
  const out = await warmAndExport(fake, dir.path);
  // The mirror files are where they were; the sidecar is beside the hostnames.
  assertEquals(await listDir(out), [".repoxy", H]);
  assertEquals(await listDir(join(out, ...SIDE)), ["1.1.0", "versions.json"]);
  const vdir = join(out, ...SIDE, "1.1.0");
  assertEquals(await listDir(vdir), [
    "SHA256SUMS",
    "SHA256SUMS.sig",
    ...EXPORTED.map((p) => `download_${p}.json`),
  ]);
  assertEquals(await Deno.readFile(join(vdir, "SHA256SUMS")), fake.sums.get("example/alpha/1.1.0"));
  assertEquals(
    await Deno.readFile(join(vdir, "SHA256SUMS.sig")),
    fake.signatures.get("example/alpha/1.1.0"),
  );
  for (const p of EXPORTED) {
    const doc = JSON.parse(await Deno.readTextFile(join(vdir, `download_${p}.json`)));
    const fa = fake.archive("alpha", "1.1.0", p);
    assertEquals([doc.os, doc.arch, doc.filename, doc.shasum], [
      pl(p).os,
      pl(p).arch,
      fa.filename,
      fa.sha256,
    ]);
    assertEquals(doc.signing_keys.gpg_public_keys[0].ascii_armor, fake.signingKey.publicKeyArmored);
  }
  // Only the exported version, listing only the exported platforms (the upstream has 1.0.0 too).
  const list = JSON.parse(await Deno.readTextFile(join(out, ...SIDE, "versions.json")));
  assertEquals(list.versions.map((v: { version: string }) => v.version), ["1.1.0"]);
  assertEquals(
    list.versions[0].platforms.map(platformString).sort(),
    EXPORTED,
  );
  // No credential anywhere in the tree.
  const grep = await new Deno.Command("grep", { args: ["-rl", "SECRET", out] }).output();
  assertEquals(new TextDecoder().decode(grep.stdout), "");
  assertEquals(grep.code, 1, "grep found nothing");
});

Deno.test("import stores the sidecar's documents, and an offline Repoxy serves the registry protocol from them", async () => {
  await using fake = await fakeWithSecrets();
  await using dir = await tempDir();
  const out = await warmAndExport(fake, dir.path);
  const cacheDir = join(dir.path, "airgapped");
  await using t = await makeTestApp(undefined, cacheDir, { offline: true, upstreams: { [H]: {} } });
  // Asked before the import (remembered as missing), served after it.
  for (
    const path of ["versions", `1.1.0/download/${pl(HERE).os}/${pl(HERE).arch}`, "1.1.0/SHA256SUMS"]
  ) {
    const before = await t.get(`${REG}/${path}`);
    assertEquals(before.status, 404, path);
    await before.body?.cancel();
  }

  const r = await importTree(t.config, out, { log: memoryLogger() });
  assertEquals(r.problems, []);
  assertEquals(r.items.map((i) => i.status), ["imported", "imported"]);
  assertEquals(
    r.registry.map((i) => [i.document, i.platform && platformString(i.platform), i.status])
      .sort((a, b) => String(a[1] ?? "").localeCompare(String(b[1] ?? ""))),
    [
      ["SHA256SUMS", undefined, "imported"],
      ...EXPORTED.map((p) => ["download document", p, "imported"]),
    ],
  );
  assertEquals(await storedRefs(cacheDir), [
    "SHA256SUMS",
    "SHA256SUMS.sig",
    ...EXPORTED.map((p) => `download_${p}`),
    "versions",
  ]);

  const versions = await jsonOf(await t.get(`${REG}/versions`)) as {
    versions: Array<{ version: string; platforms: unknown[] }>;
  };
  assertEquals(versions.versions.map((v) => v.version), ["1.1.0"]);
  for (const p of EXPORTED) {
    const res = await t.get(`${REG}/1.1.0/download/${pl(p).os}/${pl(p).arch}`);
    assertEquals(res.status, 200, p);
    const doc = await res.json();
    const fa = fake.archive("alpha", "1.1.0", p);
    assertEquals(doc.shasum, fa.sha256);
    assertEquals(doc.signing_keys.gpg_public_keys[0].ascii_armor, fake.signingKey.publicKeyArmored);
    assert(!JSON.stringify(doc).includes("SECRET"), JSON.stringify(doc));
    const zip = await t.get(new URL(doc.download_url, "http://mirror.test/").pathname);
    assertEquals(sha256Hex(new Uint8Array(await zip.arrayBuffer())), fa.sha256);
  }
  // A platform whose archive did not travel is not offered.
  const absent = await t.get(`${REG}/1.1.0/download/${pl(ABSENT).os}/${pl(ABSENT).arch}`);
  assertEquals(absent.status, 404);
  await absent.body?.cancel();
  const sums = await t.get(`${REG}/1.1.0/SHA256SUMS`);
  assertEquals(new Uint8Array(await sums.arrayBuffer()), fake.sums.get("example/alpha/1.1.0"));
  const sig = await t.get(`${REG}/1.1.0/SHA256SUMS.sig`);
  assertEquals(new Uint8Array(await sig.arrayBuffer()), fake.signatures.get("example/alpha/1.1.0"));
  assertEquals(t.upstream.length, 0);

  // Again: nothing new; then a second export bringing 1.0.0 adds to the list.
  const again = await importTree(t.config, out, { log: memoryLogger() });
  assertEquals(again.registry.map((i) => i.status), ["cached", "cached", "cached"]);
  const out2 = await warmAndExport(fake, dir.path, "1.0.0");
  const second = await importTree(t.config, out2, { log: memoryLogger() });
  assertEquals(second.registry.map((i) => i.status), ["imported", "imported", "imported"]);
  const both = await jsonOf(await t.get(`${REG}/versions`)) as typeof versions;
  assertEquals(both.versions.map((v) => v.version).sort(), ["1.0.0", "1.1.0"]);
});

Deno.test({
  name:
    "terraform init through a host block on the imported offline cache writes the direct lock file byte for byte, so does repoxy lock; the tree stays a filesystem and a static network mirror",
  ignore: !TF,
  async fn() {
    await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
    await using dir = await tempDir();
    const out = await warmAndExport(fake, dir.path);
    const tf = TF!;
    const init = async (name: string, cli: string) => {
      const work = join(dir.path, name);
      await Deno.mkdir(work);
      await Deno.writeTextFile(
        join(work, "main.tf"),
        requiredProviders([{ source: "example/alpha", version: "1.1.0" }]),
      );
      const run = await runTerraform(tf, work, ["init", "-input=false"], cli);
      assertEquals(run.code, 0, run.output);
      return await Deno.readTextFile(join(work, ".terraform.lock.hcl"));
    };
    const host = (url: string) =>
      `host "${H}" {\n  services = {\n    "providers.v1" = "${url}"\n  }\n}\n`;
    const direct = await init("direct", host(`${fake.registryUrl}/v1/providers/`));
    // What `terraform providers lock` writes for both exported platforms, direct.
    const lockDir = join(dir.path, "lock-direct");
    await Deno.mkdir(lockDir);
    await Deno.writeTextFile(
      join(lockDir, "main.tf"),
      requiredProviders([{ source: "example/alpha", version: "1.1.0" }]),
    );
    const tfLock = await runTerraform(
      tf,
      lockDir,
      ["providers", "lock", ...EXPORTED.map((p) => `-platform=${p}`)],
      host(`${fake.registryUrl}/v1/providers/`),
    );
    assertEquals(tfLock.code, 0, tfLock.output);
    await fake.stop(); // from here on there is no upstream

    const config = await offlineConfig(join(dir.path, "airgapped"), { listen: "127.0.0.1:0" });
    const imported = await importTree(config, out, { log: memoryLogger() });
    assert(imported.registry.every((i) => i.status === "imported"), JSON.stringify(imported));
    const log = memoryLogger();
    const app = await createApp(config, {
      log,
      fetch: () => Promise.reject(new Error("air gap: no network")),
    });
    const server = serveApp(app);
    try {
      const viaHost = await init("via-host", host(`${server.url}v1/providers/${H}/`));
      // zh: of every platform SHA256SUMS names, and this platform's h1:.
      assertEquals(viaHost, direct);
      assertEquals((viaHost.match(/"zh:/g) ?? []).length, 3);
      assertEquals(log.records.filter((r) => r.msg === "request" && r.status !== 200), []);
    } finally {
      await server.shutdown(2_000);
    }
    // `repoxy lock` on the air-gapped cache writes the same two-platform lock.
    const lockHere = join(dir.path, "lock-airgapped");
    await Deno.mkdir(lockHere);
    await Deno.writeTextFile(
      join(lockHere, "main.tf"),
      requiredProviders([{ source: "example/alpha", version: "1.1.0" }]),
    );
    const cfg = await writeConfig(dir.path, {
      cacheDir: config.cacheDir,
      offline: true,
      upstreams: { [H]: {} },
    });
    const locked = await runCli(["lock", "-c", cfg, "-p", EXPORTED.join(","), lockHere]);
    assertEquals(locked.code, 0, locked.stderr);
    assertEquals(
      await Deno.readTextFile(join(lockHere, ".terraform.lock.hcl")),
      await Deno.readTextFile(join(lockDir, ".terraform.lock.hcl")),
    );
    // A static network_mirror of the tree (any HTTPS file server) still works:
    // terraform asks only for what index.json names, never for .repoxy/.
    const tls = await makeTestTls(await Deno.makeTempDir({ dir: dir.path }));
    const asked: string[] = [];
    const files = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: tls.certPem,
      key: tls.keyPem,
      onListen: () => {},
    }, async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      asked.push(path);
      if (path.includes("..")) return new Response(null, { status: 400 });
      try {
        const body = await Deno.readFile(join(out, path));
        const type = path.endsWith(".json") ? "application/json" : "application/zip";
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response(null, { status: 404 });
      }
    });
    try {
      const work = join(dir.path, "static-mirror");
      await Deno.mkdir(work);
      await Deno.writeTextFile(
        join(work, "main.tf"),
        requiredProviders([{ source: "example/alpha", version: "1.1.0" }]),
      );
      const run = await runTerraform(
        tf,
        work,
        ["init", "-input=false"],
        `provider_installation {\n  network_mirror {\n    url = "https://127.0.0.1:${files.addr.port}/"\n  }\n}\n`,
        { SSL_CERT_FILE: tls.caCertPath },
      );
      assertEquals(run.code, 0, run.output);
      assert(asked.length > 0 && asked.every((p) => !p.includes(".repoxy")), asked.join(" "));
    } finally {
      await files.shutdown();
    }
    // Terraform's filesystem_mirror search still accepts the tree with its sidecar.
    const fsLock = await init(
      "fs-mirror",
      `provider_installation {\n  filesystem_mirror {\n    path = "${out}"\n  }\n}\n`,
    );
    assertMatch(
      fsLock,
      new RegExp(
        `"${
          (await hashZipH1(
            join(out, H, "example", "alpha", `terraform-provider-alpha_1.1.0_${HERE}.zip`),
          )).replace(/[+/]/g, "\\$&")
        }"`,
      ),
    );
  },
});

type Case = {
  name: string;
  /** Edits the copied tree (`vdir`: its sidecar version directory). */
  tamper: (vdir: string, tree: string) => Promise<void>;
  config?: Record<string, unknown>;
  /** The registry items expected: `document[ platform]` → status and a pattern of the reason. */
  expect: Record<string, [status: string, detail?: RegExp]>;
  /** What `refs/` of the importing cache holds for alpha 1.1.0 afterwards. */
  stored: string[];
  /** Archives imported (for the mirror protocol) regardless. */
  archives?: number;
};

const editJson = async (path: string, edit: (doc: Record<string, unknown>) => void) => {
  const doc = JSON.parse(await Deno.readTextFile(path));
  edit(doc);
  await Deno.writeTextFile(path, JSON.stringify(doc));
};

Deno.test("import refuses, by name, tampered SHA256SUMS, .sig, download documents and mismatched archives, storing none of them", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const out = await warmAndExport(fake, dir.path);
  const attacker = await makeSigningKey("Not The Publisher");
  const sumsOf = (vdir: string) => Deno.readFile(join(vdir, "SHA256SUMS"));
  const notSigned = /SHA256SUMS is not validly signed by the signing_keys it names/;
  const nothing = /no download document of this version checked out/;
  const allRefused = {
    SHA256SUMS: ["refused", nothing],
    [`download document ${HERE}`]: ["refused", notSigned],
    [`download document ${OTHER}`]: ["refused", notSigned],
  } as Case["expect"];
  const okSums = { SHA256SUMS: ["imported", /signature verified/] } as Case["expect"];
  const all = [
    "SHA256SUMS",
    "SHA256SUMS.sig",
    ...EXPORTED.map((p) => `download_${p}`),
    "versions",
  ];
  const cases: Case[] = [
    {
      name: "SHA256SUMS edited (a line of a platform not exported)",
      tamper: async (vdir) => {
        const text = new TextDecoder().decode(await sumsOf(vdir));
        const line = text.split("\n").find((l) => l.includes(ABSENT))!;
        await Deno.writeTextFile(
          join(vdir, "SHA256SUMS"),
          text.replace(line, `${"0".repeat(64)}${line.slice(64)}`),
        );
      },
      expect: allRefused,
      stored: [],
    },
    {
      name: ".sig made by another key",
      tamper: async (vdir) => {
        await Deno.writeFile(
          join(vdir, "SHA256SUMS.sig"),
          await signDetached(attacker.privateKeyArmored, await sumsOf(vdir)),
        );
      },
      expect: allRefused,
      stored: [],
    },
    {
      name: ".sig missing",
      tamper: (vdir) => Deno.remove(join(vdir, "SHA256SUMS.sig")),
      expect: {
        SHA256SUMS: ["refused", nothing],
        [`download document ${HERE}`]: ["refused", /names no signature/],
        [`download document ${OTHER}`]: ["refused", /names no signature/],
      },
      stored: [],
    },
    {
      name: `the ${HERE} document's shasum set to another line of SHA256SUMS`,
      tamper: (vdir) =>
        editJson(join(vdir, `download_${HERE}.json`), (d) => {
          d.shasum = fake.archive("alpha", "1.1.0", ABSENT).sha256;
        }),
      expect: {
        ...okSums,
        [`download document ${HERE}`]: ["refused", /shasum .* differs from SHA256SUMS/],
        [`download document ${OTHER}`]: ["imported"],
      },
      stored: ["SHA256SUMS", "SHA256SUMS.sig", `download_${OTHER}`, "versions"],
    },
    {
      name: `the ${OTHER} document names another signing key`,
      tamper: (vdir) =>
        editJson(join(vdir, `download_${OTHER}.json`), (d) => {
          d.signing_keys = {
            gpg_public_keys: [{ key_id: attacker.keyId, ascii_armor: attacker.publicKeyArmored }],
          };
        }),
      expect: {
        ...okSums,
        [`download document ${HERE}`]: ["imported"],
        [`download document ${OTHER}`]: ["refused", notSigned],
      },
      stored: ["SHA256SUMS", "SHA256SUMS.sig", `download_${HERE}`, "versions"],
    },
    {
      name: `a valid document for ${ABSENT}, whose archive did not travel`,
      tamper: (vdir) =>
        editJson(join(vdir, `download_${HERE}.json`), (d) => {
          const fa = fake.archive("alpha", "1.1.0", ABSENT);
          Object.assign(d, { ...pl(ABSENT), filename: fa.filename, shasum: fa.sha256 });
        }).then(() =>
          Deno.rename(join(vdir, `download_${HERE}.json`), join(vdir, `download_${ABSENT}.json`))
        ),
      expect: {
        ...okSums,
        [`download document ${ABSENT}`]: ["refused", /holds no archive of this platform/],
        [`download document ${OTHER}`]: ["imported"],
      },
      stored: ["SHA256SUMS", "SHA256SUMS.sig", `download_${OTHER}`, "versions"],
    },
    {
      name: `the ${OTHER} archive replaced, its mirror hashes rewritten to match`,
      tamper: async (_vdir, tree) => {
        const pdir = join(tree, H, "example", "alpha");
        const fa = fake.archive("alpha", "1.1.0", OTHER);
        const evil = await makeProviderZip("alpha", "1.1.0", `${OTHER}-evil`);
        await Deno.writeFile(join(pdir, fa.filename), evil);
        const h1 = await hashZipH1(join(pdir, fa.filename));
        await editJson(join(pdir, "1.1.0.json"), (d) => {
          (d.archives as Record<string, { hashes: string[] }>)[OTHER]!.hashes = [
            h1,
            `zh:${sha256Hex(evil)}`,
          ];
        });
      },
      expect: {
        ...okSums,
        [`download document ${HERE}`]: ["imported"],
        [`download document ${OTHER}`]: ["refused", /is not the sha256 of the archive/],
      },
      stored: ["SHA256SUMS", "SHA256SUMS.sig", `download_${HERE}`, "versions"],
    },
    {
      name: "re-signed by another key that the documents name, with trustedKeys pinned",
      tamper: async (vdir) => {
        await Deno.writeFile(
          join(vdir, "SHA256SUMS.sig"),
          await signDetached(attacker.privateKeyArmored, await sumsOf(vdir)),
        );
        for (const p of EXPORTED) {
          await editJson(join(vdir, `download_${p}.json`), (d) => {
            d.signing_keys = {
              gpg_public_keys: [{ key_id: attacker.keyId, ascii_armor: attacker.publicKeyArmored }],
            };
          });
        }
      },
      config: { upstreams: { [H]: { trustedKeys: [fake.signingKey.publicKeyArmored] } } },
      expect: {
        SHA256SUMS: ["refused", nothing],
        [`download document ${HERE}`]: ["refused", /not validly signed by the trustedKeys/],
        [`download document ${OTHER}`]: ["refused", /not validly signed by the trustedKeys/],
      },
      stored: [],
    },
    {
      name: "the publisher's own tree, with trustedKeys pinned to the publisher",
      tamper: () => Promise.resolve(),
      config: { upstreams: { [H]: { trustedKeys: [fake.signingKey.publicKeyArmored] } } },
      expect: {
        ...okSums,
        [`download document ${HERE}`]: ["imported"],
        [`download document ${OTHER}`]: ["imported"],
      },
      stored: all,
    },
    {
      name: "another provider's signed release filed as this one (same publisher key)",
      tamper: async (vdir, tree) => {
        // beta 2.3.4's SHA256SUMS, .sig and this platform's document, with beta's
        // archive as alpha's: every signature and hash holds, the names do not.
        const beta = fake.archive("beta", "2.3.4", HERE);
        await Deno.writeFile(join(vdir, "SHA256SUMS"), fake.sums.get("example/beta/2.3.4")!);
        await Deno.writeFile(
          join(vdir, "SHA256SUMS.sig"),
          fake.signatures.get("example/beta/2.3.4")!,
        );
        await editJson(join(vdir, `download_${HERE}.json`), (d) => {
          Object.assign(d, { filename: beta.filename, shasum: beta.sha256 });
        });
        await Deno.remove(join(vdir, `download_${OTHER}.json`));
        const pdir = join(tree, H, "example", "alpha");
        const name = `terraform-provider-alpha_1.1.0_${HERE}.zip`;
        await Deno.writeFile(join(pdir, name), beta.bytes);
        const h1 = await hashZipH1(join(pdir, name));
        await editJson(join(pdir, "1.1.0.json"), (d) => {
          (d.archives as Record<string, { hashes: string[] }>)[HERE]!.hashes = [
            h1,
            `zh:${beta.sha256}`,
          ];
        });
      },
      expect: {
        SHA256SUMS: ["refused", nothing],
        [`download document ${HERE}`]: [
          "refused",
          /filename terraform-provider-beta_2\.3\.4_.* is not terraform-provider-alpha_1\.1\.0_/,
        ],
      },
      stored: [],
    },
    {
      name: "a document that says it is for another platform than its name",
      tamper: (vdir) =>
        editJson(join(vdir, `download_${OTHER}.json`), (d) => Object.assign(d, pl(HERE))),
      expect: {
        ...okSums,
        [`download document ${HERE}`]: ["imported"],
        [`download document ${OTHER}`]: ["refused", new RegExp(`not ${OTHER}`)],
      },
      stored: ["SHA256SUMS", "SHA256SUMS.sig", `download_${HERE}`, "versions"],
    },
  ];
  let n = 0;
  for (const c of cases) {
    const tree = await copyTree(out, join(dir.path, `tree-${n}`));
    await c.tamper(join(tree, ...SIDE, "1.1.0"), tree);
    const cacheDir = join(dir.path, `cache-${n++}`);
    const r = await importTree(await offlineConfig(cacheDir, c.config ?? {}), tree, {
      log: memoryLogger(),
    });
    const got = Object.fromEntries(
      r.registry.map((i) => [
        [i.document, i.platform && platformString(i.platform)].filter(Boolean).join(" "),
        i,
      ]),
    );
    assertEquals(Object.keys(got).sort(), Object.keys(c.expect).sort(), c.name);
    for (const [key, [status, detail]] of Object.entries(c.expect)) {
      assertEquals(got[key]!.status, status, `${c.name}: ${key}: ${got[key]!.detail}`);
      if (detail) assertMatch(got[key]!.detail, detail, `${c.name}: ${key}`);
    }
    assertEquals(await storedRefs(cacheDir), c.stored, c.name);
    // The archives still serve the mirror protocol (as an import always did).
    assertEquals(
      r.items.filter((i) => i.status === "imported").length,
      c.archives ?? 2,
      c.name,
    );
  }
});

Deno.test({
  name:
    "import refuses links, FIFOs and oversized files in the sidecar by name, without reading them",
  ignore: NO_MKFIFO,
  async fn() {
    await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
    await using dir = await tempDir();
    const out = await warmAndExport(fake, dir.path);
    const vdir = join(out, ...SIDE, "1.1.0");
    // A version whose SHA256SUMS is a link to an endless device; a FIFO as a
    // download document; an oversized version list (sparse: fast to make).
    const v2 = join(out, ...SIDE, "1.0.0");
    await Deno.mkdir(v2);
    await Deno.symlink("/dev/zero", join(v2, "SHA256SUMS"));
    const fifo = await new Deno.Command("mkfifo", { args: [join(vdir, `download_${ABSENT}.json`)] })
      .output();
    assert(fifo.success);
    const trunc = await new Deno.Command("truncate", {
      args: ["-s", "300M", join(out, ...SIDE, "versions.json")],
    }).output();
    assert(trunc.success);
    await Deno.symlink("/etc", join(out, ".repoxy", "registry", H, "linked"));
    const cacheDir = join(dir.path, "c");
    const r = await importTree(await offlineConfig(cacheDir), out, { log: memoryLogger() });
    const by = Object.fromEntries(
      r.registry.map((i) => [
        [i.version, i.document, i.platform && platformString(i.platform)].filter(Boolean).join(" "),
        i,
      ]),
    );
    assertMatch(by["1.0.0 SHA256SUMS"]!.detail, /a symbolic link, not read/);
    assertMatch(by[`1.1.0 download document ${ABSENT}`]!.detail, /a FIFO, not read/);
    assertMatch(by["versions.json"]!.detail, /314572800 bytes, over the limit/);
    assertEquals(by["1.1.0 SHA256SUMS"]!.status, "imported");
    assertMatch(
      r.problems.join("\n"),
      /registry\/registry\.terraform\.io\/linked: a symbolic link/,
    );
    // The list is rebuilt from what verified.
    await using t = await makeTestApp(undefined, cacheDir, {
      offline: true,
      upstreams: { [H]: {} },
    });
    const list = await jsonOf(await t.get(`${REG}/versions`)) as {
      versions: Array<{ version: string }>;
    };
    assertEquals(list.versions.map((v) => v.version), ["1.1.0"]);
  },
});

Deno.test("a tree without the sidecar imports as before; the CLI names refused documents and exits 1", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const out = await warmAndExport(fake, dir.path);
  const old = await copyTree(out, join(dir.path, "old"));
  await Deno.remove(join(old, ".repoxy"), { recursive: true });
  const oldCache = join(dir.path, "old-cache");
  const config: Config = await offlineConfig(oldCache);
  const r = await importTree(config, old, { log: memoryLogger() });
  assertEquals([r.problems, r.registry], [[], []]);
  assertEquals(
    r.items.map((i) => [platformString(i.platform), i.status, i.detail]).sort(),
    EXPORTED.map((p) => [p, "imported", "matched zh: and h1:"]),
  );
  assertEquals(await storedRefs(oldCache), []);
  // Exported again, such a cache writes no sidecar and says why.
  const again = await exportCache(oldCache, join(dir.path, "again"), { log: memoryLogger() });
  assertEquals([again.archives, again.registryVersions], [2, 0]);
  assertMatch(again.mirrorOnly.join("\n"), /alpha 1\.1\.0: the cache holds no signed SHA256SUMS/);
  assertEquals(await listDir(join(dir.path, "again")), [H]);
  await using t = await makeTestApp(undefined, oldCache, { offline: true, upstreams: { [H]: {} } });
  assertEquals(await jsonOf(await t.get(`/${H}/example/alpha/index.json`)), {
    versions: { "1.1.0": {} },
  });

  // Through the CLI: a tampered document is named, the rest is imported, exit 1.
  await editJson(join(out, ...SIDE, "1.1.0", `download_${OTHER}.json`), (d) => {
    d.shasum = fake.archive("alpha", "1.1.0", ABSENT).sha256;
  });
  const cli = await writeConfig(dir.path, {
    cacheDir: join(dir.path, "cli-cache"),
    offline: true,
    upstreams: { [H]: {} },
  });
  const run = await runCli(["import", "-c", cli, out]);
  assertEquals(run.code, 1, run.stderr);
  assertMatch(
    run.stderr,
    new RegExp(
      `REFUSED ${H}/example/alpha 1\\.1\\.0 ${OTHER} download document \\(.*download_${OTHER}\\.json\\): the download document's shasum`,
    ),
  );
  assertMatch(run.stdout, /2 imported .*, 0 already cached, 0 refused/);
  assertMatch(run.stdout, /registry protocol documents: 2 imported, 0 already cached, 1 refused/);
});

Deno.test("registry.opentofu.org releases without keys travel unsigned, as OpenTofu accepts them; another registry's are refused", async () => {
  const T = "registry.opentofu.org";
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    extraDownloadFields: () => ({ signing_keys: { gpg_public_keys: [] } }),
  });
  await using dir = await tempDir();
  const cache = join(dir.path, "connected");
  const tofu = { ...ALPHA, hostname: T };
  {
    await using t = await makeTestApp(fake, cache, {
      upstreams: { [T]: { url: fake.registryUrl } },
    });
    const r = await warm(t.app, {
      targets: [{ provider: tofu, version: "1.1.0", source: "test" }],
      platforms: [pl(HERE)],
      concurrency: 1,
    });
    assertEquals(r.failures, []);
  }
  const out = join(dir.path, "out");
  await exportCache(cache, out, { log: memoryLogger() });
  const vdir = join(out, ".repoxy", "registry", T, "example", "alpha", "1.1.0");
  assertEquals(await listDir(vdir), ["SHA256SUMS", `download_${HERE}.json`]);
  const r = await importTree(
    await buildConfig({ cacheDir: join(dir.path, "b"), offline: true, upstreams: { [T]: {} } }),
    out,
    { log: memoryLogger() },
  );
  assertEquals(r.registry.map((i) => [i.document, i.status, i.detail]).sort(), [
    ["SHA256SUMS", "imported", "accepted unsigned"],
    ["download document", "imported", "matched SHA256SUMS and the archive's sha256"],
  ]);
  // The same unsigned release filed under a registry that must sign is refused.
  const moved = join(dir.path, "moved");
  await copyTree(out, moved);
  for (const top of ["", ".repoxy/registry"]) {
    await Deno.rename(join(moved, top, T), join(moved, top, H));
  }
  const m = await importTree(await offlineConfig(join(dir.path, "c")), moved, {
    log: memoryLogger(),
  });
  assertEquals(m.registry.map((i) => i.status), ["refused", "refused"]);
  assertMatch(m.registry.map((i) => i.detail).join("\n"), /names no signature/);
});

Deno.test("back online, an imported cache never fetches from where a carried document points: it asks the upstream", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const out = await warmAndExport(fake, dir.path);
  // The carrier points every URL somewhere else; the signed facts are untouched.
  const elsewhere = "http://127.0.0.1:9/carrier";
  for (const p of EXPORTED) {
    await editJson(join(out, ...SIDE, "1.1.0", `download_${p}.json`), (d) => {
      d.download_url = `${elsewhere}/${d.filename}`;
      d.shasums_url = `${elsewhere}/SHA256SUMS`;
      d.shasums_signature_url = `${elsewhere}/SHA256SUMS.sig`;
    });
  }
  const cacheDir = join(dir.path, "c");
  const r = await importTree(await offlineConfig(cacheDir), out, { log: memoryLogger() });
  assert(r.registry.every((i) => i.status === "imported"), JSON.stringify(r.registry));
  const stored = JSON.parse(
    JSON.parse(
      await Deno.readTextFile(
        join(cacheDir, "refs", H, "example", "alpha", "1.1.0", `download_${HERE}.json`),
      ),
    ).body,
  );
  assertEquals(stored.download_url, `${elsewhere}/${stored.filename}?REDACTED`);
  // The archive goes (pruned, say); the cache goes online and is asked for it.
  const fa = fake.archive("alpha", "1.1.0", HERE);
  await Deno.remove(join(cacheDir, "packages", H, "example", "alpha", fa.filename));
  await using t = await makeTestApp(fake, cacheDir);
  const res = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(res.status, 200);
  assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), fa.sha256);
  assert(t.upstream.length > 0);
  assert(t.upstream.every((u) => !u.url.includes("127.0.0.1:9")), JSON.stringify(t.upstream));
});
