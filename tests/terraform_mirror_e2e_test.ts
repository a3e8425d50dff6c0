/**
 * End to end with the real terraform CLI through the network mirror protocol:
 * Repoxy over HTTPS (test CA via SSL_CERT_FILE), upstream = fake registry.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import {
  findTerraform,
  parseLockFile,
  requiredProvidersTf,
  runTerraform,
  skip,
} from "./_terraform.ts";

const NAME = "terraform init through the network mirror, cold then warm with the upstream down";

// Decided before registration, so a missing terraform is reported as ignored,
// never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  try {
    const config = await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, "cache"),
      tls: { cert: tls.certPath, key: tls.keyPath },
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
      // Every version list is due for refresh, so the warm run (upstream
      // down) must be served from stale metadata, not from a fresh cache.
      metadataTtl: 0,
    });
    const log = memoryLogger();
    const app = await createApp(config, { log });
    const server = serveApp(app);
    try {
      const cliConfig =
        `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`;
      const mainTf = requiredProvidersTf([
        { name: "alpha", source: "registry.terraform.io/example/alpha", version: "1.1.0" },
        { name: "beta", source: "example/beta", version: "~> 2.3" },
      ]);
      // Expected h1 of the linux_amd64 archives, computed from the upstream's bytes.
      const expectedH1: Record<string, string> = {};
      for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
        const zip = join(dir.path, `${type}.zip`);
        await Deno.writeFile(zip, fake.archive(type, version, "linux_amd64").bytes);
        expectedH1[type] = await hashZipH1(zip);
      }

      const run = async (name: string) => {
        const work = join(dir.path, name);
        await Deno.mkdir(work);
        await Deno.writeTextFile(join(work, "main.tf"), mainTf);
        const r = await runTerraform(["init", "-input=false", "-no-color"], {
          cwd: work,
          cliConfig,
          caCertFile: tls.caCertPath,
          home: work,
        });
        assertEquals(r.code, 0, `terraform init failed:\n${r.stdout}\n${r.stderr}`);
        return { r, lock: await Deno.readTextFile(join(work, ".terraform.lock.hcl")) };
      };

      const cold = await run("cold");
      const locked = parseLockFile(cold.lock);
      assertEquals(locked.get("registry.terraform.io/example/alpha"), {
        version: "1.1.0",
        hashes: [expectedH1.alpha!],
      });
      assertEquals(locked.get("registry.terraform.io/example/beta"), {
        version: "2.3.4",
        hashes: [expectedH1.beta!],
      });
      await app.settle();
      // The archives Terraform installed are now in the mirror layout.
      const pkg = join(config.cacheDir, "packages", "registry.terraform.io", "example");
      assertEquals(
        await Deno.readFile(join(pkg, "alpha", "terraform-provider-alpha_1.1.0_linux_amd64.zip")),
        fake.archive("alpha", "1.1.0", "linux_amd64").bytes,
      );
      const upstreamBefore = fake.count();
      assert(upstreamBefore > 0);

      await fake.stop();
      const warm = await run("warm");
      assertEquals(warm.lock, cold.lock, "the warm lock file must equal the cold one");
      assertEquals(fake.count(), upstreamBefore);
      assert(log.records.some((r) => r.msg === "upstream failed; serving stale metadata"));
      assert(
        log.records.some((r) => r.msg === "request" && r.cache === "stale" && r.status === 200),
      );
    } finally {
      await server.shutdown(2_000);
    }
  } finally {
    await fake.stop();
  }
});
