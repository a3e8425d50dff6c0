/**
 * Peak RSS of a real Repoxy process under two hostile-upstream attacks from
 * issue 10 (not part of the test suite; figures go in reports):
 *
 * - `providers`: `index.json` for many distinct providers whose upstream
 *   version lists are large (row 2);
 * - `platforms`: one `{version}.json` whose version lists 700 platforms, each
 *   with a large download document and no SHA256SUMS to take hashes from (row 3).
 *
 *   deno run -A bench/hostile_rss.ts --repo DIR --attack providers [--count 2750] [--doc-kb 1300]
 *   deno run -A bench/hostile_rss.ts --repo DIR --attack platforms [--count 700] [--doc-kb 5000] [--requests 3]
 *
 * `--repo` is the checkout whose `main.ts` is run (so two versions can be
 * compared). The hostile upstream runs in this process on 127.0.0.1; the
 * peak is VmHWM from /proc/PID/status of the Repoxy process. Prints one JSON line.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { join, resolve } from "../lib/deps/path.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    repo: { type: "string" },
    attack: { type: "string" },
    count: { type: "string" },
    "doc-kb": { type: "string" },
    concurrency: { type: "string" },
    requests: { type: "string" },
  },
});
const repo = resolve(args.repo ?? ".");
const attack = args.attack ?? "providers";
const count = Number(args.count ?? (attack === "providers" ? 2750 : 700));
const docKb = Number(args["doc-kb"] ?? (attack === "providers" ? 1300 : 5000));
const concurrency = Number(args.concurrency ?? 8);
/** Requests the `platforms` attack sends, one after another. */
const requests = Number(args.requests ?? 3);

const enc = new TextEncoder();

/** A version list of about `kb` KB, `{ID}` standing for the provider. */
function versionsTemplate(kb: number): string {
  const platforms = ["linux", "darwin", "windows", "freebsd"].flatMap((os) =>
    ["amd64", "arm64", "386", "arm"].map((arch) => ({ os, arch }))
  );
  const one = JSON.stringify({ version: "1.0.0", protocols: ["5.0"], platforms }).length + 1;
  const n = Math.max(1, Math.round(kb * 1024 / one));
  return JSON.stringify({
    id: "{ID}",
    versions: Array.from({ length: n }, (_, i) => ({
      version: `${Math.floor(i / 1000)}.${Math.floor(i / 10) % 100}.${i % 10}`,
      protocols: ["5.0"],
      platforms,
    })),
  });
}

function startUpstream(): { url: string; stop: () => Promise<void>; requests: () => number } {
  let requests = 0;
  const ac = new AbortController();
  const template = attack === "providers" ? versionsTemplate(docKb) : "";
  const names = Array.from({ length: count }, (_, i) => ({ os: `os${i}`, arch: "amd64" }));
  const wide = JSON.stringify({
    id: "evil/wide",
    versions: [{ version: "1.0.0", protocols: ["5.0"], platforms: names }],
  });
  const padding = "x".repeat(docKb * 1024);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      requests++;
      const path = new URL(req.url).pathname;
      if (path === "/.well-known/terraform.json") {
        return Response.json({ "providers.v1": "/v1/providers/" });
      }
      let m = /^\/v1\/providers\/evil\/(p\d+)\/versions$/.exec(path);
      if (m && template) return new Response(enc.encode(template.replace("{ID}", `evil/${m[1]}`)));
      if (path === "/v1/providers/evil/wide/versions") return new Response(wide);
      m = /^\/v1\/providers\/evil\/wide\/1\.0\.0\/download\/([^/]+)\/amd64$/.exec(path);
      if (m) {
        return new Response(JSON.stringify({
          os: m[1],
          arch: "amd64",
          filename: `terraform-provider-wide_1.0.0_${m[1]}_amd64.zip`,
          download_url: `https://releases.invalid/${m[1]}.zip`,
          shasum: "0".repeat(64),
          padding,
        }));
      }
      return Response.json({ errors: ["Not Found"] }, { status: 404 });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    stop: async () => {
      ac.abort();
      await server.finished;
    },
    requests: () => requests,
  };
}

async function vmHwmKb(pid: number): Promise<number | undefined> {
  try {
    const s = await Deno.readTextFile(`/proc/${pid}/status`);
    return Number(/VmHWM:\s+(\d+)/.exec(s)?.[1]);
  } catch {
    return undefined;
  }
}

const up = startUpstream();
const work = await Deno.makeTempDir({ prefix: "repoxy-hostile-" });
const cfg = join(work, "cfg.json");
await Deno.writeTextFile(
  cfg,
  JSON.stringify({
    cacheDir: join(work, "cache"),
    upstreams: { "registry.terraform.io": { url: up.url } },
  }),
);
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", join(repo, "main.ts"), "serve", "--config", cfg, "--listen", "127.0.0.1:0"],
  stdin: "null",
  stdout: "null",
  stderr: "piped",
  cwd: work,
}).spawn();
let exited: Deno.CommandStatus | undefined;
const status = child.status.then((s) => exited = s);
// The base URL is in the "repoxy started" line on stderr.
let base = "";
const lines = child.stderr.pipeThrough(new TextDecoderStream());
const stderrTail: string[] = [];
const pump = (async () => {
  let rest = "";
  for await (const chunk of lines) {
    rest += chunk;
    let i: number;
    while ((i = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, i);
      rest = rest.slice(i + 1);
      if (!base) {
        const m = /repoxy started.*?(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
        if (m) base = m[1]!;
      }
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
    }
  }
})();
for (let i = 0; i < 300 && !base && !exited; i++) await new Promise((r) => setTimeout(r, 100));
if (!base) throw new Error(`repoxy did not start:\n${stderrTail.join("\n")}`);

let peakKb = 0;
const sampler = setInterval(async () => {
  const kb = await vmHwmKb(child.pid);
  if (kb) peakKb = Math.max(peakKb, kb);
}, 100);

const statuses = new Map<string, number>();
const note = (s: string) => statuses.set(s, (statuses.get(s) ?? 0) + 1);
async function get(path: string): Promise<void> {
  try {
    const res = await fetch(base + path, { signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel();
    note(String(res.status));
  } catch (e) {
    note((e as Error).name);
  }
}

const started = performance.now();
if (attack === "providers") {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count && !exited) await get(`registry.terraform.io/evil/p${next++}/index.json`);
  }));
} else {
  // A client retrying, as Terraform's does; then what the server keeps doing on its own.
  for (let i = 0; i < requests && !exited; i++) {
    await get("registry.terraform.io/evil/wide/1.0.0.json");
  }
  for (let i = 0; i < 200 && !exited; i++) await new Promise((r) => setTimeout(r, 100));
}
const elapsedS = Math.round((performance.now() - started) / 100) / 10;
const finalKb = await vmHwmKb(child.pid);
if (finalKb) peakKb = Math.max(peakKb, finalKb);
clearInterval(sampler);
if (!exited) child.kill("SIGTERM");
await status;
await pump.catch(() => {});
await up.stop();
await Deno.remove(work, { recursive: true }).catch(() => {});
// deno-lint-ignore no-console
console.log(JSON.stringify({
  repo,
  attack,
  count,
  docKb,
  peakRssMB: Math.round(peakKb / 1024),
  crashed: exited !== undefined && exited.code !== 0 && exited.signal !== "SIGTERM",
  exitCode: exited?.code,
  statuses: Object.fromEntries(statuses),
  upstreamRequests: up.requests(),
  elapsedS,
  ...(exited ? { lastStderr: stderrTail.slice(-3) } : {}),
}));
