/**
 * Where the config file is: `--config`, `$REPOXY_CONFIG`, `./repoxy.json`,
 * `/etc/repoxy/config.json`, and (compiled binary) `config.json` next to the
 * executable. Every command looks it up the same way.
 * @module
 */
import { dirname, join, resolve } from "../deps/path.ts";

/** Which rule of the lookup order found the config file. */
export type ConfigSource = "flag" | "env" | "cwd" | "etc" | "exe";

/** A config file chosen by {@link findConfigFile}. */
export interface ConfigLocation {
  /** Absolute path. */
  path: string;
  source: ConfigSource;
}

/** What config lookup needs from the system, injectable for tests. */
export interface ConfigLookupEnv {
  getEnv(name: string): string | undefined;
  cwd(): string;
  /**
   * Whether something is at `path`. Should answer true when it exists but
   * cannot be read, so that start-up fails loudly instead of running on defaults.
   */
  exists(path: string): Promise<boolean>;
  /** Path of the running executable (`Deno.execPath()`). */
  execPath(): string;
  /** True inside a `deno compile` binary (`Deno.build.standalone`). */
  standalone: boolean;
  os: typeof Deno.build.os;
}

/** Env var naming the config file when `--config` is not given. */
export const CONFIG_ENV = "REPOXY_CONFIG";
/** The system-wide config file (the systemd unit's ConfigurationDirectory). */
export const ETC_CONFIG = "/etc/repoxy/config.json";

const realLookupEnv: ConfigLookupEnv = {
  getEnv: (n) => Deno.env.get(n),
  cwd: () => Deno.cwd(),
  async exists(path) {
    try {
      await Deno.stat(path);
      return true;
    } catch (e) {
      // Outside what this build may read (baked permissions): not ours to use.
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotCapable) return false;
      return true;
    }
  },
  execPath: () => Deno.execPath(),
  standalone: Deno.build.standalone,
  os: Deno.build.os,
};

/**
 * Finds the config file, first match wins: `--config`, `$REPOXY_CONFIG`,
 * `./repoxy.json`, `/etc/repoxy/config.json` (not on Windows), and
 * `config.json` next to the executable when running as a compiled binary.
 * Explicit choices (flag, env) are returned even when missing, so reading
 * them reports the error; the implicit places count only when present.
 *
 * @returns undefined when there is no config file (every key has a default)
 */
export async function findConfigFile(
  flag: string | undefined,
  env: ConfigLookupEnv = realLookupEnv,
): Promise<ConfigLocation | undefined> {
  if (flag !== undefined && flag !== "") return { path: resolve(env.cwd(), flag), source: "flag" };
  const fromEnv = env.getEnv(CONFIG_ENV);
  if (fromEnv !== undefined && fromEnv !== "") {
    return { path: resolve(env.cwd(), fromEnv), source: "env" };
  }
  const candidates: ConfigLocation[] = [{ path: resolve(env.cwd(), "repoxy.json"), source: "cwd" }];
  if (env.os !== "windows") candidates.push({ path: ETC_CONFIG, source: "etc" });
  // Under `deno run` the executable is deno itself: its directory is not ours.
  if (env.standalone) {
    candidates.push({ path: join(dirname(env.execPath()), "config.json"), source: "exe" });
  }
  for (const c of candidates) {
    if (await env.exists(c.path)) return c;
  }
  return undefined;
}
