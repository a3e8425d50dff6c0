/**
 * Builds Repoxy as one executable with `deno compile`.
 *
 * ```sh
 * deno task compile                 # dist/repoxy for this machine
 * deno task compile:all             # dist/repoxy-<target>[.exe] for every release target
 * deno task compile --target aarch64-unknown-linux-gnu
 * deno task compile --out-dir /tmp/out   # instead of dist/
 * ```
 *
 * `deno compile` glues the program onto `denort`, a runtime it downloads
 * from dl.deno.land per Deno version and target. Behind a firewall that
 * download fails, so this script checks first and explains the two ways to
 * provide it offline (DENO_NOTES §0.1).
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, fromFileUrl, join, relative, resolve } from "../lib/deps/path.ts";

/** Release targets of `compile:all`. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/**
 * Environment variables the binary may read: the cache-dir defaults, the
 * config path, `REPOXY_*` for `env:` tokens in the config, and the proxy
 * variables (the egress policy must know which hosts a proxy carries; see
 * lib/upstream/egress.ts). Everything else in a service's environment stays
 * invisible to the program and its dependencies.
 */
export const BAKED_ENV = [
  "HOME",
  "XDG_CACHE_HOME",
  "LOCALAPPDATA",
  "REPOXY_*",
  // The standard AWS credential chain of the S3 storage (storage_s3/credentials.ts).
  "AWS_*",
  ...["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"].flatMap((v) => [v, v.toLowerCase()]),
  "REQUEST_METHOD",
];

/**
 * Permissions baked into the binary. Network, read and write cannot be
 * narrowed to paths or hosts here: the listen address, the cache dir, the
 * config and TLS files and the upstreams are all chosen at run time. The
 * systemd unit narrows the filesystem instead (ProtectSystem=strict plus its
 * State/Cache/Configuration directories). No sys permission; `run` only for
 * `git` (lib/modules/git_fetch.ts: git-sourced modules are fetched with the
 * git CLI, under a cleared environment and hardened config). `ffi` is
 * granted for two uses of libc only — setsockopt TCP_NODELAY on the listening
 * socket (lib/http/tcp_nodelay.ts), without which every HTTPS response stalls
 * ~40 ms on delayed ACKs, and reading /proc/self for the process_* metrics
 * (lib/ops/procfs.ts), which Deno's own file API refuses without --allow-all.
 */
export function permissionFlags(): string[] {
  return [
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-ffi",
    "--allow-run=git",
    `--allow-env=${BAKED_ENV.join(",")}`,
    "--no-prompt",
  ];
}

/** Output file for a target: `repoxy` for the host build, else named by target. */
export function outputPath(outDir: string, target: string, hostBuild: boolean): string {
  const exe = target.includes("windows") ? ".exe" : "";
  return join(outDir, hostBuild ? `repoxy${exe}` : `repoxy-${target}${exe}`);
}

/** The `deno compile` arguments for one target. */
export function compileArgs(target: string, output: string, entry: string): string[] {
  return [
    "compile",
    // Exactly the locked dependencies, nothing fetched from the web at build time.
    "--frozen",
    "--no-remote",
    ...permissionFlags(),
    "--target",
    target,
    "--output",
    output,
    entry,
  ];
}

/** Where `deno compile` looks for the runtime archive before downloading it. */
export function denortZipPath(denoDir: string, denoVersion: string, target: string): string {
  return join(denoDir, "dl", "release", `v${denoVersion}`, `denort-${target}.zip`);
}

/** Where the runtime archive is published. */
export function denortUrl(denoVersion: string, target: string): string {
  return `https://dl.deno.land/release/v${denoVersion}/denort-${target}.zip`;
}

/** Outcome of {@link checkDenort}. */
export type DenortCheck =
  | { ok: true; via: "DENORT_BIN" | "zip" | "download"; detail: string }
  | { ok: false; problem: string };

/** What {@link checkDenort} needs from the system. */
export interface DenortEnv {
  denoDir: string;
  denoVersion: string;
  /** Value of DENORT_BIN, if set. */
  denortBin: string | undefined;
  isFile(path: string): Promise<boolean>;
  /** Whether the URL answers (a short HEAD request). */
  reachable(url: string): Promise<boolean>;
}

/**
 * Decides how `deno compile` will get its runtime for `targets`, before
 * running it: DENORT_BIN, a seeded zip in DENO_DIR, or a download that must
 * be reachable.
 */
export async function checkDenort(targets: string[], env: DenortEnv): Promise<DenortCheck[]> {
  if (env.denortBin) {
    if (targets.length > 1) {
      const problem =
        `DENORT_BIN is set, but ${targets.length} targets were asked for; one runtime binary serves one target`;
      return targets.map(() => ({ ok: false, problem }));
    }
    if (!(await env.isFile(env.denortBin))) {
      return [{
        ok: false,
        problem: `DENORT_BIN is set to "${env.denortBin}", which is not a file`,
      }];
    }
    return [{ ok: true, via: "DENORT_BIN", detail: env.denortBin }];
  }
  // In parallel: behind a firewall that drops packets each probe waits for its timeout.
  return await Promise.all(targets.map(async (t): Promise<DenortCheck> => {
    const zip = denortZipPath(env.denoDir, env.denoVersion, t);
    if (await env.isFile(zip)) return { ok: true, via: "zip", detail: zip };
    const url = denortUrl(env.denoVersion, t);
    if (await env.reachable(url)) return { ok: true, via: "download", detail: url };
    return { ok: false, problem: `${zip} is missing and ${url} cannot be reached` };
  }));
}

/** The explanation printed when the runtime is missing. */
export function denortHelp(targets: string[], denoDir: string, denoVersion: string): string {
  const lines = [
    `deno compile needs "denort", the Deno ${denoVersion} runtime that the executable is built on.`,
    `It downloads it from dl.deno.land, which this machine cannot reach. Provide it in one of two ways:`,
    "",
    `  1. Seed the download cache (works for every target, including cross-compiling).`,
    `     On a machine with internet access fetch the exact-version zip(s):`,
  ];
  for (const t of targets) lines.push(`       ${denortUrl(denoVersion, t)}`);
  lines.push(
    `     (also published as release assets: https://github.com/denoland/deno/releases/tag/v${denoVersion})`,
    `     and copy them, unchanged, to:`,
  );
  for (const t of targets) lines.push(`       ${denortZipPath(denoDir, denoVersion, t)}`);
  lines.push(
    `     (${denoDir} is DENO_DIR; \`deno info\` prints it.)`,
    "",
    `  2. Or, for one target, set DENORT_BIN to an unzipped denort of the same version (${denoVersion}):`,
    `       DENORT_BIN=/path/to/denort deno task compile`,
    `     It must be denort, not deno: the full deno binary produces an executable that`,
    `     behaves as plain deno instead of Repoxy.`,
    "",
    `Without either, ship the bundle instead: deno bundle --platform deno -o repoxy.js main.ts,`,
    `then run it with deno ${denoVersion} and the permissions from scripts/compile.ts.`,
  );
  return lines.join("\n");
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function reachable(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(5000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

async function denoDirOf(): Promise<string> {
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return fromEnv;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { denoDir: string }).denoDir;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) hash.update(chunk);
  return hash.digest("hex");
}

function say(s: string) {
  // deno-lint-ignore no-console
  console.error(s);
}

/** Runs the build; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const root = dirname(fromFileUrl(new URL("../deno.json", import.meta.url)));
  const host = Deno.build.target;
  let targets: string[] = [];
  let outDir = join(root, "dist");
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--all") targets.push(...TARGETS);
    else if (a === "--out-dir" && args[i + 1]) outDir = resolve(args[++i]!);
    else if (a === "--target" && args[i + 1]) targets.push(args[++i]!);
    else if (a.startsWith("--target=")) targets.push(a.slice("--target=".length));
    else {
      say(`compile: unknown argument "${a}" (use --all, --target TARGET, --out-dir DIR)`);
      return 2;
    }
  }
  const hostOnly = targets.length === 0;
  if (hostOnly) targets = [host];
  targets = [...new Set(targets)];

  const denoVersion = Deno.version.deno;
  const denoDir = await denoDirOf();
  const checks = await checkDenort(targets, {
    denoDir,
    denoVersion,
    denortBin: Deno.env.get("DENORT_BIN") || undefined,
    isFile,
    reachable,
  });
  const missing = targets.filter((_, i) => !checks[i]!.ok);
  if (missing.length > 0) {
    for (const c of checks) if (!c.ok) say(`compile: ${c.problem}`);
    say("");
    say(denortHelp(missing, denoDir, denoVersion));
    return 1;
  }

  const entry = join(root, "main.ts");
  const built: string[] = [];
  await Deno.mkdir(outDir, { recursive: true });
  for (const [i, target] of targets.entries()) {
    const c = checks[i]!;
    const output = outputPath(outDir, target, hostOnly);
    say(`compile: repoxy ${denoJson.version} for ${target} (runtime: ${c.ok ? c.via : "?"})`);
    const res = await new Deno.Command(Deno.execPath(), {
      args: compileArgs(target, output, entry),
      cwd: root,
      stdout: "inherit",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(res.stderr);
    Deno.stderr.writeSync(res.stderr);
    if (!res.success) {
      // The check can pass and the download still fail (a proxy, a flaky network).
      if (/denort|dl\.deno\.land|base binary/i.test(stderr)) {
        say("");
        say(denortHelp([target], denoDir, denoVersion));
      }
      say(`compile: building for ${target} failed`);
      return 1;
    }
    built.push(output);
  }

  if (targets.includes(host)) {
    const out = outputPath(outDir, host, hostOnly);
    const v = await new Deno.Command(out, { args: ["--version"], stdout: "piped" }).output();
    const got = new TextDecoder().decode(v.stdout).trim();
    if (got !== `repoxy ${denoJson.version}`) {
      say(`compile: ${out} --version printed "${got}", expected "repoxy ${denoJson.version}"`);
      if (got.startsWith("deno ")) {
        say("compile: the runtime was the full deno binary, not denort (see DENORT_BIN below)");
        say("");
        say(denortHelp([host], denoDir, denoVersion));
      }
      await Deno.remove(out).catch(() => {});
      return 1;
    }
  }
  const sums: string[] = [];
  for (const f of built) sums.push(`${await sha256File(f)}  ${relative(outDir, f)}`);
  if (!hostOnly) await Deno.writeTextFile(join(outDir, "SHA256SUMS"), sums.join("\n") + "\n");
  for (const s of sums) say(`compile: ${s}`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
