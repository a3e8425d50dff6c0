/**
 * Shared plumbing of the maintenance subcommands (`warm`, `export`, `import`,
 * `verify`, `prune`, `tls`): argument parsing with the common `--config` /
 * `--cache-dir` flags, config loading, a progress bar, and an app instance that
 * can run next to a live server on the same cache directory.
 *
 * All terminal output of the subcommands goes through {@link CliIo}, so tests
 * inject an object that collects lines instead of spawning a process.
 * @module
 */
import { type App, createApp } from "../app.ts";
import { CacheLayoutError } from "../cache/cache_dir.ts";
import { type Config, ConfigError, type ConfigOverrides, loadConfig } from "../config/config.ts";
import { findConfigFile } from "../config/lookup.ts";
import { parseArgs } from "../deps/cli.ts";
import { createLogger, type Logger } from "../base/log.ts";
import { type PlatformRef, platformString } from "../protocol/names.ts";
import { currentPlatform, parsePlatform } from "../protocol/provider_address.ts";

/** Exit code: everything worked. */
export const EXIT_OK = 0;
/** Exit code: the command ran but something failed (named in the output). */
export const EXIT_FAILED = 1;
/** Exit code: bad flags, arguments or config. */
export const EXIT_USAGE = 2;

/** Where a command's output goes. */
export interface CliIo {
  /** A line of results on stdout. */
  out(line: string): void;
  /** A line of errors, warnings or notes on stderr. */
  err(line: string): void;
  /** Set when stderr is a terminal: raw writes for the progress bar. */
  tty?: { write(s: string): void; columns(): number };
}

/** What main.ts hands to every subcommand. */
export interface CliContext {
  io: CliIo;
  /** Loads the config exactly as `repoxy serve` does (`--config`, `REPOXY_CONFIG`, ...). */
  loadConfig(path: string | undefined, overrides: ConfigOverrides): Promise<Config>;
}

/** One subcommand. */
export interface Command {
  name: string;
  /** One line for `repoxy --help`. */
  summary: string;
  run(args: string[], ctx: CliContext): Promise<number>;
}

const encoder = new TextEncoder();

/** The real terminal. */
export function stdio(): CliIo {
  const io: CliIo = {
    // deno-lint-ignore no-console
    out: (line) => console.log(line),
    // deno-lint-ignore no-console
    err: (line) => console.error(line),
  };
  if (Deno.stderr.isTerminal()) {
    io.tty = {
      write: (s) => {
        Deno.stderr.writeSync(encoder.encode(s));
      },
      columns: () => {
        try {
          // A pty without a size (script, some CI runners) reports 0 columns.
          return Deno.consoleSize().columns || 80;
        } catch {
          return 80;
        }
      },
    };
  }
  return io;
}

/**
 * The context of a real run: the terminal, and config loading with the same
 * lookup as `serve` (`--config`, `REPOXY_CONFIG`, `./repoxy.json`,
 * `/etc/repoxy/config.json`, next to the binary), so every command works on
 * the same cache.
 */
export function cliContext(): CliContext {
  return {
    io: stdio(),
    async loadConfig(path, overrides) {
      const found = await findConfigFile(path);
      return await loadConfig(found?.path, overrides);
    },
  };
}

/** Option definitions in `node:util` parseArgs form. */
export type OptionSpec = Record<
  string,
  { type: "string" | "boolean"; short?: string; multiple?: boolean }
>;

/** Parsed flags and positionals. */
export interface ParsedArgs {
  values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  positionals: string[];
}

/** Flags every subcommand accepts. */
export const COMMON_OPTIONS: OptionSpec = {
  config: { type: "string", short: "c" },
  "cache-dir": { type: "string", short: "d" },
  help: { type: "boolean", short: "h" },
};

/** Help text lines for {@link COMMON_OPTIONS}. */
export const COMMON_HELP = `  -c, --config FILE      config file (as for "repoxy serve")
  -d, --cache-dir DIR    cache directory (overrides the config)
  -h, --help             show this help`;

/**
 * Parses a subcommand's arguments. Prints the problem and returns undefined on
 * bad flags or more than `maxPositionals` arguments; prints `help` and returns
 * "help" for `--help`.
 */
export function parseCommandArgs(
  io: CliIo,
  command: string,
  args: string[],
  options: OptionSpec,
  help: string,
  maxPositionals = Infinity,
): ParsedArgs | "help" | undefined {
  let parsed: ParsedArgs;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: { ...COMMON_OPTIONS, ...options },
    }) as ParsedArgs;
  } catch (e) {
    io.err(`repoxy ${command}: ${(e as Error).message}\nRun "repoxy ${command} --help" for usage.`);
    return undefined;
  }
  if (parsed.values.help) {
    io.out(help);
    return "help";
  }
  const extra = parsed.positionals[maxPositionals];
  if (extra !== undefined) {
    io.err(`repoxy ${command}: unexpected argument "${extra}"`);
    return undefined;
  }
  return parsed;
}

/** A string flag's value. */
export function flagString(p: ParsedArgs, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string flag's values. */
export function flagStrings(p: ParsedArgs, name: string): string[] {
  const v = p.values[name];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return typeof v === "string" ? [v] : [];
}

/**
 * The platforms `--platform` names: repeatable, each may list several
 * (`-p linux_amd64,darwin_arm64`), duplicates dropped; this machine's when
 * none is given.
 * @throws {ArgumentError} for a name that is not `os_arch`
 */
export function platformsFlag(p: ParsedArgs): PlatformRef[] {
  const names = flagStrings(p, "platform").flatMap((v) => v.split(","))
    .map((v) => v.trim()).filter((v) => v !== "");
  const platforms = names.length > 0 ? names.map(parsePlatform) : [currentPlatform()];
  return [...new Map(platforms.map((pl) => [platformString(pl), pl])).values()];
}

/** A boolean flag. */
export function flagBool(p: ParsedArgs, name: string): boolean {
  return p.values[name] === true;
}

/** What a subcommand's body receives once its flags parsed and its config loaded. */
export interface Invocation {
  args: ParsedArgs;
  config: Config;
  io: CliIo;
}

/** A subcommand, described by what differs between subcommands. */
export interface CommandSpec {
  name: string;
  /** One line for `repoxy --help`. */
  summary: string;
  /** The whole `--help` text. */
  help: string;
  /** Flags beyond the common ones. */
  options?: OptionSpec;
  /** Bounds on the positional arguments, checked before the config is read. */
  positionals?: {
    min?: number;
    max?: number;
    /**
     * Said when the count is out of bounds (e.g. "expected exactly one DIR");
     * without it, too many arguments name the first extra one.
     */
    usage?: string;
  };
  /** The command itself; returns the exit code. */
  run(inv: Invocation): Promise<number>;
}

/**
 * Makes a subcommand with the prelude every subcommand shares: parse the
 * flags (`--help` prints the help, bad flags or argument counts exit 2 with
 * one line), load the config as `serve` does (a config error exits 2), then
 * run.
 */
export function defineCommand(spec: CommandSpec): Command {
  return {
    name: spec.name,
    summary: spec.summary,
    async run(argv: string[], ctx: CliContext): Promise<number> {
      const { io } = ctx;
      const { min = 0, max = Infinity, usage } = spec.positionals ?? {};
      const limit = usage === undefined ? max : Infinity;
      const args = parseCommandArgs(io, spec.name, argv, spec.options ?? {}, spec.help, limit);
      if (args === "help") return EXIT_OK;
      if (!args) return EXIT_USAGE;
      const n = args.positionals.length;
      if (n < min || n > max) return usageError(io, spec.name, usage ?? "missing arguments");
      const config = await loadCommandConfig(ctx, spec.name, args);
      if (!config) return EXIT_USAGE;
      try {
        return await spec.run({ args, config, io });
      } catch (e) {
        if (!(e instanceof CacheLayoutError)) throw e;
        io.err(`repoxy ${spec.name}: ${e.message}`);
        return EXIT_FAILED;
      }
    },
  };
}

/** Prints a usage problem and the pointer to `--help`; returns the usage exit code. */
export function usageError(io: CliIo, command: string, message: string): number {
  io.err(`repoxy ${command}: ${message}\nRun "repoxy ${command} --help" for usage.`);
  return EXIT_USAGE;
}

/**
 * Loads the config for a subcommand. Prints config errors (exit code 2 is the
 * caller's to return) and yields undefined.
 */
export async function loadCommandConfig(
  ctx: CliContext,
  command: string,
  p: ParsedArgs,
): Promise<Config | undefined> {
  try {
    return await ctx.loadConfig(flagString(p, "config"), { cacheDir: flagString(p, "cache-dir") });
  } catch (e) {
    if (e instanceof ConfigError) {
      ctx.io.err(`repoxy ${command}: config error: ${e.message}`);
      return undefined;
    }
    throw e;
  }
}

/**
 * A one-line progress bar on a terminal (redrawn in place, at most every
 * 100 ms); nothing at all otherwise, so logs and CI output get only the
 * summary line.
 */
export class Progress {
  #last = 0;
  #line = "";
  #shown = false;

  constructor(readonly io: CliIo, readonly now: () => number = Date.now) {}

  /** Redraws the bar: `[#####.....] done/total text`. */
  update(done: number, total: number, text: string, force = false): void {
    const tty = this.io.tty;
    if (!tty) return;
    const t = this.now();
    if (!force && t - this.#last < 100) return;
    this.#last = t;
    const width = 24;
    const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0;
    const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} ${text}`;
    this.#line = bar.slice(0, Math.max(20, tty.columns() - 1));
    tty.write(`\r\x1b[K${this.#line}`);
    this.#shown = true;
  }

  /** Prints a line on stderr without garbling the bar. */
  note(line: string): void {
    this.#clear();
    this.io.err(line);
    if (this.#shown && this.io.tty) this.io.tty.write(this.#line);
  }

  /** Removes the bar (before the summary). */
  done(): void {
    this.#clear();
    this.#shown = false;
  }

  #clear() {
    if (this.#shown && this.io.tty) this.io.tty.write("\r\x1b[K");
  }
}

/** A logger for subcommands: warnings and errors only, as plain lines on stderr. */
export function commandLogger(config: Config, progress: Progress): Logger {
  return createLogger(config.logFormat, (line) => progress.note(line), "warn");
}

/**
 * Creates an app for a subcommand. Like the server it gets a temp folder of
 * its own under `<cacheDir>/tmp/`, locked for its lifetime (cache_dir.ts), so
 * a server starting or stopping on the same cache leaves its files alone.
 */
export async function createCommandApp(
  config: Config,
  log: Logger,
): Promise<App & AsyncDisposable> {
  // The background check is the server's job; a command does its own work.
  // Client auth guards the network; a command is the operator on the cache
  // itself, and its requests to its own in-process app carry no token.
  const { auth: _clientAuth, ...local } = config;
  const app = await createApp({
    ...local,
    backgroundVerify: { ...config.backgroundVerify, bytesPerSecond: 0 },
  }, { log });
  return Object.assign(app, {
    async [Symbol.asyncDispose]() {
      await app.close();
    },
  });
}

/** Runs `fn` over `items` with at most `limit` in flight; results keep the input order. */
export async function mapPool<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
