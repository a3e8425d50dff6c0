/**
 * Repoxy's entry point: a maintenance subcommand by name, else `serve`.
 * @module
 */
import { cliContext } from "./lib/commands/cli.ts";
import { COMMANDS } from "./lib/commands/mod.ts";
import { serve } from "./lib/commands/serve.ts";

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const sub = argv[0] === undefined ? undefined : COMMANDS.get(argv[0]);
  return sub ? await sub.run(argv.slice(1), cliContext()) : await serve(argv);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
