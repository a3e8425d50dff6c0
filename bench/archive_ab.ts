/**
 * Warm archive throughput and server CPU per GB, two Repoxy checkouts and
 * nginx side by side (issue 12: read buffers reused). One cache holding one
 * archive, one process per checkout (TLS, default config: HTTP/1.1 offered),
 * nginx serving the same file over TLS HTTP/1.1 with sendfile; rounds
 * interleaved with a rotating order; curl with its default negotiation (or the
 * Go client with `--go`). Not part of the test suite.
 *
 *   deno run -P=bench bench/archive_ab.ts --repo BEFORE --repo AFTER [--rounds 8] [--size-mb 200] [--go]
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { join } from "../lib/deps/path.ts";
import { prepareMemoryFixture } from "./memory.ts";
import { startNginx } from "./nginx.ts";
import {
  cpuSeconds,
  curlGet,
  freePort,
  goClient,
  goGet,
  median,
  spawnLogged,
  waitForHttp,
} from "./tools.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    repo: { type: "string", multiple: true },
    rounds: { type: "string" },
    "size-mb": { type: "string" },
    go: { type: "boolean" },
  },
});
const repos = args.repo ?? ["."];
const rounds = Number(args.rounds ?? 8);
const size = Number(args["size-mb"] ?? 200) * 1_000_000;
// deno-lint-ignore no-console
const say = (s: string) => console.log(s);

await using fx = await prepareMemoryFixture(repos[0]!, size);
const go = args.go ? await goClient(say) : undefined;
if (go && "skip" in go) throw new Error(go.skip);
const servers: Array<{ name: string; base: string; pid: number; stop(): Promise<void> }> = [];
for (const [i, repo] of repos.entries()) {
  const port = freePort();
  const cfg = join(fx.work, `ab-${port}.json`);
  await Deno.writeTextFile(
    cfg,
    JSON.stringify({
      listen: `127.0.0.1:${port}`,
      tls: { cert: fx.tls.certPath, key: fx.tls.keyPath },
      cacheDir: fx.cacheDir,
      upstreams: { "registry.terraform.io": { url: fx.upstreamUrl } },
      egressAllow: ["127.0.0.1"],
    }),
  );
  const child = spawnLogged(
    Deno.execPath(),
    ["run", "-P=serve", "main.ts", "serve", "--config", cfg],
    join(fx.work, `ab-${port}.log`),
    { cwd: repo },
  );
  const base = `https://127.0.0.1:${port}`;
  await waitForHttp(`${base}/-/healthz`, 30_000, fx.tls.caCertPem);
  servers.push({ name: `repoxy#${i} ${repo}`, base, pid: child.pid, stop: () => child.stop() });
}
// nginx serves the stored archive under the same path.
const find = async (dir: string): Promise<string | undefined> => {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) {
      const f = await find(p);
      if (f) return f;
    } else if (e.name.endsWith(".zip") && (await Deno.stat(p)).size === fx.size) return p;
  }
};
const stored = (await find(fx.cacheDir))!;
const root = join(fx.work, "nginx-root");
const rel = fx.archivePath;
await Deno.mkdir(join(root, rel, ".."), { recursive: true });
await Deno.link(stored, join(root, rel));
await Deno.chmod(fx.work, 0o755);
const nport = freePort();
const nginx = await startNginx({
  dir: join(fx.work, "nginx"),
  port: nport,
  certPath: fx.tls.certPath,
  keyPath: fx.tls.keyPath,
  archiveRoot: root,
  jsonRoot: root,
});
await waitForHttp(`https://127.0.0.1:${nport}/${rel}`, 15_000, fx.tls.caCertPem).catch(() => {});
servers.push({
  name: "nginx",
  base: `https://127.0.0.1:${nport}`,
  pid: nginx.pid,
  stop: () => nginx.stop(),
});

const rates = new Map<string, number[]>();
const cpu = new Map<string, number[]>();
try {
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < servers.length; j++) {
      const s = servers[(r + j) % servers.length]!;
      const url = `${s.base}/${rel}`;
      const c0 = await cpuSeconds(s.pid);
      const t0 = performance.now();
      let bytes: number;
      if (go && "path" in go) {
        const g = await goGet(go.path, url, { cacert: fx.tls.caCertPath });
        bytes = g.bytes;
      } else {
        const g = await curlGet(url, { cacert: fx.tls.caCertPath });
        if (g.code !== 200 || g.httpVersion !== "1.1") {
          throw new Error(`${s.name}: ${g.code} ${g.httpVersion}`);
        }
        bytes = g.bytes;
      }
      const secs = (performance.now() - t0) / 1000;
      const c1 = await cpuSeconds(s.pid);
      if (bytes !== fx.size) throw new Error(`${s.name}: ${bytes} of ${fx.size} bytes`);
      (rates.get(s.name) ?? rates.set(s.name, []).get(s.name)!).push(bytes / secs / 1e6);
      (cpu.get(s.name) ?? cpu.set(s.name, []).get(s.name)!).push((c1 - c0) / (bytes / 1e9));
    }
  }
} finally {
  for (const s of servers) await s.stop();
}
const n = median(rates.get("nginx")!);
for (const s of servers) {
  const r = rates.get(s.name)!;
  const c = cpu.get(s.name)!;
  say(
    `${s.name}: ${median(r).toFixed(0)} MB/s (${Math.min(...r).toFixed(0)}–${
      Math.max(...r).toFixed(0)
    }), × nginx ${(median(r) / n).toFixed(2)}; CPU ${median(c).toFixed(2)} s/GB (${
      Math.min(...c).toFixed(2)
    }–${Math.max(...c).toFixed(2)})`,
  );
}
