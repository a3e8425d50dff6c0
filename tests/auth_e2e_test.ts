/**
 * Client auth end to end with the real terraform CLI: a token in its CLI
 * config (`credentials "<host>"`) lets `terraform init` through, and the
 * archives (and, for the registry protocol, SHA256SUMS and its signature)
 * download through the signed links Repoxy embeds, with no credentials;
 * without the token, or with one whose rules hide the providers, init fails
 * and nothing is downloaded.
 */
import { createApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startServer } from "../lib/http/server.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { clientSnippet } from "../lib/ops/client_snippet.ts";
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

const MIRROR = "terraform init through the network mirror with a token; refused without";
const REGISTRY = "terraform init through the registry protocol with a token; refused without";

// Decided before registration, so a missing terraform is reported as ignored, never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) {
  skip(MIRROR, "terraform is not on PATH");
  skip(REGISTRY, "terraform is not on PATH");
}

const TOKEN = "e2e-token-0123456789abcdef0123";
const HIDDEN = "hidden-token-0123456789abcdef0";
const AUTH = {
  tokens: [
    { name: "ci", token: TOKEN },
    { name: "elsewhere", token: HIDDEN, namespaces: ["other"] },
  ],
};

/** What reached Repoxy: path, whether it carried a bearer token, and its query. */
interface Seen {
  method: string;
  path: string;
  query: string;
  authorization: boolean;
  status: number;
}

async function setup(dir: string, tls: boolean) {
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  const t = tls ? await makeTestTls(join(dir, "tls")) : undefined;
  const config = await buildConfig({
    listen: "127.0.0.1:0",
    cacheDir: join(dir, "cache"),
    ...(t ? { tls: { cert: t.certPath, key: t.keyPath } } : {}),
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
    auth: AUTH,
  });
  const log = memoryLogger();
  const app = await createApp(config, { log });
  const seen: Seen[] = [];
  // The app behind a recording wrapper: the test must see what terraform sent.
  const server = startServer(async (req) => {
    const url = new URL(req.url);
    const res = await app.handle(req);
    seen.push({
      method: req.method,
      path: url.pathname,
      query: url.search,
      authorization: req.headers.has("authorization"),
      status: res.status,
    });
    return res;
  }, { ...config.listen, tls: config.tls, log, onDrained: () => app.close() });
  return { fake, app, server, seen, log, caCertFile: t?.caCertPath };
}

async function expectedH1(dir: string, fake: Awaited<ReturnType<typeof startFakeRegistry>>) {
  const out: Record<string, string> = {};
  for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
    const zip = join(dir, `${type}.zip`);
    await Deno.writeFile(zip, fake.archive(type, version, "linux_amd64").bytes);
    out[type] = await hashZipH1(zip);
  }
  return out;
}

const MAIN_TF = requiredProvidersTf([
  { name: "alpha", source: "registry.terraform.io/example/alpha", version: "1.1.0" },
  { name: "beta", source: "example/beta", version: "~> 2.3" },
]);

async function init(dir: string, name: string, cliConfig: string, caCertFile?: string) {
  const work = join(dir, name);
  await Deno.mkdir(work);
  await Deno.writeTextFile(join(work, "main.tf"), MAIN_TF);
  const r = await runTerraform(["init", "-input=false", "-no-color"], {
    cwd: work,
    cliConfig,
    home: work,
    ...(caCertFile ? { caCertFile } : {}),
  });
  const lock = await Deno.readTextFile(join(work, ".terraform.lock.hcl")).catch(() => undefined);
  return { ...r, lock };
}

Deno.test({ name: MIRROR, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const { fake, app, server, seen, log, caCertFile } = await setup(dir.path, true);
  try {
    const host = new URL(server.url).host; // 127.0.0.1:PORT
    const mirror =
      `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`;
    const credentials = (token: string) => `credentials "${host}" {\n  token = "${token}"\n}\n`;

    // Without a token: refused at the first metadata request; nothing downloaded.
    const anon = await init(dir.path, "anon", mirror, caCertFile);
    assert(anon.code !== 0, anon.stdout);
    assertMatch(anon.stderr + anon.stdout, /credentials|401|[Uu]nauthori[sz]ed/);
    // A token whose rules hide these providers: they do not exist for it.
    const hidden = await init(dir.path, "hidden", credentials(HIDDEN) + mirror, caCertFile);
    assert(hidden.code !== 0, hidden.stdout);
    assertEquals(seen.filter((s) => s.path.endsWith(".zip")), []);
    assertEquals(fake.count(), 0, "nothing was asked upstream for refused clients");

    // With the token: init succeeds, the archives come through signed links.
    const ok = await init(dir.path, "ok", credentials(TOKEN) + mirror, caCertFile);
    assertEquals(ok.code, 0, `terraform init failed:\n${ok.stdout}\n${ok.stderr}`);
    const h1 = await expectedH1(dir.path, fake);
    const locked = parseLockFile(ok.lock!);
    assertEquals(locked.get("registry.terraform.io/example/alpha"), {
      version: "1.1.0",
      hashes: [h1.alpha!],
    });
    assertEquals(locked.get("registry.terraform.io/example/beta"), {
      version: "2.3.4",
      hashes: [h1.beta!],
    });
    const zips = seen.filter((s) => s.path.endsWith(".zip"));
    // Terraform's getter sends a HEAD before the GET of each archive.
    assertEquals(zips.filter((z) => z.method === "GET").length, 2);
    for (const z of zips) {
      assertEquals(z.status, 200);
      assertEquals(z.authorization, false, "terraform sends no token for archives");
      assertMatch(z.query, /^\?exp=\d+&tok=ci&sig=[\w-]{43}$/, "terraform kept the signed query");
    }
    assert(
      seen.filter((s) => s.path.endsWith(".json") && s.status === 200).every((s) =>
        s.authorization
      ),
    );
    await app.settle();
    const lines = JSON.stringify(log.records);
    assert(!lines.includes(TOKEN) && !lines.includes(HIDDEN), "a token reached the log");
  } finally {
    await server.shutdown(2_000);
    await fake.stop();
  }
});

Deno.test({ name: REGISTRY, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const { fake, app, server, seen, log } = await setup(dir.path, false);
  try {
    // The pull-through `host` block as the start-up banner prints it.
    const hostBlock = clientSnippet(server.url, ["registry.terraform.io"], false) + "\n";
    // Through a host block the client sends the token of the registry it stands in for.
    const credentials = `credentials "registry.terraform.io" {\n  token = "${TOKEN}"\n}\n`;

    const anon = await init(dir.path, "anon", hostBlock);
    assert(anon.code !== 0, anon.stdout);
    assertMatch(anon.stderr + anon.stdout, /credentials|401|[Uu]nauthori[sz]ed/);
    assertEquals(fake.count(), 0);

    const ok = await init(dir.path, "ok", credentials + hostBlock);
    assertEquals(ok.code, 0, `terraform init failed:\n${ok.stdout}\n${ok.stderr}`);
    assertMatch(ok.stdout, /Installed example\/alpha v1\.1\.0 \(self-signed/);
    const h1 = await expectedH1(dir.path, fake);
    const locked = parseLockFile(ok.lock!);
    for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
      const expected = [
        h1[type]!,
        ...fake.archives.filter((a) => a.type === type && a.version === version).map((a) =>
          `zh:${a.sha256}`
        ),
      ].sort();
      assertEquals(locked.get(`registry.terraform.io/example/${type}`), {
        version,
        hashes: expected,
      });
    }
    // Archive, SHA256SUMS and .sig: no token sent, signed link kept, 200.
    const unauthenticated = seen.filter((s) => /\.zip$|SHA256SUMS(\.sig)?$/.test(s.path));
    assertEquals(unauthenticated.filter((s) => s.method === "GET").length, 6);
    for (const s of unauthenticated) {
      assertEquals([s.status, s.authorization], [200, false], s.path);
      assertMatch(s.query, /^\?exp=\d+&tok=ci&sig=[\w-]{43}$/);
    }
    await app.settle();
    assert(!JSON.stringify(log.records).includes(TOKEN), "the token reached the log");
  } finally {
    await server.shutdown(2_000);
    await fake.stop();
  }
});
