/**
 * docs/deploy/: the fleet's example deployment, checked as far as this
 * machine allows. The configs load; the Kubernetes manifests parse and
 * carry the very config the systemd hosts use, with every file it names
 * mounted; the systemd drop-ins pass `systemd-analyze verify` and hand over
 * exactly the secrets the configs name; the nginx load balancer passes
 * `nginx -t` and, run for real in front of two replicas, balances, streams
 * archives with links one replica signed and another honours, and skips a
 * replica that went away. What cannot run here (a cluster, a bucket, the
 * container image) is marked "reviewed on paper" in the files themselves.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { buildConfig, type ConfigEnv } from "../lib/config/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { parseRoute } from "../lib/protocol/paths.ts";
import { ROOT } from "./_cli.ts";
import { sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const DEPLOY = join(ROOT, "docs", "deploy");
const CREDENTIALS = "/run/credentials/repoxy.service/";
/** The storage keys issue 13 specifies (the S3 storage itself is built alongside). */
const STORAGE_KEYS = [
  "bucket",
  "credentials",
  "endpoint",
  "kind",
  "pathStyle",
  "prefix",
  "redirect",
  "region",
];

async function available(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

// Decided at module load, so a missing tool is an ignored test with one SKIP line, never a pass.
const YAML = await available("python3", ["-c", "import yaml"]);
const SYSTEMD = await available("systemd-analyze", ["--version"]);
const NGINX = await available("nginx", ["-v"]);
// deno-lint-ignore no-console
if (!YAML) console.log("SKIP: deploy docs: python3 with PyYAML is not installed");
// deno-lint-ignore no-console
if (!SYSTEMD) console.log("SKIP: deploy docs: systemd-analyze is not installed");
// deno-lint-ignore no-console
if (!NGINX) console.log("SKIP: deploy docs: nginx is not installed");

const readJson = async (...path: string[]) =>
  JSON.parse(await Deno.readTextFile(join(DEPLOY, ...path)));

/** Every `file:` value and TLS path a config names. */
function filesNamed(raw: unknown, out: string[] = []): string[] {
  if (typeof raw === "string" && raw.startsWith("file:")) out.push(raw.slice(5));
  else if (Array.isArray(raw)) raw.forEach((v) => filesNamed(v, out));
  else if (typeof raw === "object" && raw !== null) {
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v === "string" && (k === "cert" || k === "key")) out.push(v);
      else filesNamed(v, out);
    }
  }
  return out;
}

/** Config loading where every named file exists (secrets and PEM stand-ins). */
function fakeFiles(read: string[] = []): ConfigEnv {
  const pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
  return {
    readTextFile: (p) => {
      read.push(p);
      return Promise.resolve(p.endsWith(".crt") || p.endsWith(".key") ? pem : "x".repeat(48));
    },
    getEnv: () => undefined,
    cwd: () => "/",
  };
}

Deno.test("docs/deploy configs load: replicas with shared tokens and link key, an edge chained to them", async () => {
  const replicaRaw = await readJson("config", "replica.json");
  assertEquals(Object.keys(replicaRaw.storage).sort(), STORAGE_KEYS);
  assertEquals(replicaRaw.storage.kind, "s3");
  const read: string[] = [];
  const replica = await buildConfig(replicaRaw, {}, "/etc/repoxy", fakeFiles(read));
  assertEquals(replica.cacheDir, "/var/lib/repoxy"); // packaging unit: StateDirectory=repoxy
  assertEquals(replica.listen.port, 8443);
  // One link key for the fleet, or links fail on the next replica.
  assert(replica.auth?.urlKey, "auth.urlKey is set");
  // Every file the config names is read at start-up, the bucket's credentials included.
  assertEquals(read.sort(), filesNamed(replicaRaw).sort());
  assertEquals(replica.storage?.credentials?.accessKeyId, "x".repeat(48));

  const edgeRaw = await readJson("config", "edge.json");
  const edge = await buildConfig(edgeRaw, {}, "/etc/repoxy", fakeFiles());
  // The edge names the replicas' public URL: the host its download links point at.
  assertEquals(edge.via?.url, replica.publicUrl);
  assertEquals(
    [...edge.upstreams.values()].map((u) => [u.url, u.token]),
    [
      [`${replica.publicUrl}registry.terraform.io`, "x".repeat(48)],
      [`${replica.publicUrl}registry.opentofu.org`, "x".repeat(48)],
    ],
  );
  assertEquals(edge.egress.egressAllow, [], "the central needs no egressAllow entry");
});

Deno.test({
  name: "the Kubernetes manifests parse and run the systemd hosts' config with every file it names",
  ignore: !YAML,
}, async () => {
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
      join(DEPLOY, "kubernetes", "repoxy.yaml"),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  // deno-lint-ignore no-explicit-any
  const docs: any[] = JSON.parse(new TextDecoder().decode(out.stdout));
  const kind = (k: string) => docs.filter((d) => d.kind === k);
  assertEquals(docs.map((d) => d.kind).sort(), [
    "ConfigMap",
    "Deployment",
    "Namespace",
    "PodDisruptionBudget",
    "Secret",
    "Service",
  ]);
  const replicaRaw = await readJson("config", "replica.json");
  assertEquals(JSON.parse(kind("ConfigMap")[0].data["config.json"]), replicaRaw);

  const pod = kind("Deployment")[0].spec.template.spec;
  const c = pod.containers[0];
  assertEquals(c.args, ["serve", "--config", "/etc/repoxy/config.json"]);
  assertEquals(c.ports[0].containerPort, 8443);
  assertEquals(parseRoute(c.readinessProbe.httpGet.path, "x")?.kind, "ready");
  assertEquals(parseRoute(c.livenessProbe.httpGet.path, "x")?.kind, "health");
  for (const p of [c.readinessProbe, c.livenessProbe]) assertEquals(p.httpGet.scheme, "HTTPS");
  assert(pod.terminationGracePeriodSeconds >= 30, "outlasts the 20 s drain");
  const service = kind("Service")[0].spec;
  assertEquals(service.ports[0].targetPort, c.ports[0].name);
  assertEquals(service.selector, kind("Deployment")[0].spec.selector.matchLabels);

  // Every file the config names is in a mounted volume, under the same name.
  const volumes = new Map<string, Set<string>>();
  const secretKeys = new Map(
    kind("Secret").map((s) => [s.metadata.name, Object.keys(s.stringData ?? s.data)]),
  );
  for (const v of pod.volumes) {
    const files = new Set<string>();
    for (const src of v.projected?.sources ?? []) {
      const from = src.configMap ?? src.secret;
      const items: Array<{ path: string }> | undefined = from.items;
      if (items) items.forEach((i) => files.add(i.path));
      else if (src.secret) {
        // A TLS secret made with kubectl has tls.crt and tls.key; others are in this file.
        const keys = secretKeys.get(src.secret.name);
        assert(keys, `secret ${src.secret.name} is defined here`);
        keys.forEach((k) => files.add(k));
      }
    }
    volumes.set(v.name, files);
  }
  const mounted = (path: string) =>
    c.volumeMounts.some((m: { name: string; mountPath: string }) => {
      if (!path.startsWith(m.mountPath + "/")) return false;
      const files = volumes.get(m.name)!;
      return files.size === 0 || files.has(path.slice(m.mountPath.length + 1));
    });
  for (const f of ["/etc/repoxy/config.json", ...filesNamed(replicaRaw)]) {
    assert(mounted(f), `${f} is mounted in the pod`);
  }
  assert(mounted(join(replicaRaw.cacheDir, "packages", "x")), "cacheDir is a writable volume");
});

Deno.test({
  name: "the systemd drop-ins verify and load exactly the secrets their configs name",
  ignore: !SYSTEMD,
}, async () => {
  await using dir = await tempDir();
  const exe = join(dir.path, "repoxy");
  await Deno.writeTextFile(exe, "#!/bin/sh\nexit 0\n");
  await Deno.chmod(exe, 0o755);
  const unit = (await Deno.readTextFile(join(ROOT, "packaging", "repoxy.service")))
    .replace("ExecStart=/usr/local/bin/repoxy ", `ExecStart=${exe} `);
  for (const [dropIn, config] of [["replica.conf", "replica.json"], ["edge.conf", "edge.json"]]) {
    const text = await Deno.readTextFile(join(DEPLOY, "systemd", dropIn!));
    const loaded = [...text.matchAll(/^LoadCredential=([^:]+):/gm)].map((m) => m[1]!).sort();
    const named = filesNamed(await readJson("config", config!))
      .filter((f) => f.startsWith(CREDENTIALS))
      .map((f) => f.slice(CREDENTIALS.length))
      .sort();
    assertEquals(loaded, named, dropIn);

    const units = join(dir.path, dropIn!);
    await Deno.mkdir(join(units, "repoxy.service.d"), { recursive: true });
    await Deno.writeTextFile(join(units, "repoxy.service"), unit);
    await Deno.writeTextFile(join(units, "repoxy.service.d", dropIn!), text);
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", "--man=no", join(units, "repoxy.service")],
      stdout: "piped",
      stderr: "piped",
      // The drop-in directory is found on the unit path (a trailing ":" keeps the defaults).
      env: { SYSTEMD_LOG_COLOR: "0", SYSTEMD_UNIT_PATH: `${units}:` },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    // Unknown keys and bad values are only warnings (exit 0): any output fails.
    assertEquals(stderr, "", `${dropIn}: ${stderr}`);
    assertEquals(out.code, 0);
  }
});

Deno.test({
  name: "the nginx load balancer passes nginx -t and, run in front of two replicas, balances, " +
    "streams signed archive links across them, and skips a replica that went away",
  ignore: !NGINX,
}, async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  const token = "teams-token-0123456789";
  const logs = [memoryLogger(), memoryLogger()];
  const apps = await Promise.all(logs.map(async (log, i) =>
    createApp(
      await buildConfig({
        listen: "127.0.0.1:0",
        cacheDir: join(dir.path, `replica-${i}`),
        tls: { cert: tls.certPath, key: tls.keyPath },
        upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
        egressAllow: fake.egressAllow,
        // As docs/deploy/config/replica.json: the same tokens and link key on every replica.
        auth: { tokens: [{ name: "teams", token }], urlKey: "k".repeat(48) },
      }),
      { log },
    )
  ));
  const servers = apps.map((a) => serveApp(a));
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lbPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const conf = (await Deno.readTextFile(join(DEPLOY, "nginx", "repoxy.conf")))
    .replace("server 10.0.1.11:8443", `server 127.0.0.1:${servers[0]!.port}`)
    .replace("server 10.0.2.11:8443", `server 127.0.0.1:${servers[1]!.port}`)
    .replace("listen 443 ssl;", `listen 127.0.0.1:${lbPort} ssl;`)
    .replace("listen [::]:443 ssl;", "")
    // The test certificate names localhost and 127.0.0.1, not the public host.
    .replace("proxy_ssl_name mirror.corp.example;", "proxy_ssl_name localhost;")
    .replace("/etc/nginx/tls/mirror.corp.example.crt", tls.certPath)
    .replace("/etc/nginx/tls/mirror.corp.example.key", tls.keyPath)
    .replace("/etc/nginx/tls/corp-ca.pem", tls.caCertPath);
  const prefix = join(dir.path, "nginx");
  await Deno.mkdir(prefix);
  await Deno.writeTextFile(join(prefix, "repoxy.conf"), conf);
  await Deno.writeTextFile(
    join(prefix, "nginx.conf"),
    `pid ${prefix}/nginx.pid;\nerror_log stderr;\nevents {}\n` +
      `http {\n  access_log off;\n  include ${prefix}/repoxy.conf;\n}\n`,
  );
  const nginxArgs = ["-p", prefix, "-c", join(prefix, "nginx.conf")];
  const check = await new Deno.Command("nginx", { args: ["-t", ...nginxArgs], stderr: "piped" })
    .output();
  assert(check.success, new TextDecoder().decode(check.stderr));

  const nginx = new Deno.Command("nginx", {
    args: [...nginxArgs, "-g", "daemon off;"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
  const lb = `https://127.0.0.1:${lbPort}`;
  try {
    for (let i = 0;; i++) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: lbPort });
        c.close();
        break;
      } catch (e) {
        if (i > 100) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const get = (path: string, init: RequestInit = {}) =>
      fetch(new URL(path, lb), { ...init, client } as RequestInit);

    // The version document through the balancer; its archive link is signed by
    // whichever replica answered, and fetched (without a token) through the
    // balancer from the other ones.
    const doc = await get("/registry.terraform.io/example/alpha/1.1.0.json", {
      headers: { authorization: `Bearer ${token}` },
    });
    assertEquals(doc.status, 200);
    const link = new URL(
      (await doc.json()).archives.linux_amd64.url,
      `${lb}/registry.terraform.io/example/alpha/1.1.0.json`,
    );
    const want = fake.archive("alpha", "1.1.0", "linux_amd64");
    for (let i = 0; i < 4; i++) {
      const res = await get(link.pathname + link.search);
      assertEquals(res.status, 200);
      assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), want.sha256);
    }
    const archivesServed = logs.map((l) =>
      l.records.filter((r) => r.msg === "request" && r.path === link.pathname && r.status === 200)
        .length
    );
    assert(archivesServed.every((n) => n > 0), `both replicas served: ${archivesServed}`);

    // A replica goes away: the balancer moves on; clients see only 200s.
    await servers[0]!.shutdown(1000);
    for (let i = 0; i < 4; i++) {
      const res = await get("/-/readyz");
      await res.body?.cancel();
      assertEquals(res.status, 200);
    }
  } finally {
    client.close();
    nginx.kill("SIGQUIT");
    await nginx.status;
    await nginx.stderr.cancel();
    for (const s of servers) await s.shutdown(1000).catch(() => {});
    for (const a of apps) await a.close();
    await fake.stop();
  }
});
