/**
 * The maintenance subcommands, in the order `repoxy --help` lists them. Each
 * command's module is imported only when that command runs: `repoxy serve`
 * (and `--help`) never load them. The specifiers are static strings, so
 * `deno compile` still embeds every command.
 * @module
 */
import type { CliContext, Command } from "./cli.ts";

/**
 * A command known by name and summary whose module `load` imports on the
 * first run. The summary must equal the loaded command's (tests/lazy_load_test.ts).
 */
function lazyCommand(name: string, summary: string, load: () => Promise<Command>): Command {
  return {
    name,
    summary,
    run: async (args: string[], ctx: CliContext) => await (await load()).run(args, ctx),
  };
}

/** Subcommands by name (`serve` is main.ts's own). */
export const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [
    lazyCommand(
      "warm",
      "pre-fetch providers named by lock files or addresses",
      async () => (await import("./warm.ts")).warmCommand,
    ),
    lazyCommand(
      "lock",
      "complete a lock file for many platforms without client downloads",
      async () => (await import("./lock.ts")).lockCommand,
    ),
    lazyCommand(
      "export",
      "write cached providers as a filesystem/network mirror directory",
      async () => (await import("./export.ts")).exportCommand,
    ),
    lazyCommand(
      "import",
      "ingest a mirror directory (repoxy export, terraform providers mirror)",
      async () => (await import("./import.ts")).importCommand,
    ),
    lazyCommand(
      "verify",
      "re-hash cached archives and quarantine mismatches",
      async () => (await import("./verify.ts")).verifyCommand,
    ),
    lazyCommand(
      "prune",
      "evict least-recently-used archives down to a size",
      async () => (await import("./prune.ts")).pruneCommand,
    ),
    lazyCommand(
      "config",
      "config check: validate and print the effective configuration",
      async () => (await import("./config.ts")).configCommand,
    ),
    lazyCommand(
      "tls",
      "tls init: make a local CA and localhost certificate for HTTPS",
      async () => (await import("./tls.ts")).tlsCommand,
    ),
  ].map((c) => [c.name, c]),
);
