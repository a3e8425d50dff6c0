/**
 * End to end with the real terraform CLI: a configuration using two registry
 * modules (one git-sourced with a `//subdir`, one an HTTP archive) and a
 * provider, through Repoxy's `host` block on a cold cache; then with the
 * registry, the git server and the archive host all stopped; then offline;
 * then from another cache filled by export → import, offline.
 * Every time the installed module files match what a direct init installs,
 * byte for byte.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { clientSnippet } from "../lib/ops/client_snippet.ts";
import { exportCache } from "../lib/commands/export.ts";
import { importTree } from "../lib/commands/import.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { makeTarGz, startFakeModuleRegistry } from "./fake_module_registry.ts";
import { findGitBackend, serveRepo } from "./_git_server.ts";
import { sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { findTerraform, runTerraform, skip } from "./_terraform.ts";

const NAME = "terraform init with registry modules (git //subdir, archive) through Repoxy: cold, " +
  "every upstream stopped, offline; files match a direct init";
const TERRAFORM = await findTerraform();
const GIT = await findGitBackend();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");
else if (!GIT) skip(NAME, "git http-backend is not installed");

const MAIN_TF = `terraform {
  required_providers {
    alpha = { source = "example/alpha", version = "1.1.0" }
  }
}
module "vpc" {
  source  = "example/net/aws"
  version = "1.0.0"
}
module "store" {
  source  = "example/store/aws"
  version = "~> 2.0"
}
output "cidr" { value = module.vpc.cidr }
`;

/** Every file under `dir` (no `.git`) as path → sha256 and exec bit. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(join(dir, rel))) {
      if (e.name === ".git") continue;
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p);
      else {
        const st = await Deno.lstat(join(dir, p));
        out[p] = `${sha256Hex(await Deno.readFile(join(dir, p)))} ${
          (st.mode! & 0o111) ? "x" : "-"
        }`;
      }
    }
  };
  await walk("");
  return out;
}

Deno.test({ name: NAME, ignore: !TERRAFORM || !GIT }, async () => {
  await using dir = await tempDir();
  const git = await serveRepo(dir.path, "net", {
    "README.md": "net\n",
    "main.tf": "# root module of the repository\n",
    "modules/vpc/main.tf":
      'variable "cidr" {\n  default = "10.0.0.0/16"\n}\noutput "cidr" {\n  value = var.cidr\n}\n',
    "modules/vpc/scripts/run.sh": "#!/bin/sh\necho hi\n",
  }, "v1.0.0");
  const mods = await startFakeModuleRegistry();
  mods.archives.set(
    "store-2.1.0.tar.gz",
    await makeTarGz([
      { name: "store/", type: "5" },
      { name: "store/main.tf", content: 'output "bucket" {\n  value = "b"\n}\n' },
      { name: "store/hook.sh", content: "#!/bin/sh\n", mode: 0o755 },
      { name: "LICENSE", content: "MIT\n" },
    ]),
  );
  mods.modules.set(
    "example/net/aws",
    new Map([["1.0.0", `git::${git.url}net.git//modules/vpc?ref=v1.0.0`]]),
  );
  mods.modules.set(
    "example/store/aws",
    new Map([
      ["2.0.0", `${mods.url}archives/store-2.0.0.tar.gz`],
      ["2.1.0", `${mods.url}archives/store-2.1.0.tar.gz//store`],
    ]),
  );
  // One registry host for providers and modules, as registry.terraform.io is.
  const fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req) => {
      const u = new URL(req.url);
      return u.pathname.startsWith("/v1/modules/")
        ? fetch(new URL(u.pathname, mods.url), { headers: req.headers }).then((r) =>
          new Response(r.body, r)
        )
        : undefined;
    },
  });
  let stopped = false;
  const stopUpstreams = async () => {
    if (stopped) return;
    stopped = true;
    await fake.stop();
    await mods.close();
    await git.close();
  };
  try {
    const init = async (name: string, cliConfig: string) => {
      const work = join(dir.path, name);
      await Deno.mkdir(work);
      await Deno.writeTextFile(join(work, "main.tf"), MAIN_TF);
      const r = await runTerraform(["init", "-input=false", "-no-color"], {
        cwd: work,
        cliConfig,
        home: work,
      });
      assertEquals(r.code, 0, `terraform init (${name}) failed:\n${r.stdout}\n${r.stderr}`);
      const modulesDir = join(work, ".terraform/modules");
      const manifest = JSON.parse(await Deno.readTextFile(join(modulesDir, "modules.json")));
      return { work, files: await tree(modulesDir), manifest, out: r.stdout };
    };

    const direct = await init(
      "direct",
      `host "registry.terraform.io" {\n  services = {\n    "providers.v1" = "${fake.registryUrl}/v1/providers/"\n    "modules.v1" = "${fake.registryUrl}/v1/modules/"\n  }\n}\n`,
    );
    assert(direct.files["vpc/modules/vpc/main.tf"], JSON.stringify(direct.files));
    assert(direct.files["store/store/main.tf"], JSON.stringify(direct.files));
    const gitFetchesDirect = git.fetches.length;
    const archiveGetsDirect = mods.count("/archives/store-2.1.0.tar.gz");

    const config = await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, "cache"),
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: [...fake.egressAllow, new URL(git.url).host, new URL(mods.url).host],
      metadataTtl: 0,
    });
    const serve = async (offline: boolean) => {
      const app = await createApp({ ...config, offline }, { log: memoryLogger() });
      const server = serveApp(app);
      return {
        app,
        server,
        cli: clientSnippet(server.url, ["registry.terraform.io"], false) + "\n",
      };
    };

    let s = await serve(false);
    try {
      const cold = await init("cold", s.cli);
      assertEquals(cold.files, direct.files, "cold init through Repoxy installs the same files");
      assertEquals(cold.manifest, direct.manifest);
      assertEquals(git.fetches.length - gitFetchesDirect, 1, "Repoxy fetched the git module once");
      assertEquals(git.fetches.at(-1)!.deepen, "1", "shallowly");
      assertEquals(
        mods.count("/archives/store-2.1.0.tar.gz") - archiveGetsDirect,
        1,
        "Repoxy fetched the archive once",
      );

      await stopUpstreams();
      const down = await init("down", s.cli);
      assertEquals(down.files, direct.files, "every upstream stopped: same files");
      assertEquals(down.manifest, direct.manifest);
    } finally {
      await s.server.shutdown();
    }

    s = await serve(true);
    try {
      const off = await init("offline", s.cli);
      assertEquals(off.files, direct.files, "offline: same files");
    } finally {
      await s.server.shutdown();
    }

    // The air gap: export → import into another cache → offline init.
    const exported = join(dir.path, "export");
    const ex = await exportCache(config.cacheDir, exported);
    assertEquals(ex.problems, []);
    const farConfig = { ...config, cacheDir: join(dir.path, "far-cache"), offline: true };
    const im = await importTree(farConfig, exported);
    assertEquals(im.modules, { imported: 2, cached: 0, refused: [] });
    assertEquals(im.problems, []);
    const farApp = await createApp(farConfig, { log: memoryLogger() });
    const farServer = serveApp(farApp);
    try {
      const far = await init(
        "far",
        clientSnippet(farServer.url, ["registry.terraform.io"], false) + "\n",
      );
      assertEquals(far.files, direct.files, "export → import → offline: same files");
      assertEquals(far.manifest, direct.manifest);
    } finally {
      await farServer.shutdown();
    }
  } finally {
    await stopUpstreams();
  }
});
