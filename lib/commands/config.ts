/**
 * `repoxy config check`: loads the config exactly as `repoxy serve` would
 * (same file lookup, `REPOXY_*` variables, secrets and PEM files read) and
 * prints the effective configuration with secrets redacted, or every problem
 * by key path. For CI and container entrypoints: exit 0 valid, 2 not.
 * @module
 */
import {
  type CliContext,
  type Command,
  COMMON_HELP,
  EXIT_OK,
  EXIT_USAGE,
  flagString,
  parseCommandArgs,
  usageError,
} from "./cli.ts";
import { ConfigError } from "../config/config.ts";
import { effectiveConfig } from "../config/effective.ts";
import { ENV_OVERRIDES, overridesInEffect } from "../config/env_overrides.ts";
import { findConfigFile } from "../config/lookup.ts";

const HELP = `Usage: repoxy config check [options]

Validates the configuration the way "repoxy serve" reads it (the same config
file lookup, REPOXY_* environment overrides, env:/file: secrets and TLS files)
and prints the effective configuration as JSON: defaults filled, overrides
applied, secrets shown as "<redacted>". On errors, prints every problem with
its key path (or the variable or flag that set it) and exits 2.

Options:
${COMMON_HELP}

Environment overrides (a flag wins over a variable, a variable over the
file; an empty variable counts as unset):
${ENV_OVERRIDES.map((o) => `  ${o.name.padEnd(30)} ${o.key}`).join("\n")}

Exit codes: 0 valid, 2 bad arguments or an invalid configuration.`;

/** `repoxy config`. */
export const configCommand: Command = {
  name: "config",
  summary: "config check: validate and print the effective configuration",
  async run(argv: string[], ctx: CliContext): Promise<number> {
    const { io } = ctx;
    const args = parseCommandArgs(io, "config", argv, {}, HELP, 1);
    if (args === "help") return EXIT_OK;
    if (!args) return EXIT_USAGE;
    if (args.positionals[0] !== "check") {
      return usageError(io, "config", 'expected "repoxy config check"');
    }
    const flag = flagString(args, "config");
    let config;
    try {
      config = await ctx.loadConfig(flag, { cacheDir: flagString(args, "cache-dir") });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      for (const p of e.problems) io.err(`repoxy config check: ${p}`);
      io.err(`repoxy config check: ${e.problems.length} problem(s); the configuration is invalid`);
      return EXIT_USAGE;
    }
    io.out(JSON.stringify(effectiveConfig(config), null, 2));
    const found = await findConfigFile(flag);
    const env = overridesInEffect((n) => Deno.env.get(n));
    io.err(
      `repoxy config check: valid (${found ? found.path : "no config file: defaults"}${
        env.length > 0 ? `; from the environment: ${env.join(", ")}` : ""
      })`,
    );
    return EXIT_OK;
  },
};
