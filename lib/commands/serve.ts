/**
 * `repoxy [serve]`, the default command: flags → config → app → server,
 * then signals; and the top-level `--help`.
 * @module
 */
import { type App, createApp, serveApp } from "../app.ts";
import { CacheLayoutError } from "../cache/cache_dir.ts";
import { createLogger } from "../base/log.ts";
import { setTraceSink } from "../base/trace.ts";
import { VERSION } from "../base/version.ts";
import { type Config, ConfigError, loadConfig } from "../config/config.ts";
import { type ConfigLocation, findConfigFile } from "../config/lookup.ts";
import { overridesInEffect, readEnv } from "../config/env_overrides.ts";
import { parseArgs } from "../deps/cli.ts";
import { type RunningServer, SHUTDOWN_DRAIN_MS } from "../http/server.ts";
import { isLoopbackHost } from "../upstream/egress.ts";
import { clientSnippet } from "../ops/client_snippet.ts";
import { parsePropagateTo, startTracing } from "../ops/tracing.ts";
import { COMMANDS } from "./mod.ts";

const HELP = `Repoxy ${VERSION} — a caching mirror for Terraform and OpenTofu providers

Usage:
  repoxy [serve] [options]     run the mirror (the default command)
  repoxy COMMAND [options]     maintenance (see "repoxy COMMAND --help"):
${[...COMMANDS.values()].map((c) => `    ${c.name.padEnd(24)} ${c.summary}`).join("\n")}
  repoxy --help | --version

Options:
  -c, --config FILE      JSON config file; without it the first of $REPOXY_CONFIG,
                         ./repoxy.json, /etc/repoxy/config.json and (compiled
                         binary) config.json next to the executable; else defaults
  -l, --listen HOST:PORT address to listen on (default 127.0.0.1:8080; port 0 picks one)
  -d, --cache-dir DIR    cache directory (default: the user's cache dir + /repoxy)
      --offline          never contact an upstream; serve only what is cached
      --log-format FMT   "text" (default) or "json" (one JSON object per line)
  -h, --help             show this help
  -V, --version          show the version

Environment: REPOXY_LISTEN, REPOXY_CACHE_DIR, ... override config keys; a flag
wins over them ("repoxy config --help" lists them; "repoxy config check" shows
the result). For "serve" only:
  REPOXY_TRACE=1                 log a "trace" line per timed step of a miss
  OTEL_DENO=true                 export OpenTelemetry traces (OTEL_EXPORTER_*)
  REPOXY_OTEL_PROPAGATE_TO=H,... upstream hostnames that may receive the
                                 client's trace context (README: Tracing)
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
 * `repoxy [serve]`: runs the mirror until SIGTERM or SIGINT; returns the
 * process exit code.
 */
export async function serve(argv: string[]): Promise<number> {
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

  // Until the config is read, only the flag says whether lines must be JSON.
  const fail = (msg: string, fields: Record<string, string> = {}) => {
    if (values["log-format"] === "json") createLogger("json").error(msg, fields);
    else err(`repoxy: ${msg}${Object.values(fields).map((v) => `: ${v}`).join("")}`);
  };
  let config;
  let configFile;
  try {
    configFile = await findConfigFile(values.config);
    config = await loadConfig(configFile?.path, {
      listen: values.listen,
      cacheDir: values["cache-dir"],
      offline: values.offline,
      logFormat: values["log-format"],
    });
  } catch (e) {
    if (e instanceof ConfigError) {
      fail("config error", { error: e.message });
      return 2;
    }
    throw e;
  }

  // OpenTelemetry (OTEL_DENO=true): before the app, which captures the hooks.
  const propagateTo = parsePropagateTo(readEnv("REPOXY_OTEL_PROPAGATE_TO"));
  const traced = await startTracing({ version: VERSION, propagateTo });
  let app;
  try {
    app = await createApp(config);
  } catch (e) {
    if (!(e instanceof CacheLayoutError)) throw e;
    fail("cannot use the cache directory", { error: e.message });
    return 1;
  }
  if (traced) {
    app.log.info("tracing with OpenTelemetry", { propagateTo: propagateTo.join(",") || "none" });
  }
  // Profiling aid (bench/cold_init.ts --trace): one "trace" line per timed span.
  // A binary built with a narrower --allow-env cannot read it: no trace then.
  if (readEnv("REPOXY_TRACE") === "1") {
    setTraceSink((what, ms, fields) => app.log.info("trace", { what, ms, ...fields }));
  }
  let server;
  try {
    server = serveApp(app);
  } catch (e) {
    fail(`cannot listen on ${config.listen.hostname}:${config.listen.port}`, {
      error: (e as Error).message,
    });
    return 1;
  }
  // Listen for signals before announcing the URL: whoever reads it may stop us at once.
  const stopped = untilSignalled(app, server);
  announce(app, server, configFile);
  await stopped;
  app.log.info("shutdown complete");
  return 0;
}

/**
 * Resolves once the server stopped and every archive still being written to
 * the cache landed. SIGTERM/SIGINT start a graceful shutdown (in-flight
 * responses get {@link SHUTDOWN_DRAIN_MS}); a second signal exits at once.
 */
async function untilSignalled(app: App, server: RunningServer): Promise<void> {
  let stopping: Promise<void> | undefined;
  const stop = () => {
    if (stopping) {
      app.log.warn("second signal; exiting without waiting");
      Deno.exit(1);
    }
    app.log.info("shutting down");
    stopping = server.shutdown(SHUTDOWN_DRAIN_MS);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
  // `finished` resolves when the socket closes; archives still being written
  // to the cache (app.close in shutdown) must land before the process exits.
  await stopping;
  Deno.removeSignalListener("SIGTERM", stop);
  Deno.removeSignalListener("SIGINT", stop);
}

/** The start-up log line, and the client snippet to paste. */
function announce(app: App, server: RunningServer, configFile: ConfigLocation | undefined): void {
  const { config } = app;
  app.log.info("repoxy started", {
    version: VERSION,
    url: server.url,
    cacheDir: config.cacheDir,
    upstreams: [...config.upstreams.keys()].join(","),
    // An edge: every upstream without its own url is reached through this central Repoxy.
    ...(config.via ? { via: config.via.url } : {}),
    offline: config.offline,
    ...(config.tls ? { alpn: server.alpnProtocols.join(",") } : {}),
    config: configFile?.path ?? "none (defaults)",
    configSource: configFile?.source,
    // Settings the platform's environment changed, unseen in the config file.
    environment: overridesInEffect((n) => Deno.env.get(n)).join(", ") || "none",
  });
  const warning = openAccessWarning(config);
  if (warning) app.log.warn(warning, { listen: config.listen.hostname });
  if (config.egress.allowPrivateNetworks) {
    // The guard against upstream documents steering fetches inward is off:
    // said once at start, whether the file or a REPOXY_* variable turned it off.
    app.log.warn(
      "allowPrivateNetworks is on: upstream documents may make this mirror fetch from private, loopback and link-local addresses",
      {
        setBy: (Deno.env.get("REPOXY_ALLOW_PRIVATE_NETWORKS") ?? "") !== ""
          ? "REPOXY_ALLOW_PRIVATE_NETWORKS"
          : "config",
      },
    );
  }
  const base = config.publicUrl ?? server.url;
  const snippet = clientSnippet(
    base,
    [...config.upstreams.keys()],
    config.tls !== undefined,
    config.auth !== undefined,
  );
  if (config.logFormat === "json") {
    app.log.info("client configuration for ~/.terraformrc or ~/.tofurc", { snippet });
  } else {
    err(
      `\nRepoxy ${VERSION} is serving at ${server.url}\nPaste this into ~/.terraformrc (Terraform) or ~/.tofurc (OpenTofu):\n\n${snippet}\n`,
    );
  }
}

/**
 * The start-up warning for a mirror anyone on the network can use: listening
 * beyond loopback without `auth`. Undefined when there is nothing to warn about.
 */
export function openAccessWarning(
  config: Pick<Config, "auth" | "listen">,
): string | undefined {
  if (config.auth || isLoopback(config.listen.hostname)) return undefined;
  return `listening on ${config.listen.hostname} without client auth: anyone who can reach ` +
    `this address gets every provider of every upstream. Add "auth": { "tokens": ` +
    `[{ "name": "ci", "token": "env:REPOXY_CI_TOKEN" }] } to the config (clients then set ` +
    `credentials "<mirror host>" { token = ... }), or listen on 127.0.0.1`;
}

/** The egress check's loopback test (every spelling: `127.1`, `::ffff:127.0.0.1`, ...). */
function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "");
  try {
    return isLoopbackHost(new URL(`http://${h.includes(":") ? `[${h}]` : h}/`));
  } catch {
    return false; // not a host name a URL can hold: warn
  }
}
