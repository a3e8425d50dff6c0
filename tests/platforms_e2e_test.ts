/**
 * Issue 11 point 2 end to end with the real terraform: versions whose
 * `platforms` list is wrong (a listed platform 404, no `platforms` key, an
 * existing platform left out) install and lock for three platforms through
 * both protocols, and the lock file holds exactly the hashes of the fake's
 * archives — and again with the upstream down.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { tempDir } from "./_helpers.ts";
import { PUBLISHED, SHAPES } from "./_platform_shapes.ts";
import { makeTestTls } from "./_tls.ts";
import {
  findTerraform,
  parseLockFile,
  requiredProvidersTf,
  runTerraform,
  skip,
} from "./_terraform.ts";

const NAME =
  "terraform init and providers lock -platform x3 through both protocols, wrong platforms lists";

// Decided before registration, so a missing terraform is reported as ignored,
// never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

/** The shapes driven here: a 404 listed first, no `platforms` key (or an empty list), an existing one left out. */
const TYPES = ["wrong", "bare", "empty", "partial"] as const;

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  await using fake = await startFakeRegistry({
    providers: SHAPES.filter((s) => (TYPES as readonly string[]).includes(s.type)),
  });
  const config = await buildConfig({
    listen: "127.0.0.1:0",
    cacheDir: join(dir.path, "cache"),
    tls: { cert: tls.certPath, key: tls.keyPath },
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
  });
  const app = await createApp(config, { log: memoryLogger() });
  const server = serveApp(app);
  try {
    // What each platform's archive hashes to, from the fake's own bytes.
    const h1 = new Map<string, string>();
    const zh = new Map<string, string[]>();
    for (const type of TYPES) {
      for (const pl of PUBLISHED) {
        const zip = join(dir.path, `${type}_${pl}.zip`);
        const a = fake.archive(type, "1.0.0", pl);
        await Deno.writeFile(zip, a.bytes);
        h1.set(`${type}/${pl}`, await hashZipH1(zip));
      }
      zh.set(type, PUBLISHED.map((pl) => `zh:${fake.archive(type, "1.0.0", pl).sha256}`));
    }
    const mainTf = requiredProvidersTf(
      TYPES.map((t) => ({ name: t, source: `example/${t}`, version: "1.0.0" })),
    );
    const mirrorCli =
      `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`;
    const registryCli = [
      `host "registry.terraform.io" {`,
      `  services = {`,
      `    "providers.v1" = "${server.url}v1/providers/registry.terraform.io/"`,
      `  }`,
      `}`,
    ].join("\n") + "\n";
    const platformFlags = PUBLISHED.map((pl) => `-platform=${pl}`);
    const run = async (name: string, cliConfig: string, args: string[]) => {
      const work = join(dir.path, name);
      await Deno.mkdir(work);
      await Deno.writeTextFile(join(work, "main.tf"), mainTf);
      const r = await runTerraform([...args, "-no-color"], {
        cwd: work,
        cliConfig,
        caCertFile: tls.caCertPath,
        home: work,
      });
      assertEquals(r.code, 0, `${name}: terraform ${args[0]} failed:\n${r.stdout}\n${r.stderr}`);
      return parseLockFile(await Deno.readTextFile(join(work, ".terraform.lock.hcl")));
    };
    const expect = (
      lock: Map<string, { version: string; hashes: string[] }>,
      hashes: (type: string) => string[],
      what: string,
    ) => {
      for (const type of TYPES) {
        assertEquals(
          lock.get(`registry.terraform.io/example/${type}`),
          { version: "1.0.0", hashes: hashes(type).sort() },
          `${what}: ${type}`,
        );
      }
    };
    const h1Of = (type: string, pls: string[]) => pls.map((pl) => h1.get(`${type}/${pl}`)!);

    // Network mirror: init records the h1: of the platform it installed;
    // providers lock downloads each requested platform and records its h1:.
    expect(
      await run("mirror-init", mirrorCli, ["init", "-input=false"]),
      (t) => h1Of(t, ["linux_amd64"]),
      "mirror init",
    );
    expect(
      await run("mirror-lock", "", [
        "providers",
        "lock",
        `-net-mirror=${server.url}`,
        ...platformFlags,
      ]),
      (t) => h1Of(t, PUBLISHED),
      "mirror providers lock",
    );
    // Registry protocol: the signed SHA256SUMS gives every platform's zh:.
    expect(
      await run("registry-init", registryCli, ["init", "-input=false"]),
      (t) => [...h1Of(t, ["linux_amd64"]), ...zh.get(t)!],
      "registry init",
    );
    expect(
      await run("registry-lock", registryCli, ["providers", "lock", ...platformFlags]),
      (t) => [...h1Of(t, PUBLISHED), ...zh.get(t)!],
      "registry providers lock",
    );

    // Warm, with the upstream gone: what was found through the search is kept.
    await app.settle();
    await fake.stop();
    expect(
      await run("mirror-warm", mirrorCli, ["init", "-input=false"]),
      (t) => h1Of(t, ["linux_amd64"]),
      "mirror init, upstream down",
    );
    expect(
      await run("registry-warm", registryCli, ["init", "-input=false"]),
      (t) => [...h1Of(t, ["linux_amd64"]), ...zh.get(t)!],
      "registry init, upstream down",
    );
  } finally {
    await server.shutdown(2_000);
    await app.close();
  }
});
