/**
 * Issue 11, point 3, with the real terraform: what the user reads through
 * Repoxy is what they read talking to the registry directly.
 *
 * - "Did you intend to use datadog/datadog?" (the legacy-namespace lookup)
 *   appears through Repoxy's registry protocol exactly as direct;
 * - a registry that refuses Repoxy's token: terraform prints the same
 *   "requires authentication credentials" as direct (registry protocol), an
 *   authentication message rather than "try again later" (network mirror),
 *   and Repoxy's log says which `upstreams.<host>.token` to fix;
 * - a registry hostname with a port cannot go through a network mirror
 *   (terraform builds a URL without a scheme and never asks the mirror), but
 *   works through the registry protocol (README note).
 *
 * Handler-level tests of the same behaviour are in fidelity_paths_test.ts.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { findTerraform, requiredProvidersTf, runTerraform, skip } from "./_terraform.ts";

const NAME =
  "terraform through Repoxy prints what it prints direct: the legacy-namespace hint, refused credentials, port hostnames";

// Decided before registration, so a missing terraform is reported as ignored, never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

const H = "registry.terraform.io";
const PORT_HOST = "registry.example.com:8443";
const DATADOG = {
  namespace: "datadog",
  type: "datadog",
  versions: [{ version: "3.1.0", platforms: ["linux_amd64"] }],
};

/** A CLI config sending `host`'s registry protocol to `providersV1`. */
function hostBlock(host: string, providersV1: string): string {
  return `host "${host}" {\n  services = {\n    "providers.v1" = "${providersV1}"\n  }\n}\n`;
}

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fakes: FakeRegistry[] = [];
  const servers: Array<{ shutdown(ms: number): Promise<void> }> = [];
  let n = 0;
  /** Runs `terraform init` in a fresh directory; output is stdout + stderr. */
  const init = async (mainTf: string, cliConfig: string) => {
    const work = join(dir.path, `run${n++}`);
    await Deno.mkdir(work);
    await Deno.writeTextFile(join(work, "main.tf"), mainTf);
    const r = await runTerraform(["init", "-input=false", "-no-color"], {
      cwd: work,
      cliConfig,
      caCertFile: tls.caCertPath,
      home: work,
    });
    return { code: r.code, out: r.stdout + r.stderr };
  };
  const start = async (
    upstreams: Record<string, { url: string; token?: string }>,
    egress: string[],
  ) => {
    const config = await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, `cache${n++}`),
      tls: { cert: tls.certPath, key: tls.keyPath },
      upstreams,
      egressAllow: egress,
    });
    const log = memoryLogger();
    const app = await createApp(config, { log });
    const server = serveApp(app);
    servers.push(server);
    return { server, log };
  };
  try {
    // 1. The legacy-namespace hint: a provider used without `source` whose
    //    hashicorp/ address the registry does not know.
    const open = await startFakeRegistry({
      providers: [...TWO_PROVIDERS, DATADOG],
      legacyLookup: true,
    });
    fakes.push(open);
    const repoxy = await start({ [H]: { url: open.registryUrl } }, open.egressAllow);
    const implicit = `provider "datadog" {}\n`;
    const direct = await init(implicit, hostBlock(H, `${open.registryUrl}/v1/providers/`));
    const through = await init(implicit, hostBlock(H, `${repoxy.server.url}v1/providers/${H}/`));
    assert(direct.code !== 0);
    assertMatch(direct.out, /Did you intend to use datadog\/datadog\?/);
    assertEquals(through.code, direct.code);
    assertEquals(through.out, direct.out);
    // The default-upstream form (`providers.v1` without a hostname) too.
    const viaDefault = await init(implicit, hostBlock(H, `${repoxy.server.url}v1/providers/`));
    assertEquals(viaDefault.out, direct.out);
    assertEquals(open.count((r) => r.path === "/v1/providers/-/datadog/versions"), 3);

    // 2. A registry that wants a token Repoxy does not have.
    const locked = await startFakeRegistry({
      providers: TWO_PROVIDERS,
      requireToken: "right-token",
    });
    fakes.push(locked);
    const noToken = await start({ [H]: { url: locked.registryUrl } }, locked.egressAllow);
    const alpha = requiredProvidersTf([
      { name: "alpha", source: "example/alpha", version: "1.1.0" },
    ]);
    const directAuth = await init(alpha, hostBlock(H, `${locked.registryUrl}/v1/providers/`));
    const throughAuth = await init(
      alpha,
      hostBlock(H, `${noToken.server.url}v1/providers/${H}/`),
    );
    assert(directAuth.code !== 0);
    assertMatch(directAuth.out, /host registry\.terraform\.io requires authentication credentials/);
    assertEquals(throughAuth.code, directAuth.code);
    assertEquals(throughAuth.out, directAuth.out);
    assert(!/try again later/.test(throughAuth.out), throughAuth.out);
    // Network mirror: its protocol has no room for Repoxy's message either;
    // terraform says credentials were refused instead of "try again later".
    const mirror = await init(
      alpha,
      `provider_installation {\n  network_mirror {\n    url = "${noToken.server.url}"\n  }\n}\n`,
    );
    assert(mirror.code !== 0);
    assertMatch(mirror.out, /authentication credentials/);
    assert(!/try again later/.test(mirror.out), mirror.out);
    // Repoxy's log says what to fix, once.
    const warnings = noToken.log.records.filter((r) =>
      String(r.msg).includes("refused Repoxy's credentials")
    );
    assertEquals(warnings.length, 1);
    assertMatch(String(warnings[0]!.msg), /upstreams\."registry\.terraform\.io"\.token is not set/);

    // With the right token configured, the same init succeeds through Repoxy.
    const withToken = await start(
      { [H]: { url: locked.registryUrl, token: "right-token" } },
      locked.egressAllow,
    );
    const fixed = await init(alpha, hostBlock(H, `${withToken.server.url}v1/providers/${H}/`));
    assertEquals(fixed.code, 0, fixed.out);
    assertMatch(fixed.out, /Installed example\/alpha v1\.1\.0/);

    // 3. A registry hostname with a port: the network mirror is never even
    //    asked (terraform parses "host:port/..." as a URL scheme); the
    //    registry protocol through a host block works.
    const ported = await start({ [PORT_HOST]: { url: open.registryUrl } }, open.egressAllow);
    const portTf = requiredProvidersTf([
      { name: "alpha", source: `${PORT_HOST}/example/alpha`, version: "1.1.0" },
    ]);
    const before = open.count();
    const viaMirror = await init(
      portTf,
      `provider_installation {\n  network_mirror {\n    url = "${ported.server.url}"\n  }\n}\n`,
    );
    assert(viaMirror.code !== 0);
    assertMatch(viaMirror.out, /unsupported protocol\s+scheme "registry\.example\.com"/);
    assertEquals(open.count(), before, "the mirror never fetched anything for it");
    assert(!ported.log.records.some((r) => r.msg === "request" && String(r.path).includes("8443")));
    const viaRegistry = await init(
      portTf,
      hostBlock(PORT_HOST, `${ported.server.url}v1/providers/${PORT_HOST}/`),
    );
    assertEquals(viaRegistry.code, 0, viaRegistry.out);
    assertMatch(viaRegistry.out, /Installed registry\.example\.com:8443\/example\/alpha v1\.1\.0/);
  } finally {
    for (const s of servers) await s.shutdown(2_000);
    for (const f of fakes) await f.stop();
  }
});
