/**
 * End to end with the real terraform CLI through the pull-through registry
 * protocol (`host` block, plain http): the client verifies the publisher's
 * signature and locks every platform's zh: hash.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { clientSnippet } from "../lib/ops/client_snippet.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import {
  findTerraform,
  parseLockFile,
  requiredProvidersTf,
  runTerraform,
  skip,
} from "./_terraform.ts";

const NAME =
  "terraform init through the registry protocol: signed, all-platform zh: locks, works upstream-down";

// Decided before registration, so a missing terraform is reported as ignored,
// never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  try {
    const config = await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, "cache"),
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
      metadataTtl: 0, // the warm run must then be served from stale metadata
    });
    const log = memoryLogger();
    const app = await createApp(config, { log });
    const server = serveApp(app);
    try {
      // The pull-through `host` block as the start-up banner prints it.
      const cliConfig = clientSnippet(server.url, ["registry.terraform.io"], false) + "\n";
      const mainTf = requiredProvidersTf([
        { name: "alpha", source: "example/alpha", version: "1.1.0" },
        { name: "beta", source: "registry.terraform.io/example/beta", version: ">= 2.0.0" },
      ]);
      const run = async (name: string) => {
        const work = join(dir.path, name);
        await Deno.mkdir(work);
        await Deno.writeTextFile(join(work, "main.tf"), mainTf);
        const r = await runTerraform(["init", "-input=false", "-no-color"], {
          cwd: work,
          cliConfig,
          home: work,
        });
        assertEquals(r.code, 0, `terraform init failed:\n${r.stdout}\n${r.stderr}`);
        return { r, lock: await Deno.readTextFile(join(work, ".terraform.lock.hcl")) };
      };

      const cold = await run("cold");
      const keyId = fake.signingKey.keyId.toUpperCase();
      assertMatch(
        cold.r.stdout,
        new RegExp(`Installed example/alpha v1\\.1\\.0 \\(self-signed, key ID ${keyId}\\)`),
      );
      assertMatch(
        cold.r.stdout,
        new RegExp(`Installed example/beta v2\\.3\\.4 \\(self-signed, key ID ${keyId}\\)`),
      );
      assert(!cold.r.stdout.includes("verified checksum"), cold.r.stdout);

      const locked = parseLockFile(cold.lock);
      for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
        const zip = join(dir.path, `${type}.zip`);
        await Deno.writeFile(zip, fake.archive(type, version, "linux_amd64").bytes);
        const expected = [
          await hashZipH1(zip),
          ...fake.archives.filter((a) => a.type === type && a.version === version).map((a) =>
            `zh:${a.sha256}`
          ),
        ].sort();
        assertEquals(expected.length, 4, "h1 + three platforms");
        assertEquals(locked.get(`registry.terraform.io/example/${type}`), {
          version,
          hashes: expected,
        });
      }
      await app.settle();
      const before = fake.count();

      await fake.stop();
      const warm = await run("warm");
      assertEquals(warm.lock, cold.lock);
      assertMatch(warm.r.stdout, /Installed example\/alpha v1\.1\.0 \(self-signed/);
      assertEquals(fake.count(), before);
      assert(log.records.some((r) => r.msg === "request" && r.cache === "stale"));
    } finally {
      await server.shutdown(2_000);
    }
  } finally {
    await fake.stop();
  }
});
