/**
 * Issue 11's battery of real-client scenarios, with the real `terraform`,
 * through both protocols (a network mirror over HTTPS with a test CA, and the
 * registry protocol through `host` blocks), each compared with terraform
 * talking to the fake registries directly: the same versions chosen, the same
 * lock-file bytes where the protocol allows, the same use of the plugin cache.
 *
 * One pair of fake registries, one CA and one Repoxy for the whole file:
 * `registry.terraform.io` (open) and `registry.example.com` (needs a token,
 * which only Repoxy's config holds). The scenarios not already driven
 * elsewhere (see the README's Guarantees) are steps of one test, in an order
 * that keeps each "cold" step cold: a 700-version provider, three-platform
 * locks, `providers mirror`, the plugin cache dir, constraints and
 * prereleases, two registries with a token, concurrent cold inits, the air
 * gap (warm, export, import, offline serve through both protocols; or the
 * cache directory carried),
 * then mixed modes with the upstreams gone, Repoxy restarted during the outage,
 * and restarted offline.
 */
import { type App, createApp, serveApp } from "../lib/app.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { exportCache } from "../lib/commands/export.ts";
import { importTree } from "../lib/commands/import.ts";
import { warm } from "../lib/commands/warm.ts";
import { buildConfig } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import type { RunningServer } from "../lib/http/server.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { type FakeProviderSpec, type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { exists, sha256Hex as sha256, tempDir } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { makeProviderZip } from "./_zip.ts";
import { findTerraform, parseLockFile, skip } from "./_terraform.ts";

const NAME = "battery: issue 11's real-client scenarios through both protocols, against direct";
// Decided before registration, so a missing terraform is reported as ignored, never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

const H = "registry.terraform.io";
const E = "registry.example.com";
const TOKEN = "battery-upstream-token-0123456789";
const HOST_PLATFORM = `${Deno.build.os}_${Deno.build.arch === "x86_64" ? "amd64" : "arm64"}`;
const THREE = ["linux_amd64", "darwin_arm64", "windows_amd64"];
const LOCK = ".terraform.lock.hcl";

/** 700 versions 0.0.0 … 6.9.9, three platforms each. */
const BIG_VERSIONS = Array.from({ length: 700 }, (_, i) => ({
  version: `${Math.floor(i / 100)}.${Math.floor(i / 10) % 10}.${i % 10}`,
  platforms: THREE,
}));
/** The same version set under several names, one constraint each. */
const CONSTRAINED = ["1.0.0", "1.2.0", "1.2.9", "1.3.0", "1.4.0-rc1", "2.0.0-beta1"];
const CONSTRAINTS: Record<string, [constraint: string, expected: string]> = {
  tilde: ["~> 1.2", "1.3.0"],
  range: [">= 1.0, < 2.0", "1.3.0"],
  notthis: ["!= 1.3.0", "1.2.9"],
  patch: ["~> 1.2.0", "1.2.9"],
  pre: ["2.0.0-beta1", "2.0.0-beta1"],
};

const PROVIDERS_H: FakeProviderSpec[] = [
  {
    namespace: "example",
    type: "alpha",
    versions: [{ version: "1.0.0", platforms: THREE }, { version: "1.1.0", platforms: THREE }],
  },
  { namespace: "example", type: "big", versions: BIG_VERSIONS },
  ...Object.keys(CONSTRAINTS).map((type) => ({
    namespace: "example",
    type,
    versions: CONSTRAINED.map((version) => ({ version, platforms: [HOST_PLATFORM] })),
  })),
  // Build metadata: terraform's version parser accepts it.
  {
    namespace: "example",
    type: "meta",
    versions: ["1.0.0", "1.1.0+build.7"].map((version) => ({
      version,
      platforms: [HOST_PLATFORM],
    })),
  },
  // Touched only by the concurrent cold inits.
  {
    namespace: "example",
    type: "conc",
    versions: [{ version: "1.0.0", platforms: [HOST_PLATFORM, "darwin_arm64"] }],
  },
  // Never fetched through Repoxy: offline, it must fail clearly.
  { namespace: "example", type: "never", versions: [{ version: "1.0.0", platforms: THREE }] },
];
const PROVIDERS_E: FakeProviderSpec[] = [
  { namespace: "corp", type: "gamma", versions: [{ version: "0.3.0", platforms: THREE }] },
  // The same address as on registry.terraform.io, other bytes: the caches must stay apart.
  { namespace: "example", type: "alpha", versions: [{ version: "1.1.0", platforms: THREE }] },
];

/** A CLI config block sending `host`'s registry protocol to `providersV1`. */
function hostBlock(host: string, providersV1: string): string {
  return `host "${host}" {\n  services = {\n    "providers.v1" = "${providersV1}"\n  }\n}\n`;
}

/** A root module requiring `providers` (`[name=]address` → constraint). */
function mainTf(providers: Record<string, string>): string {
  const lines = Object.entries(providers).map(([key, version]) => {
    const [name, source] = key.includes("=") ? key.split("=") : [key.split("/").at(-1), key];
    return `    ${name} = { source = "${source}", version = "${version}" }`;
  });
  return `terraform {\n  required_providers {\n${lines.join("\n")}\n  }\n}\n`;
}

/** Archive downloads the fake's release host answered since `mark` (paths, sorted). */
function zipFetches(fake: FakeRegistry, mark = 0): string[] {
  return fake.requests.slice(mark)
    .filter((r) =>
      r.server === "release" && r.method === "GET" && r.path.startsWith("/files/") &&
      r.path.endsWith(".zip")
    )
    .map((r) => r.path.split("/").at(-1)!)
    .sort();
}

/** Every file of a tree: relative path → sha256 of its bytes. */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(join(d, e.name), `${rel}${e.name}/`);
      else out[`${rel}${e.name}`] = sha256(await Deno.readFile(join(d, e.name)));
    }
  };
  await walk(root, "");
  return Object.fromEntries(Object.entries(out).sort());
}

/** Version chosen for each provider of a lock file. */
function versionsOf(lock: string): Record<string, string> {
  return Object.fromEntries([...parseLockFile(lock)].map(([k, v]) => [k, v.version]));
}

Deno.test({ name: NAME, ignore: !TERRAFORM }, async (t) => {
  await using dir = await tempDir("repoxy-battery-");
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fakeH = await startFakeRegistry({
    providers: PROVIDERS_H,
    // The concurrent inits' archive is slow, so that every init asks while
    // the one download is still in flight.
    intercept: async (req) => {
      if (new URL(req.url).pathname.includes("/files/example/conc/")) {
        await new Promise((r) => setTimeout(r, 400));
      }
      return undefined;
    },
  });
  const otherAlpha = new Map<string, Uint8Array>();
  for (const pl of THREE) {
    otherAlpha.set(
      `terraform-provider-alpha_1.1.0_${pl}.zip`,
      await makeProviderZip("alpha", "1.1.0", pl, [{ name: "ORIGIN", data: E }]),
    );
  }
  const fakeE = await startFakeRegistry({
    providers: PROVIDERS_E,
    requireToken: TOKEN,
    zipOverride: (name, zip) => otherAlpha.get(name) ?? zip,
  });
  const cacheDir = join(dir.path, "cache");
  const onlineConfig = {
    listen: "127.0.0.1:0",
    cacheDir,
    tls: { cert: tls.certPath, key: tls.keyPath },
    upstreams: { [H]: { url: fakeH.registryUrl }, [E]: { url: fakeE.registryUrl, token: TOKEN } },
    egressAllow: [...fakeH.egressAllow, ...fakeE.egressAllow],
  };
  let log = memoryLogger();
  /** Added to the online app's clock: the "upstream down" step makes every list stale. */
  let skewMs = 0;
  let app: App = await createApp(await buildConfig(onlineConfig), {
    log,
    now: () => Date.now() + skewMs,
    sleep: () => Promise.resolve(),
  });
  let server: RunningServer = serveApp(app);
  const servers: RunningServer[] = [server];
  const httpClient = Deno.createHttpClient({ caCerts: [tls.caCertPem] });

  const directCli = hostBlock(H, `${fakeH.registryUrl}/v1/providers/`) +
    hostBlock(E, `${fakeE.registryUrl}/v1/providers/`) +
    `credentials "${E}" {\n  token = "${TOKEN}"\n}\n`;
  // No credentials for registry.example.com: the token is Repoxy's alone.
  const hostCli = () =>
    hostBlock(H, `${server.url}v1/providers/${H}/`) +
    hostBlock(E, `${server.url}v1/providers/${E}/`);
  const mirrorCli = () =>
    `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`;
  const modes = { host: hostCli, mirror: mirrorCli } as const;
  type Mode = keyof typeof modes;

  /** Runs terraform in `work/<name>` (made, with `tf` as main.tf, when given). */
  const terraform = async (
    name: string,
    cli: string,
    args: string[],
    opts: { tf?: string; env?: Record<string, string>; ok?: boolean } = {},
  ) => {
    const cwd = join(dir.path, "work", name);
    await Deno.mkdir(cwd, { recursive: true });
    if (opts.tf !== undefined) await Deno.writeTextFile(join(cwd, "main.tf"), opts.tf);
    await Deno.writeTextFile(join(cwd, "terraformrc"), cli);
    const out = await new Deno.Command(TERRAFORM!, {
      args,
      cwd,
      clearEnv: true,
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: cwd,
        TF_CLI_CONFIG_FILE: join(cwd, "terraformrc"),
        CHECKPOINT_DISABLE: "1",
        TF_IN_AUTOMATION: "1",
        TF_REGISTRY_CLIENT_TIMEOUT: "15",
        SSL_CERT_FILE: tls.caCertPath,
        ...opts.env,
      },
      stdin: "null",
    }).output();
    const dec = new TextDecoder();
    const output = dec.decode(out.stdout) + dec.decode(out.stderr);
    if (opts.ok ?? true) {
      assertEquals(out.code, 0, `${name}: terraform ${args.join(" ")}:\n${output}`);
    }
    const lockPath = join(cwd, LOCK);
    const lock = await exists(lockPath) ? await Deno.readTextFile(lockPath) : "";
    return { code: out.code, output, lock, cwd };
  };
  const init = ["init", "-input=false", "-no-color"];
  /** Archives Repoxy's clients downloaded since log record `mark`. */
  const served = (mark = 0) =>
    log.records.slice(mark).filter((r) =>
      r.msg === "request" && r.method === "GET" && String(r.path).endsWith(".zip") &&
      r.status === 200
    ).length;
  /** The h1: of a fake archive. */
  const h1Of = async (fake: FakeRegistry, type: string, version: string, platform: string) => {
    const zip = join(dir.path, `${type}_${version}_${platform}.zip`);
    await Deno.writeFile(zip, fake.archive(type, version, platform).bytes);
    return await hashZipH1(zip);
  };

  try {
    await t.step("a 700-version provider: the same choice as direct; list latency", async () => {
      const timeGet = async (url: string) => {
        const started = performance.now();
        const res = await fetch(url, { client: httpClient });
        const body = await res.arrayBuffer();
        assertEquals(res.status, 200, url);
        return { ms: performance.now() - started, bytes: body.byteLength };
      };
      const median = async (url: string) => {
        const times: number[] = [];
        for (let i = 0; i < 21; i++) times.push((await timeGet(url)).ms);
        return times.sort((a, b) => a - b)[10]!;
      };
      const index = `${server.url}${H}/example/big/index.json`;
      const versions = `${server.url}v1/providers/${H}/example/big/versions`;
      const direct = `${fakeH.registryUrl}/v1/providers/example/big/versions`;
      const coldIndex = await timeGet(index);
      const coldVersions = await timeGet(versions);
      const figures = {
        directVersions: await median(direct),
        index: await median(index),
        versions: await median(versions),
      };
      const idx = await (await fetch(index, { client: httpClient })).json();
      assertEquals(Object.keys(idx.versions).length, 700);
      // Repoxy's own time per answer (access log), apart from the test client's.
      const serverMs = (path: string) => {
        const ms = log.records.filter((r) => r.msg === "request" && r.path === path)
          .map((r) => Number(r.ms));
        return { cold: ms[0]!, warm: ms.slice(1).sort((a, b) => a - b)[ms.length >> 1]! };
      };
      const si = serverMs(`/${H}/example/big/index.json`);
      const sv = serverMs(`/v1/providers/${H}/example/big/versions`);
      // deno-lint-ignore no-console
      console.log(
        `FIGURE 700 versions x 3 platforms, client-side (Deno fetch, HTTPS): index.json cold ` +
          `${coldIndex.ms.toFixed(1)} ms (${coldIndex.bytes} B), warm median ` +
          `${figures.index.toFixed(2)} ms; versions cold ${coldVersions.ms.toFixed(1)} ms ` +
          `(${coldVersions.bytes} B), warm median ${figures.versions.toFixed(2)} ms; the fake ` +
          `direct (plain HTTP) median ${figures.directVersions.toFixed(2)} ms. Server-side ` +
          `(access log): index.json cold ${si.cold} ms, warm median ${si.warm} ms; versions ` +
          `cold ${sv.cold} ms, warm median ${sv.warm} ms`,
      );
      const tf = mainTf({ "example/big": "~> 3.4.0", "example/alpha": ">= 1.0" });
      const want = (await terraform("big-direct", directCli, init, { tf })).lock;
      assertEquals(versionsOf(want), {
        [`${H}/example/alpha`]: "1.1.0",
        [`${H}/example/big`]: "3.4.9",
      });
      const viaHost = await terraform("big-host", hostCli(), init, { tf });
      assertEquals(viaHost.lock, want, "registry protocol: the same lock, byte for byte");
      const viaMirror = await terraform("big-mirror", mirrorCli(), init, { tf });
      assertEquals(versionsOf(viaMirror.lock), versionsOf(want));
    });

    await t.step("providers lock for three platforms, then init accepts the lock", async () => {
      const flags = THREE.map((p) => `-platform=${p}`);
      const lockArgs = ["providers", "lock", "-no-color", ...flags];
      for (
        const [version, first, second] of [["1.0.0", "mirror", "host"], [
          "1.1.0",
          "host",
          "mirror",
        ]] as const
      ) {
        const tf = mainTf({ "example/alpha": version, [`${E}/corp/gamma`]: "0.3.0" });
        const direct = await terraform(`lock-direct-${version}`, directCli, lockArgs, { tf });
        const h1 = (fake: FakeRegistry, type: string, v: string) =>
          Promise.all(THREE.map((p) => h1Of(fake, type, v, p)));
        const alphaH1 = await h1(fakeH, "alpha", version);
        const gammaH1 = await h1(fakeE, "gamma", "0.3.0");
        assertEquals(
          parseLockFile(direct.lock).get(`${H}/example/alpha`)?.hashes,
          [
            ...alphaH1,
            ...THREE.map((p) => `zh:${fakeH.archive("alpha", version, p).sha256}`),
          ].sort(),
        );
        // First cold through one protocol, then warm through the other.
        for (const mode of [first, second] as Mode[]) {
          const name = `lock-${mode}-${version}`;
          const args = mode === "mirror"
            ? ["providers", "lock", "-no-color", `-net-mirror=${server.url}`, ...flags]
            : lockArgs;
          const made = await terraform(name, modes[mode](), args, { tf });
          if (mode === "host") {
            assertEquals(made.lock, direct.lock, `${name}: byte for byte the direct lock`);
          } else {
            // Through a network mirror terraform records the h1: of each
            // platform it downloaded, and no zh: (the protocol carries none to it).
            const lock = parseLockFile(made.lock);
            assertEquals(lock.get(`${H}/example/alpha`), { version, hashes: [...alphaH1].sort() });
            assertEquals(lock.get(`${E}/corp/gamma`), {
              version: "0.3.0",
              hashes: [...gammaH1].sort(),
            });
          }
          // init, through the same protocol, accepts the lock as it is.
          const again = await terraform(name, modes[mode](), init);
          assertEquals(again.lock, made.lock, `${name}: init left the lock alone`);
          assert(!again.output.includes("Incomplete lock file"), again.output);
        }
        // A registry-made lock (zh: for every platform) installs through the mirror too.
        const cross = await terraform(`lock-direct-${version}`, mirrorCli(), init);
        assertEquals(cross.lock, direct.lock);
      }
    });

    await t.step(
      "providers mirror with Repoxy as the source: the same tree as direct",
      async () => {
        const tf = mainTf({ "example/alpha": "1.1.0", [`${E}/corp/gamma`]: "0.3.0" });
        const args = (out: string) => [
          "providers",
          "mirror",
          "-no-color",
          "-platform=linux_amd64",
          "-platform=darwin_arm64",
          out,
        ];
        const direct = await terraform("pm-direct", directCli, args("out"), { tf });
        const want = await tree(join(direct.cwd, "out"));
        assertEquals(Object.keys(want).filter((f) => f.endsWith(".zip")).length, 4);
        assertEquals(
          want[`${H}/example/alpha/terraform-provider-alpha_1.1.0_darwin_arm64.zip`],
          fakeH.archive("alpha", "1.1.0", "darwin_arm64").sha256,
        );
        const viaHost = await terraform("pm-host", hostCli(), args("out"), { tf });
        assertEquals(await tree(join(viaHost.cwd, "out")), want);
        // terraform 1.11's providers mirror ignores provider_installation: with
        // only a network_mirror configured it goes to the origin registries
        // (unreachable here), and Repoxy sees no request at all.
        const mark = log.records.length;
        const viaMirror = await terraform("pm-mirror", mirrorCli(), args("out"), { tf, ok: false });
        assert(viaMirror.code !== 0, viaMirror.output);
        assertEquals(log.records.slice(mark).filter((r) => r.msg === "request").length, 0);
      },
    );

    await t.step(
      "TF_PLUGIN_CACHE_DIR shared by two directories, with and without a lock",
      async () => {
        const tf = mainTf({ "example/alpha": "1.0.0", [`${E}/corp/gamma`]: "0.3.0" });
        /** For each run: whether the shared cache was used, and archives downloaded. */
        const pattern = async (mode: Mode | "direct") => {
          const cli = mode === "direct" ? directCli : modes[mode]();
          const cacheDir = join(dir.path, `plugin-cache-${mode}`);
          await Deno.mkdir(cacheDir);
          const env = { TF_PLUGIN_CACHE_DIR: cacheDir };
          const out: Array<{ cached: number; downloads: number }> = [];
          const run = async (name: string, lock?: string) => {
            const logMark = log.records.length;
            const fakeMark = [fakeH.requests.length, fakeE.requests.length] as const;
            const cwd = join(dir.path, "work", name);
            await Deno.mkdir(cwd, { recursive: true });
            if (lock !== undefined) await Deno.writeTextFile(join(cwd, LOCK), lock);
            const r = await terraform(name, cli, init, { tf, env });
            out.push({
              cached: (r.output.match(/from the shared cache directory/g) ?? []).length,
              downloads: mode === "direct"
                ? zipFetches(fakeH, fakeMark[0]).length + zipFetches(fakeE, fakeMark[1]).length
                : served(logMark),
            });
            return r;
          };
          const first = await run(`pc-${mode}-1`);
          await run(`pc-${mode}-2`);
          await run(`pc-${mode}-3`, first.lock);
          return out;
        };
        const direct = await pattern("direct");
        // Terraform uses the cache only when the lock already vouches for the
        // package: the third directory, which has the first one's lock.
        assertEquals(direct, [
          { cached: 0, downloads: 2 },
          { cached: 0, downloads: 2 },
          { cached: 2, downloads: 0 },
        ]);
        assertEquals(await pattern("host"), direct);
        assertEquals(await pattern("mirror"), direct);
      },
    );

    await t.step("constraints and prereleases choose what direct chooses", async () => {
      const tf = mainTf(
        Object.fromEntries(
          Object.entries(CONSTRAINTS).map(([type, [c]]) => [`example/${type}`, c]),
        ),
      );
      const expected = Object.fromEntries(
        Object.entries(CONSTRAINTS).map(([type, [, v]]) => [`${H}/example/${type}`, v]),
      );
      const direct = await terraform("cons-direct", directCli, init, { tf });
      assertEquals(versionsOf(direct.lock), expected);
      for (const round of ["cold", "warm"]) {
        const viaHost = await terraform(`cons-host-${round}`, hostCli(), init, { tf });
        assertEquals(viaHost.lock, direct.lock, `registry protocol, ${round}`);
        const viaMirror = await terraform(`cons-mirror-${round}`, mirrorCli(), init, { tf });
        assertEquals(versionsOf(viaMirror.lock), expected, `network mirror, ${round}`);
      }
      // Build metadata: chosen by a range and pinned exactly, through both protocols.
      for (const [name, c] of [["meta-range", ">= 1.0"], ["meta-pinned", "1.1.0+build.7"]]) {
        const metaTf = mainTf({ "example/meta": c! });
        const want = await terraform(`${name}-direct`, directCli, init, { tf: metaTf });
        assertEquals(versionsOf(want.lock), { [`${H}/example/meta`]: "1.1.0+build.7" });
        assertEquals(
          (await terraform(`${name}-host`, hostCli(), init, { tf: metaTf })).lock,
          want.lock,
        );
        const viaMirror = await terraform(`${name}-mirror`, mirrorCli(), init, { tf: metaTf });
        assertEquals(parseLockFile(viaMirror.lock).get(`${H}/example/meta`), {
          version: "1.1.0+build.7",
          hashes: [await h1Of(fakeH, "meta", "1.1.0+build.7", HOST_PLATFORM)],
        });
      }
      // Ranges skipped 1.4.0-rc1 (the newest in range); the exact prerelease was installed.
      assertMatch(direct.output, /Installed example\/pre v2\.0\.0-beta1/);
    });

    await t.step("two registries, one behind a token only Repoxy holds", async () => {
      // Without the token, direct fails: the token is what makes it work.
      const noToken = hostBlock(H, `${fakeH.registryUrl}/v1/providers/`) +
        hostBlock(E, `${fakeE.registryUrl}/v1/providers/`);
      const tf = mainTf({
        "example/alpha": "1.1.0",
        [`${E}/corp/gamma`]: "0.3.0",
        [`alpha2=${E}/example/alpha`]: "1.1.0",
      });
      const refused = await terraform("two-no-token", noToken, init, { tf, ok: false });
      assert(refused.code !== 0);
      assertMatch(refused.output, /requires\s+authentication\s+credentials/);
      const direct = await terraform("two-direct", directCli, init, { tf });
      const viaHost = await terraform("two-host", hostCli(), init, { tf });
      assertEquals(viaHost.lock, direct.lock);
      const viaMirror = await terraform("two-mirror", mirrorCli(), init, { tf });
      const locked = parseLockFile(viaMirror.lock);
      assertEquals(versionsOf(viaMirror.lock), versionsOf(direct.lock));
      const want = {
        [`${E}/corp/gamma`]: await h1Of(fakeE, "gamma", "0.3.0", HOST_PLATFORM),
        [`${H}/example/alpha`]: await h1Of(fakeH, "alpha", "1.1.0", HOST_PLATFORM),
        [`${E}/example/alpha`]: await h1Of(fakeE, "alpha", "1.1.0", HOST_PLATFORM),
      };
      assert(want[`${H}/example/alpha`] !== want[`${E}/example/alpha`]);
      for (const [address, h1] of Object.entries(want)) {
        assertEquals(locked.get(address)?.hashes, [h1], address);
        assert(parseLockFile(direct.lock).get(address)?.hashes.includes(h1), address);
      }
      // Every API request Repoxy made to registry.example.com carried the
      // configured token; nothing else ever saw it.
      const fromRepoxy = (f: FakeRegistry) =>
        f.requests.filter((r) => !(r.headers.get("user-agent") ?? "").includes("Terraform"));
      const api = fromRepoxy(fakeE).filter((r) => r.server === "registry");
      assert(api.length > 0);
      for (const r of api) {
        assertEquals(r.headers.get("authorization"), `Bearer ${TOKEN}`, r.path);
      }
      for (
        const r of [
          ...fakeH.requests,
          ...fakeE.requests.filter((x) => x.server === "release"),
        ]
      ) {
        assertEquals(r.headers.get("authorization"), null, `${r.server} ${r.path}`);
      }
    });

    await t.step(
      "concurrent cold inits: all succeed, one upstream download per archive",
      async () => {
        const tf = mainTf({ "example/conc": "1.0.0" });
        const fakeMark = fakeH.requests.length;
        const logMark = log.records.length;
        const runs = await Promise.all(
          Array.from({ length: 8 }, (_, i) => {
            const mode: Mode = i % 2 ? "host" : "mirror";
            return terraform(`conc-${mode}-${i}`, modes[mode](), init, { tf });
          }),
        );
        const h1 = await h1Of(fakeH, "conc", "1.0.0", HOST_PLATFORM);
        for (const r of runs) {
          const locked = parseLockFile(r.lock).get(`${H}/example/conc`);
          assertEquals(locked?.version, "1.0.0");
          assert(locked.hashes.includes(h1), r.output);
        }
        assertEquals(zipFetches(fakeH, fakeMark), [
          `terraform-provider-conc_1.0.0_${HOST_PLATFORM}.zip`,
        ]);
        assertEquals(served(logMark), 8);
        const sums = fakeH.requests.slice(fakeMark).filter((r) => r.path.endsWith("/SHA256SUMS"));
        // deno-lint-ignore no-console
        console.log(
          `FIGURE 8 concurrent cold inits: 1 archive download, ${sums.length} SHA256SUMS fetch(es), ` +
            `${fakeH.requests.length - fakeMark} upstream requests in all`,
        );
      },
    );

    await t.step(
      "air gap: warm, export, import into a new cache, offline serve, init",
      async () => {
        const platforms = [HOST_PLATFORM, "darwin_arm64"].map((p) => {
          const [os, arch] = p.split("_") as [string, string];
          return { os, arch };
        });
        const targets = [
          { provider: { hostname: H, namespace: "example", type: "alpha" }, version: "1.1.0" },
          { provider: { hostname: E, namespace: "corp", type: "gamma" }, version: "0.3.0" },
        ];
        const warmed = await warm(app, {
          targets: targets.map((x) => ({ ...x, source: "battery" })),
          platforms,
          concurrency: 4,
        });
        assertEquals(warmed.failures, []);
        const carried = join(dir.path, "usb");
        const exported = await exportCache(cacheDir, carried, {
          providers: targets,
          platforms,
          log: memoryLogger(),
        });
        assertEquals([exported.archives, exported.problems], [4, []]);
        const gapped = await buildConfig({
          listen: "127.0.0.1:0",
          cacheDir: join(dir.path, "airgapped-cache"),
          tls: { cert: tls.certPath, key: tls.keyPath },
          offline: true,
          upstreams: { [H]: {}, [E]: {} },
        });
        const imported = await importTree(gapped, carried, { log: memoryLogger() });
        assertEquals(imported.problems, []);
        assertEquals(imported.items.length, 4);
        // Per version: its signed SHA256SUMS and two platforms' download documents.
        assertEquals(imported.registry.map((i) => i.status), Array(6).fill("imported"));
        const direct = (await terraform("airgap-direct", directCli, init, {
          tf: mainTf({ "example/alpha": "1.1.0", [`${E}/corp/gamma`]: "0.3.0" }),
        })).lock;
        const gapLog = memoryLogger();
        const gapApp = await createApp(gapped, {
          log: gapLog,
          fetch: () => Promise.reject(new Error("air gap: no network")),
        });
        const gapServer = serveApp(gapApp);
        servers.push(gapServer);
        try {
          const tf = mainTf({ "example/alpha": "1.1.0", [`${E}/corp/gamma`]: "0.3.0" });
          const cli =
            `provider_installation {\n  network_mirror {\n    url = "${gapServer.url}"\n  }\n}\n`;
          const r = await terraform("airgap-mirror", cli, init, { tf });
          assertEquals(parseLockFile(r.lock).get(`${H}/example/alpha`)?.hashes, [
            await h1Of(fakeH, "alpha", "1.1.0", HOST_PLATFORM),
          ]);
          assertEquals(parseLockFile(r.lock).get(`${E}/corp/gamma`)?.hashes, [
            await h1Of(fakeE, "gamma", "0.3.0", HOST_PLATFORM),
          ]);
          // The registry protocol too: the export's .repoxy/ sidecar carried the
          // version lists, download documents with their keys, and the signed
          // SHA256SUMS; the lock is byte for byte what terraform writes against
          // the registries directly (zh: of every platform, h1: of this one).
          const viaHost = await terraform(
            "airgap-import-host",
            hostBlock(H, `${gapServer.url}v1/providers/${H}/`) +
              hostBlock(E, `${gapServer.url}v1/providers/${E}/`),
            init,
            { tf },
          );
          assertEquals(viaHost.lock, direct);
          assertEquals((viaHost.lock.match(/"zh:/g) ?? []).length, 6);
          assertEquals(gapLog.records.filter((r) => r.msg === "request" && r.status !== 200), []);
        } finally {
          await gapServer.shutdown(2_000);
        }
        // Carrying the cache directory itself keeps both protocols as well.
        await app.settle();
        const carriedCache = join(dir.path, "carried-cache");
        const cp = await new Deno.Command("cp", { args: ["-a", cacheDir, carriedCache] }).output();
        assert(cp.success, new TextDecoder().decode(cp.stderr));
        const cacheApp = await createApp(
          await buildConfig({
            ...onlineConfig,
            cacheDir: carriedCache,
            offline: true,
            upstreams: { [H]: {}, [E]: {} },
          }),
          { log: memoryLogger(), fetch: () => Promise.reject(new Error("air gap: no network")) },
        );
        const cacheServer = serveApp(cacheApp);
        servers.push(cacheServer);
        try {
          const tf = mainTf({ "example/alpha": "1.1.0", [`${E}/corp/gamma`]: "0.3.0" });
          const viaHost = await terraform(
            "airgap-cache-host",
            hostBlock(H, `${cacheServer.url}v1/providers/${H}/`) +
              hostBlock(E, `${cacheServer.url}v1/providers/${E}/`),
            init,
            { tf },
          );
          // Byte for byte what terraform writes against the registries directly.
          assertEquals(viaHost.lock, direct);
        } finally {
          await cacheServer.shutdown(2_000);
        }
      },
    );

    await t.step(
      "mixed modes, then the upstreams down, then Repoxy restarted offline",
      async () => {
        const dirs = {
          mirror: mainTf({
            "example/alpha": "1.0.0",
            "example/tilde": "~> 1.2",
            [`${E}/corp/gamma`]: "0.3.0",
          }),
          host: mainTf({
            "example/alpha": "1.1.0",
            "example/big": "~> 3.4.0",
            [`${E}/corp/gamma`]: "0.3.0",
          }),
        };
        const locks: Record<string, string> = {};
        for (const mode of ["mirror", "host"] as Mode[]) {
          locks[mode] =
            (await terraform(`mixed-${mode}`, modes[mode](), init, { tf: dirs[mode] })).lock;
        }
        /** Both directories again from a fresh .terraform: the locks hold. */
        const again = async (what: string) => {
          for (const mode of ["mirror", "host"] as Mode[]) {
            const cwd = join(dir.path, "work", `mixed-${mode}`);
            await Deno.remove(join(cwd, ".terraform"), { recursive: true });
            const r = await terraform(`mixed-${mode}`, modes[mode](), init);
            assertEquals(r.lock, locks[mode], `${what}: ${mode}`);
          }
        };
        // The upstreams go away; an hour later every list is stale: served anyway.
        await app.settle();
        await fakeH.stop();
        await fakeE.stop();
        skewMs = 3_600_000;
        const downMark = log.records.length;
        await again("upstreams down");
        // Stale lists were served (stale-if-error), not refetched.
        assert(
          log.records.slice(downMark).some((r) => r.msg === "request" && r.cache === "stale"),
          JSON.stringify(log.records.slice(downMark).map((r) => [r.path, r.cache])),
        );
        // Restarted during the outage (online, real retry waits, a clock an hour
        // on): lists come from disk, stale, within terraform's budget.
        await server.shutdown(2_000);
        log = memoryLogger();
        let attempts = 0;
        app = await createApp(await buildConfig(onlineConfig), {
          log,
          now: () => Date.now() + 3_600_000,
          onUpstreamRequest: () => attempts++,
        });
        server = serveApp(app);
        servers.push(server);
        const started = performance.now();
        await again("restarted, upstreams down");
        // deno-lint-ignore no-console
        console.log(
          `FIGURE restarted during the outage: 4 inits (2 per protocol) in ` +
            `${(performance.now() - started).toFixed(0)} ms; slowest answer ` +
            `${
              Math.max(...log.records.filter((r) => r.msg === "request").map((r) => Number(r.ms)))
            } ms, ${attempts} upstream attempts`,
        );
        assert(log.records.some((r) => r.msg === "request" && r.cache === "stale"));
        // Restarted offline on the same cache.
        await server.shutdown(2_000);
        log = memoryLogger();
        app = await createApp(await buildConfig({ ...onlineConfig, offline: true }), {
          log,
          fetch: () => Promise.reject(new Error("offline: no network")),
        });
        server = serveApp(app);
        servers.push(server);
        await again("offline");
        // Offline, three-platform locks and providers mirror come out as they did online.
        const flags = THREE.map((p) => `-platform=${p}`);
        const lockTf = mainTf({ "example/alpha": "1.1.0", [`${E}/corp/gamma`]: "0.3.0" });
        const earlier = (name: string) => Deno.readTextFile(join(dir.path, "work", name, LOCK));
        const hostLock = await terraform("offline-lock-host", hostCli(), [
          "providers",
          "lock",
          "-no-color",
          ...flags,
        ], { tf: lockTf });
        assertEquals(hostLock.lock, await earlier("lock-direct-1.1.0"));
        const mirrorLock = await terraform("offline-lock-mirror", mirrorCli(), [
          "providers",
          "lock",
          "-no-color",
          `-net-mirror=${server.url}`,
          ...flags,
        ], { tf: lockTf });
        assertEquals(mirrorLock.lock, await earlier("lock-mirror-1.1.0"));
        const pm = await terraform("offline-pm-host", hostCli(), [
          "providers",
          "mirror",
          "-no-color",
          "-platform=linux_amd64",
          "-platform=darwin_arm64",
          "out",
        ], { tf: lockTf });
        assertEquals(
          await tree(join(pm.cwd, "out")),
          await tree(join(dir.path, "work", "pm-direct", "out")),
        );
        // Across protocols: what the mirror directory locked installs through the registry protocol.
        const cross = await terraform("mixed-cross", hostCli(), init, { tf: dirs.mirror });
        assertEquals(versionsOf(cross.lock), versionsOf(locks.mirror!));
        // A platform never fetched of a cached version: refused, naming it.
        const uncached = {
          mirror:
            /does not have a package of\s+registry\.terraform\.io\/example\/conc 1\.0\.0 for darwin_arm64/,
          host: /registry\.terraform\.io\/example\/conc 1\.0\.0 is not available for darwin_arm64/,
        };
        for (const mode of ["mirror", "host"] as Mode[]) {
          const mirrorFlag = mode === "mirror" ? [`-net-mirror=${server.url}`] : [];
          const r = await terraform(
            `uncached-platform-${mode}`,
            modes[mode](),
            ["providers", "lock", "-no-color", ...mirrorFlag, "-platform=darwin_arm64"],
            { tf: mainTf({ "example/conc": "1.0.0" }), ok: false },
          );
          assertEquals(r.code, 1, r.output);
          assertMatch(r.output, uncached[mode]);
        }
        // A provider never fetched: terraform fails naming it, in both protocols;
        // Repoxy's 404 says why (terraform shows no body for a 404: a network
        // mirror's 404 must stay "not here" so other sources are tried).
        const never = mainTf({ "example/never": "1.0.0" });
        const said = {
          mirror:
            /provider registry\.terraform\.io\/example\/never was not found in any of the\s+search locations\s+- provider mirror at https:\/\/127\.0\.0\.1/,
          host:
            /provider registry registry\.terraform\.io does not have a provider named\s+registry\.terraform\.io\/example\/never/,
        };
        for (const mode of ["mirror", "host"] as Mode[]) {
          const r = await terraform(`never-${mode}`, modes[mode](), init, { tf: never, ok: false });
          assertEquals(r.code, 1, r.output);
          assertMatch(r.output, said[mode]);
        }
        for (
          const path of [
            `${H}/example/never/index.json`,
            `v1/providers/${H}/example/never/versions`,
          ]
        ) {
          const res = await fetch(`${server.url}${path}`, { client: httpClient });
          assertEquals(res.status, 404);
          const body = await res.json() as { errors: string[] };
          assertMatch(
            body.errors[0]!,
            /registry\.terraform\.io\/example\/never .*this mirror is offline/,
          );
        }
        assertEquals(fakeH.count((r) => r.path.includes("/never")), 0);
      },
    );
  } finally {
    httpClient.close();
    for (const s of servers) await s.shutdown(2_000).catch(() => {});
    await app.close();
    await fakeH.stop();
    await fakeE.stop();
  }
});
