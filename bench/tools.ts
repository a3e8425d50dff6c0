/**
 * Process, tool and measurement helpers for the benchmark: finding or
 * installing nginx/wrk/curl, free ports, starting servers whose logs go to
 * files, reading RSS from /proc, and running curl and wrk.
 * @module
 */

/** A started child process with its log file. */
export interface Child {
  pid: number;
  process: Deno.ChildProcess;
  /** Sends SIGTERM, waits up to `ms`, then SIGKILL. Idempotent. */
  stop(ms?: number): Promise<void>;
}

/** Runs a command to completion and returns its output as text. */
export async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; clearEnv?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const signal = AbortSignal.timeout(opts.timeoutMs ?? 120_000);
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal,
    clearEnv: opts.clearEnv ?? false,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Whether a program is on PATH. */
export async function which(name: string): Promise<string | undefined> {
  try {
    const r = await run("sh", ["-c", `command -v "$0"`, name]);
    const p = r.stdout.trim();
    return r.code === 0 && p ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes sure the Debian packages behind `programs` are installed: missing ones
 * are installed with apt-get when running as root on a system that has it.
 * Returns the programs that are still missing.
 */
export async function ensurePrograms(
  programs: Record<string, string>,
  log: (s: string) => void,
): Promise<string[]> {
  const missing = [];
  for (const p of Object.keys(programs)) if (!await which(p)) missing.push(p);
  if (missing.length === 0) return [];
  const canInstall = Deno.uid() === 0 && await which("apt-get");
  if (!canInstall) return missing;
  const pkgs = [...new Set(missing.map((p) => programs[p]!))];
  log(`installing ${pkgs.join(", ")} with apt-get ...`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run("apt-get", ["update", "-qq"], { env, timeoutMs: 300_000 });
  const r = await run("apt-get", ["install", "-y", "-qq", ...pkgs], { env, timeoutMs: 300_000 });
  if (r.code !== 0) log(`apt-get install failed: ${r.stderr.trim().split("\n").pop()}`);
  const still = [];
  for (const p of missing) if (!await which(p)) still.push(p);
  return still;
}

/** A TCP port that was free a moment ago (loopback only). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts `cmd args` with stdout and stderr appended to `logPath`. A shell
 * `exec` does the redirect, so the pid is the program's own (for /proc) and no
 * pipe has to be drained by this process while it measures.
 */
export function spawnLogged(
  cmd: string,
  args: string[],
  logPath: string,
  opts: { env?: Record<string, string>; cwd?: string; stdin?: "piped" | "null" } = {},
): Child {
  const process = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" >>"$BENCH_LOG" 2>&1', "sh", cmd, ...args],
    env: { ...opts.env, BENCH_LOG: logPath },
    stdin: opts.stdin ?? "null",
    stdout: "null",
    stderr: "null",
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  }).spawn();
  let stopped: Promise<void> | undefined;
  return {
    pid: process.pid,
    process,
    stop(ms = 5000) {
      stopped ??= (async () => {
        try {
          process.kill("SIGTERM");
        } catch { /* already gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const killed = new Promise<void>((r) => {
          timer = setTimeout(() => {
            try {
              process.kill("SIGKILL");
            } catch { /* gone */ }
            r();
          }, ms);
        });
        await Promise.race([process.status.then(() => {}), killed]);
        clearTimeout(timer);
        await process.status;
      })();
      return stopped;
    },
  };
}

/** Polls `url` until it answers (any status) or `ms` pass. */
export async function waitForHttp(url: string, ms = 15_000, caCert?: string): Promise<void> {
  const client = caCert ? Deno.createHttpClient({ caCerts: [caCert] }) : undefined;
  const deadline = Date.now() + ms;
  try {
    while (Date.now() < deadline) {
      try {
        const res = await fetch(url, {
          ...(client ? { client } : {}),
          signal: AbortSignal.timeout(1000),
        });
        await res.body?.cancel();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`${url} did not answer within ${ms} ms`);
  } finally {
    client?.close();
  }
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

/**
 * Measures the peak RSS of `pid` while `work` runs: resets the kernel's
 * high-water mark first (clear_refs 5) and also samples VmRSS, so the figure
 * holds even where the reset is not allowed.
 */
export async function peakRssDuring(pid: number, work: () => Promise<void>): Promise<number> {
  let reset = false;
  try {
    await Deno.writeTextFile(`/proc/${pid}/clear_refs`, "5");
    reset = true;
  } catch { /* not permitted: sampling alone */ }
  let sampled = 0;
  let running = true;
  const sampler = (async () => {
    while (running) {
      try {
        sampled = Math.max(sampled, (await memoryOf(pid)).rss);
      } catch { /* exited */ }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await work();
  } finally {
    running = false;
    await sampler;
  }
  const m = await memoryOf(pid);
  return Math.max(sampled, m.rss, reset ? m.peak : 0);
}

/** What one curl transfer measured. */
export interface CurlResult {
  code: number;
  httpVersion: string;
  bytes: number;
  /** Seconds from start to the first body byte. */
  ttfb: number;
  /** Seconds for the whole transfer. */
  total: number;
}

/** Downloads `url` to /dev/null with curl and reports its timings. */
export async function curlGet(
  url: string,
  opts: { http?: "1.1" | "2"; cacert?: string; insecure?: boolean; timeoutS?: number } = {},
): Promise<CurlResult> {
  const args = ["-s", "-o", "/dev/null", "--max-time", String(opts.timeoutS ?? 120)];
  if (opts.http === "2") args.push("--http2");
  else args.push("--http1.1");
  if (opts.cacert) args.push("--cacert", opts.cacert);
  else if (opts.insecure) args.push("-k");
  args.push(
    "-w",
    "%{http_code} %{http_version} %{size_download} %{time_starttransfer} %{time_total}",
    url,
  );
  const r = await run("curl", args, { timeoutMs: (opts.timeoutS ?? 120) * 1000 + 5000 });
  const [code, ver, size, ttfb, total] = r.stdout.trim().split(" ");
  return {
    code: Number(code),
    httpVersion: ver ?? "",
    bytes: Number(size),
    ttfb: Number(ttfb),
    total: Number(total),
  };
}

/** Runs `n` curl downloads at once; returns aggregate bytes/s over the wall time. */
export async function curlParallel(
  url: string,
  n: number,
  opts: Parameters<typeof curlGet>[1] = {},
): Promise<{ rate: number; results: CurlResult[] }> {
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: n }, () => curlGet(url, opts)));
  const secs = (performance.now() - t0) / 1000;
  const bytes = results.reduce((s, r) => s + r.bytes, 0);
  return { rate: bytes / secs, results };
}

/** Runs wrk and returns requests per second (throws if any request failed). */
export async function wrkRate(
  url: string,
  opts: { connections: number; threads: number; seconds: number },
): Promise<{ rps: number; p50: string; p99: string }> {
  const r = await run("wrk", [
    `-t${opts.threads}`,
    `-c${opts.connections}`,
    `-d${opts.seconds}s`,
    "--latency",
    url,
  ], { timeoutMs: opts.seconds * 1000 + 30_000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? NaN);
  if (!Number.isFinite(rps)) throw new Error(`wrk failed: ${r.stdout}\n${r.stderr}`);
  const bad = /Non-2xx or 3xx responses:\s+(\d+)/.exec(r.stdout);
  if (bad) throw new Error(`wrk saw ${bad[1]} error responses from ${url}`);
  const errs = /Socket errors:.*/.exec(r.stdout);
  if (errs && /(connect|read|write) [1-9]/.test(errs[0])) {
    throw new Error(`wrk saw socket errors on ${url}: ${errs[0]}`);
  }
  return {
    rps,
    // Anchored on the "Latency Distribution" lines: "89.99%" in the thread
    // stats above must not match.
    p50: /^\s+50%\s+(\S+)/m.exec(r.stdout)?.[1] ?? "?",
    p99: /^\s+99%\s+(\S+)/m.exec(r.stdout)?.[1] ?? "?",
  };
}

/** The median of some numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
