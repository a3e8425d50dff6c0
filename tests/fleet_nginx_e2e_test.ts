/**
 * The fleet end to end, as a platform team runs it (issue 13 "Tests"): three
 * real `repoxy serve` processes (-P=serve, TLS) on one Ceph RGW bucket
 * behind nginx round-robin, configured with docs/deploy/nginx/repoxy.conf
 * (TLS at nginx and again to the replicas), and the real terraform through
 * the balancer in both protocols.
 *
 * What the other RGW tests do not cover, and this file does: cold clients
 * arriving *through the balancer* (nginx spreads them; the fleet still makes
 * one upstream fetch per archive); lock files written through the balancer;
 * the upstream gone for the whole fleet (every replica, and a replaced
 * replica with an empty disk, serve what the fleet cached); and one replica
 * losing the bucket while the upstream is also gone, inside the fleet
 * (readyz, logs, its local tier, and the balancer still giving clients
 * every cached archive, because docs/deploy/nginx/repoxy.conf passes a 502
 * on to the next replica, once).
 * @module
 */
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { clientSnippet } from "../lib/ops/client_snippet.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { ROOT, writeFakeConfig } from "./_cli.ts";
import { type RepoxyProcess, spawnRepoxy } from "./_process.ts";
import { type Gateway, listBucket, newBucket, rgw, skipUnlessRgw, startGateway } from "./_rgw.ts";
import { sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { findTerraform, parseLockFile, requiredProvidersTf, runTerraform } from "./_terraform.ts";
import { type FakeArchive, startFakeRegistry } from "./fake_registry.ts";

const NAME = "a fleet behind nginx round-robin on one RGW bucket";
const NO_RGW = skipUnlessRgw(NAME);
const TERRAFORM = await findTerraform();
const NGINX = await new Deno.Command("nginx", { args: ["-v"], stdout: "null", stderr: "null" })
  .output().then((o) => o.success, () => false);
// deno-lint-ignore no-console
if (!NO_RGW && !TERRAFORM) console.log(`SKIP: ${NAME}: terraform is not on PATH`);
// deno-lint-ignore no-console
if (!NO_RGW && TERRAFORM && !NGINX) console.log(`SKIP: ${NAME}: nginx is not installed`);

const MAIN = join(ROOT, "main.ts");
const H = "registry.terraform.io";
const NAMES = ["a", "b", "c"] as const;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function until(
  cond: () => Promise<boolean> | boolean,
  what: string | (() => string),
  ms = 20_000,
) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** JSON log records of a replica process. */
function records(p: RepoxyProcess): Array<Record<string, unknown>> {
  return p.stdout.concat(p.stderr).flatMap((l) => {
    if (!l.startsWith("{")) return [];
    try {
      return [JSON.parse(l)];
    } catch {
      return [];
    }
  });
}

Deno.test({ name: NAME, ignore: NO_RGW || !TERRAFORM || !NGINX }, async (t) => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  // The cold clients' archives are held at the upstream until every replica
  // has its download going: the race is real, not sequential.
  const gates = new Map<string, { held: Promise<void>; open: () => void }>();
  const hold = (filename: string) => {
    let open!: () => void;
    const held = new Promise<void>((r) => open = r);
    gates.set(filename, { held, open });
    return open;
  };
  const fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    redirectDownloads: false,
    intercept: async (req, server) => {
      if (server === "release") await gates.get(new URL(req.url).pathname.split("/").pop()!)?.held;
      return undefined;
    },
  });
  const bucket = await newBucket(rgw!);
  // Replica c reaches the bucket through a gateway of its own, stopped later.
  const gw: Gateway = await startGateway(rgw!);
  const lbPort = freePort();
  const lb = `https://127.0.0.1:${lbPort}/`;
  const ports = NAMES.map(() => freePort());
  const homes = NAMES.map((n) => join(dir.path, n));

  const start = async (i: number): Promise<RepoxyProcess> => {
    await Deno.mkdir(homes[i]!, { recursive: true });
    const { config } = await writeFakeConfig(homes[i]!, fake, {
      listen: `127.0.0.1:${ports[i]}`,
      tls: { cert: tls.certPath, key: tls.keyPath },
      // Links in registry answers name the balancer, not the replica.
      publicUrl: lb,
      logFormat: "json",
      storage: {
        kind: "s3",
        endpoint: i === 2 ? gw.endpoint : rgw!.endpoint,
        bucket,
        prefix: "fleet",
        credentials: { accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey },
        leaseWait: "60s",
      },
    });
    return await spawnRepoxy(
      Deno.execPath(),
      ["run", "-P=serve", MAIN, "serve", "--config", config],
      { timeoutMs: 60_000 },
    );
  };
  const replicas = await Promise.all(NAMES.map((_, i) => start(i)));
  const direct = (i: number) => `https://127.0.0.1:${ports[i]}/`;

  // nginx as docs/deploy/nginx/repoxy.conf has it, pointed at the three replicas.
  const prefix = join(dir.path, "nginx");
  await Deno.mkdir(prefix);
  const conf = (await Deno.readTextFile(join(ROOT, "docs", "deploy", "nginx", "repoxy.conf")))
    .replace("server 10.0.1.11:8443", `server 127.0.0.1:${ports[0]}`)
    .replace(
      "server 10.0.2.11:8443",
      `server 127.0.0.1:${ports[1]} max_fails=2 fail_timeout=10s;\n` +
        `    server 127.0.0.1:${ports[2]}`,
    )
    .replace("listen 443 ssl;", `listen 127.0.0.1:${lbPort} ssl;`)
    .replace("listen [::]:443 ssl;", "")
    .replace("proxy_ssl_name mirror.corp.example;", "proxy_ssl_name localhost;")
    .replace("/etc/nginx/tls/mirror.corp.example.crt", tls.certPath)
    .replace("/etc/nginx/tls/mirror.corp.example.key", tls.keyPath)
    .replace("/etc/nginx/tls/corp-ca.pem", tls.caCertPath);
  assertEquals(conf.match(/server 127\.0\.0\.1:\d+ max_fails/g)?.length, 3, conf);
  await Deno.writeTextFile(join(prefix, "repoxy.conf"), conf);
  await Deno.writeTextFile(
    join(prefix, "nginx.conf"),
    `pid ${prefix}/nginx.pid;\nerror_log stderr;\nevents {}\n` +
      `http {\n  access_log off;\n  include ${prefix}/repoxy.conf;\n}\n`,
  );
  const nginx = new Deno.Command("nginx", {
    args: ["-p", prefix, "-c", join(prefix, "nginx.conf"), "-g", "daemon off;"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
  const get = (url: string) => fetch(url, { client } as RequestInit);
  const fetchSha = async (url: string) => {
    const res = await get(url);
    return { status: res.status, sha: sha256Hex(new Uint8Array(await res.arrayBuffer())) };
  };
  const ok = (a: FakeArchive) => ({ status: 200, sha: a.sha256 });
  const path = (a: FakeArchive) => `${H}/${a.namespace}/${a.type}/${a.filename}`;
  const upstreamGets = (a: FakeArchive) =>
    fake.count((r) => r.server === "release" && r.path.endsWith("/" + a.filename));
  const inFlight = async (i: number) => {
    const text = await (await get(direct(i) + "-/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith("repoxy_downloads_in_flight "));
    return Number(line?.split(" ")[1] ?? NaN);
  };
  const served = (i: number, a: FakeArchive) =>
    records(replicas[i]!).filter((r) =>
      r.msg === "request" && String(r.path).endsWith(a.filename) && r.status === 200
    ).length;

  // terraform's two configurations through the balancer, and the lock it must write.
  const mainTf = requiredProvidersTf([
    { name: "alpha", source: "registry.terraform.io/example/alpha", version: "1.1.0" },
    { name: "beta", source: "example/beta", version: "~> 2.3" },
  ]);
  const viaRegistry = clientSnippet(lb, [H], false) + "\n";
  const viaMirror = `provider_installation {\n  network_mirror {\n    url = "${lb}"\n  }\n}\n`;
  const h1: Record<string, string> = {};
  for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
    const zip = join(dir.path, `${type}.zip`);
    await Deno.writeFile(zip, fake.archive(type, version, "linux_amd64").bytes);
    h1[type] = await hashZipH1(zip);
  }
  /** The lock a direct init against the upstream writes (from the upstream's bytes). */
  const expectedLock = (protocol: "registry" | "mirror") =>
    new Map([["alpha", "1.1.0"], ["beta", "2.3.4"]].map(([type, version]) => [
      `${H}/example/${type}`,
      {
        version: version!,
        hashes: protocol === "mirror" ? [h1[type!]!] : [
          h1[type!]!,
          ...fake.archives.filter((a) => a.type === type && a.version === version)
            .map((a) => `zh:${a.sha256}`),
        ].sort(),
      },
    ]));
  let inits = 0;
  const init = async (cliConfig: string) => {
    const work = join(dir.path, `work-${++inits}`);
    await Deno.mkdir(work);
    await Deno.writeTextFile(join(work, "main.tf"), mainTf);
    const r = await runTerraform(["init", "-input=false", "-no-color"], {
      cwd: work,
      cliConfig,
      home: work,
      caCertFile: tls.caCertPath,
    });
    assertEquals(r.code, 0, `terraform init failed:\n${r.stdout}\n${r.stderr}`);
    assertMatch(r.stdout, /Installed example\/alpha v1\.1\.0/);
    assertMatch(r.stdout, /Installed example\/beta v2\.3\.4/);
    return parseLockFile(await Deno.readTextFile(join(work, ".terraform.lock.hcl")));
  };

  try {
    await until(async () => {
      const r = await get(lb + "-/readyz").catch(() => undefined);
      await r?.body?.cancel();
      return r?.status === 200;
    }, "nginx");

    await t.step(
      "8 concurrent cold clients per archive through nginx: 1 upstream fetch each, exact bytes, all replicas served",
      async () => {
        // One archive after the other: any 8 requests in a row reach all three replicas.
        for (
          const a of [
            fake.archive("alpha", "1.0.0", "linux_amd64"),
            fake.archive("beta", "2.3.4", "linux_arm64"),
          ]
        ) {
          const open = hold(a.filename);
          const clients = Array.from({ length: 8 }, () => fetchSha(lb + path(a)));
          // Each replica has its download going (one holds the lease, the others wait on it).
          let seen: number[] = [];
          await until(
            async () =>
              (seen = await Promise.all(NAMES.map((_, i) => inFlight(i)))).every((n) => n === 1),
            () => `a download of ${a.filename} on every replica (in flight: ${seen})`,
            // Generous: on a loaded machine RGW can take seconds per request.
            45_000,
          );
          open();
          for (const c of clients) assertEquals(await c, ok(a));
          assertEquals(upstreamGets(a), 1, `one upstream fetch of ${a.filename} for the fleet`);
          // Access log lines are written as each body ends: wait for all eight.
          const spread = () => NAMES.map((_, i) => served(i, a));
          await until(
            () => spread().reduce((x, y) => x + y) === 8,
            () => `8 log lines: ${spread()}`,
          );
          // nginx round-robin: 3, 3 and 2 in some order.
          assertEquals(spread().sort(), [2, 3, 3], `nginx spread the clients: ${spread()}`);
        }
      },
    );

    await t.step(
      "terraform init through nginx, registry then mirror protocol: the upstream's lock",
      async () => {
        assertEquals(await init(viaRegistry), expectedLock("registry"));
        assertEquals(await init(viaMirror), expectedLock("mirror"));
        for (const a of fake.archives) assert(upstreamGets(a) <= 1, `${a.filename} fetched twice`);
      },
    );

    const cached = [
      fake.archive("alpha", "1.0.0", "linux_amd64"),
      fake.archive("beta", "2.3.4", "linux_arm64"),
      fake.archive("alpha", "1.1.0", "linux_amd64"),
      fake.archive("beta", "2.3.4", "linux_amd64"),
    ];
    await t.step("upstream stopped: every replica serves what the fleet cached", async () => {
      // Uploads finish after the client's response: wait until the bucket has them all.
      const inBucket = async () =>
        (await listBucket(rgw!, bucket, "fleet/packages/")).map((o) => o.key).sort();
      const keys = cached.map((a) => `fleet/packages/${path(a)}`).sort();
      await until(async () => String(await inBucket()) === String(keys), "the uploads");
      await fake.stop();
      for (const i of NAMES.keys()) {
        for (const a of cached) assertEquals(await fetchSha(direct(i) + path(a)), ok(a));
      }
    });

    await t.step(
      "a replica replaced with an empty disk fills from the bucket; a fresh init through nginx works",
      async () => {
        await replicas[2]!.stop("SIGTERM");
        await Deno.remove(homes[2]!, { recursive: true });
        replicas[2] = await start(2);
        const local = (a: FakeArchive) =>
          Deno.readFile(join(homes[2]!, "cache", "packages", path(a))).then(sha256Hex, () => "");
        for (const a of cached) assertEquals(await local(a), "", "the new disk is empty");
        // The terraform archives and one more: alpha 1.0.0 stays off its disk (next step).
        for (const a of cached.slice(1)) {
          assertEquals(await fetchSha(direct(2) + path(a)), ok(a));
          await until(async () => (await local(a)) === a.sha256, `${a.filename} on c's disk`);
        }
        assertEquals(await init(viaMirror), expectedLock("mirror"));
        assertEquals(await init(viaRegistry), expectedLock("registry"));
      },
    );

    await t.step(
      "replica c loses the bucket too: its local tier serves, readyz and logs say so, nginx still serves every cached archive and tries an uncached one on two replicas at most",
      async () => {
        await gw.stop();
        for (const a of cached.slice(1)) assertEquals(await fetchSha(direct(2) + path(a)), ok(a));
        // readyz pings the bucket at most once a second: degraded within a few.
        // deno-lint-ignore no-explicit-any
        let body: any;
        await until(
          async () => {
            const ready = await get(direct(2) + "-/readyz");
            assertEquals(ready.status, 200);
            body = await ready.json();
            return body.status === "degraded";
          },
          "readyz to say degraded",
          5_000,
        );
        assertEquals([body.status, body.storage?.reachable], ["degraded", false]);
        for (const i of [0, 1]) {
          assertEquals((await (await get(direct(i) + "-/readyz")).json()).status, "ready");
        }
        assertEquals(
          records(replicas[2]!).filter((r) =>
            r.msg === "storage bucket unreachable; serving from the local tier"
          ).length,
          1,
          "said once",
        );
        // Neither the bucket nor the upstream: c cannot have alpha 1.0.0, but
        // the balancer's clients must still get it from the others.
        const orphan = cached[0]!;
        const answer = await get(direct(2) + path(orphan));
        await answer.body?.cancel();
        assert(answer.status >= 500, `c answers ${answer.status}`);
        for (let k = 0; k < 6; k++) assertEquals(await fetchSha(lb + path(orphan)), ok(orphan));
        assertEquals(await init(viaRegistry), expectedLock("registry"));

        // What the fleet never cached fails everywhere: the balancer's retry
        // of a 502 costs one more replica, never all of them.
        const never = fake.archive("alpha", "1.0.0", "darwin_arm64");
        const failed = await get(lb + path(never));
        await failed.body?.cancel();
        assertEquals(failed.status, 502);
        const tried = () =>
          NAMES.map((_, i) =>
            records(replicas[i]!).filter((r) =>
              r.msg === "request" && String(r.path).endsWith(never.filename)
            ).length
          );
        await until(() => tried().reduce((x, y) => x + y) >= 2, () => `two tries: ${tried()}`);
        assertEquals(tried().reduce((x, y) => x + y), 2, `proxy_next_upstream_tries: ${tried()}`);
      },
    );
  } finally {
    for (const g of gates.values()) g.open();
    client.close();
    try {
      nginx.kill("SIGQUIT");
    } catch { /* gone */ }
    await nginx.status;
    for (const r of replicas) await r.stop("SIGTERM").catch(() => {});
    await gw.stop();
    await fake.stop();
  }
});
