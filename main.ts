/**
 * Repoxy command line: flags → config → subcommand.
 * @module
 */
import { createApp } from "./lib/app.ts";
import { stdio } from "./lib/cli.ts";
import { COMMANDS } from "./lib/commands.ts";
import { type Config, ConfigError, type ConfigOverrides, loadConfig } from "./lib/config.ts";
import { parseArgs } from "./lib/deps/cli.ts";
import { clientSnippet, startServer } from "./lib/server.ts";
import { VERSION } from "./lib/version.ts";

const HELP = `Repoxy ${VERSION} — a caching mirror for Terraform and OpenTofu providers

Usage:
  repoxy [serve] [options]     run the mirror (the default command)
  repoxy COMMAND [options]     maintenance (see "repoxy COMMAND --help"):
${[...COMMANDS.values()].map((c) => `    ${c.name.padEnd(24)} ${c.summary}`).join("\n")}
  repoxy --help | --version

Options:
  -c, --config FILE      JSON config file (default: none; every key has a default)
  -l, --listen HOST:PORT address to listen on (default 127.0.0.1:8080)
  -d, --cache-dir DIR    cache directory (default: the user's cache dir + /repoxy)
      --offline          never contact an upstream; serve only what is cached
      --log-format FMT   "text" (default) or "json" (one JSON object per line)
  -h, --help             show this help
  -V, --version          show the version

Exit codes: 0 ok, 1 runtime failure, 2 bad flags or config.
Docs: README.md (client setup, every config key).`;

function out(s: string) {
  // deno-lint-ignore no-console
  console.log(s);
}
function err(s: string) {
  // deno-lint-ignore no-console
  console.error(s);
}

/**
 * Loads the config for any command: `--config`, else `REPOXY_CONFIG`, else
 * defaults. One place, so `serve` and the maintenance commands always agree.
 */
function loadCliConfig(path: string | undefined, overrides: ConfigOverrides): Promise<Config> {
  return loadConfig(path ?? Deno.env.get("REPOXY_CONFIG"), overrides);
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const sub = argv[0] === undefined ? undefined : COMMANDS.get(argv[0]);
  if (sub) return await sub.run(argv.slice(1), { io: stdio(), loadConfig: loadCliConfig });
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        listen: { type: "string", short: "l" },
        "cache-dir": { type: "string", short: "d" },
        offline: { type: "boolean" },
        "log-format": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (e) {
    err(`repoxy: ${(e as Error).message}\nRun "repoxy --help" for usage.`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(HELP);
    return 0;
  }
  if (values.version) {
    out(`repoxy ${VERSION}`);
    return 0;
  }
  const command = positionals[0] ?? "serve";
  if (command !== "serve" || positionals.length > 1) {
    err(`repoxy: unknown command "${positionals.join(" ")}"\nRun "repoxy --help" for usage.`);
    return 2;
  }

  let config;
  try {
    config = await loadCliConfig(values.config, {
      listen: values.listen,
      cacheDir: values["cache-dir"],
      offline: values.offline,
      logFormat: values["log-format"],
    });
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`repoxy: config error: ${e.message}`);
      return 2;
    }
    throw e;
  }

  const app = await createApp(config);
  let server;
  try {
    server = startServer(app);
  } catch (e) {
    err(
      `repoxy: cannot listen on ${config.listen.hostname}:${config.listen.port}: ${
        (e as Error).message
      }`,
    );
    return 1;
  }
  app.log.info("repoxy started", {
    version: VERSION,
    url: server.url,
    cacheDir: config.cacheDir,
    upstreams: [...config.upstreams.keys()].join(","),
    offline: config.offline,
  });
  const base = config.publicUrl ?? server.url;
  err(
    `\nRepoxy ${VERSION} is serving at ${server.url}\nPaste this into ~/.terraformrc (Terraform) or ~/.tofurc (OpenTofu):\n\n` +
      clientSnippet(base, [...config.upstreams.keys()], config.tls !== undefined) + "\n",
  );

  const stop = () => {
    app.log.info("shutting down");
    server.shutdown(10_000).then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
