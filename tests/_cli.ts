/**
 * Helpers for testing the subcommands: captured output for in-process runs,
 * and a spawner for `deno run main.ts <cmd>` with the permission set the
 * service runs with.
 * @module
 */
import type { CliContext, CliIo } from "../lib/commands/cli.ts";
import { loadConfig } from "../lib/config/config.ts";
import { join, resolve } from "../lib/deps/path.ts";
import type { FakeRegistry } from "./fake_registry.ts";

/** Repository root (where main.ts and deno.json live). */
export const ROOT: string = resolve(import.meta.dirname!, "..");

/** Output lines captured from an in-process command run. */
export interface CapturedIo extends CliIo {
  outLines: string[];
  errLines: string[];
  /** Raw progress-bar writes (only when created with a fake terminal). */
  ttyWrites: string[];
}

/** A CliIo that records everything; with `tty`, it also pretends to be a terminal. */
export function captureIo(tty = false): CapturedIo {
  const io: CapturedIo = {
    outLines: [],
    errLines: [],
    ttyWrites: [],
    out: (l) => io.outLines.push(l),
    err: (l) => io.errLines.push(l),
  };
  if (tty) io.tty = { write: (s) => io.ttyWrites.push(s), columns: () => 100 };
  return io;
}

/** A context whose config loading is the real one (no REPOXY_CONFIG fallback). */
export function testContext(io: CliIo): CliContext {
  return { io, loadConfig: (path, overrides) => loadConfig(path, overrides) };
}

/** Writes a config file for a test cache and returns its path. */
export async function writeConfig(dir: string, raw: Record<string, unknown>): Promise<string> {
  const path = join(dir, "repoxy.json");
  await Deno.writeTextFile(path, JSON.stringify(raw, null, 2));
  return path;
}

/**
 * Writes the config of a test cache whose one upstream, registry.terraform.io,
 * is `fake` (its download host allowed by `egressAllow`). The cache is
 * `<dir>/cache` unless `extra` names another `cacheDir`; `extra` adds or
 * overrides keys.
 */
export async function writeFakeConfig(
  dir: string,
  fake: Pick<FakeRegistry, "registryUrl" | "egressAllow">,
  extra: Record<string, unknown> = {},
): Promise<{ cacheDir: string; config: string }> {
  const raw = {
    cacheDir: join(dir, "cache"),
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
    ...extra,
  };
  return { cacheDir: raw.cacheDir as string, config: await writeConfig(dir, raw) };
}

/** Result of a spawned CLI run. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** It was killed (SIGKILL) after `timeoutMs`. */
  timedOut: boolean;
}

/**
 * Runs `deno run -P=serve main.ts ...args`: the same permission set the
 * service is started with, so a command that needs more fails here. With
 * `timeoutMs` it is killed after that long (`timedOut`), so a command that
 * hangs fails its test instead of hanging it.
 */
export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<CliRun> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      join(ROOT, "deno.json"),
      "-P=serve",
      "--quiet",
      join(ROOT, "main.ts"),
      ...args,
    ],
    cwd: opts.cwd ?? ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, opts.timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    timedOut,
  };
}
