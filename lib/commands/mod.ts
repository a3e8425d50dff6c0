/**
 * The maintenance subcommands, in the order `repoxy --help` lists them.
 * @module
 */
import type { Command } from "./cli.ts";
import { exportCommand } from "./export.ts";
import { importCommand } from "./import.ts";
import { lockCommand } from "./lock.ts";
import { pruneCommand } from "./prune.ts";
import { tlsCommand } from "./tls.ts";
import { verifyCommand } from "./verify.ts";
import { warmCommand } from "./warm.ts";

/** Subcommands by name (`serve` is main.ts's own). */
export const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [warmCommand, lockCommand, exportCommand, importCommand, verifyCommand, pruneCommand, tlsCommand]
    .map((
      c,
    ) => [c.name, c]),
);
