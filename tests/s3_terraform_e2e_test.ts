/**
 * The real terraform CLI through Repoxy replicas sharing one bucket (Ceph
 * RGW): a cold `init` through replica A (registry protocol) fills the
 * bucket; with the upstream then down, replicas started with empty disks
 * serve `init` from the bucket alone, through the network mirror protocol
 * (HTTPS) and the registry protocol.
 * @module
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { clientSnippet } from "../lib/ops/client_snippet.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { tempDir } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { findTerraform, requiredProvidersTf, runTerraform, skip } from "./_terraform.ts";
import { newBucket, rgw, skipUnlessRgw } from "./_rgw.ts";

const NAME = "terraform init through replicas on one bucket, both protocols, upstream down";
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");
const NO_RGW = skipUnlessRgw(NAME);

const PROVIDERS = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.1.0", platforms: ["linux_amd64", "darwin_arm64"] }],
}];

Deno.test({ name: NAME, ignore: !TERRAFORM || NO_RGW }, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fake = await startFakeRegistry({ providers: PROVIDERS });
  const bucket = await newBucket(rgw!);
  const mainTf = requiredProvidersTf([
    { name: "alpha", source: "registry.terraform.io/example/alpha", version: "1.1.0" },
  ]);
  const replica = async (name: string, withTls: boolean) => {
    const config = await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, name),
      ...(withTls ? { tls: { cert: tls.certPath, key: tls.keyPath } } : {}),
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
      metadataTtl: 0,
      storage: {
        kind: "s3",
        endpoint: rgw!.endpoint,
        bucket,
        prefix: "fleet",
        credentials: { accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey },
      },
    });
    const app = await createApp(config, { log: memoryLogger() });
    return { app, server: serveApp(app) };
  };
  const init = async (name: string, cliConfig: string) => {
    const work = join(dir.path, `work-${name}`);
    await Deno.mkdir(work);
    await Deno.writeTextFile(join(work, "main.tf"), mainTf);
    const r = await runTerraform(["init", "-input=false", "-no-color"], {
      cwd: work,
      cliConfig,
      home: work,
      caCertFile: tls.caCertPath,
    });
    assertEquals(r.code, 0, `terraform init (${name}) failed:\n${r.stdout}\n${r.stderr}`);
    assertMatch(r.stdout, /Installed example\/alpha v1\.1\.0/);
  };
  try {
    const a = await replica("a", false);
    try {
      await init("a", clientSnippet(a.server.url, ["registry.terraform.io"], false) + "\n");
      await a.app.settle();
    } finally {
      await a.server.shutdown(2_000);
    }
    const fetched = fake.count();
    await fake.stop();

    const b = await replica("b", true);
    try {
      await init(
        "b-mirror",
        `provider_installation {\n  network_mirror {\n    url = "${b.server.url}"\n  }\n}\n`,
      );
    } finally {
      await b.server.shutdown(2_000);
    }
    const c = await replica("c", false);
    try {
      await init(
        "c-registry",
        clientSnippet(c.server.url, ["registry.terraform.io"], false) + "\n",
      );
    } finally {
      await c.server.shutdown(2_000);
    }
    assertEquals(fake.count(), fetched, "nothing reached the upstream after replica A");
  } finally {
    await fake.stop();
  }
});
