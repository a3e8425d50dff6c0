/**
 * The maintenance subcommands, in the order `repoxy --help` lists them.
 * @module
 */
import type { Command } from "./cli.ts";
import { exportCommand } from "./cmd_export.ts";
import { importCommand } from "./cmd_import.ts";
import { pruneCommand } from "./cmd_prune.ts";
import { tlsCommand } from "./cmd_tls.ts";
import { verifyCommand } from "./cmd_verify.ts";
import { warmCommand } from "./cmd_warm.ts";

/** Subcommands by name (`serve` is main.ts's own). */
export const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [warmCommand, exportCommand, importCommand, verifyCommand, pruneCommand, tlsCommand].map((
    c,
  ) => [c.name, c]),
);
