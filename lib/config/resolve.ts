/**
 * What a schema cannot do: read `env:`/`file:` secrets, the TLS PEM files and
 * trusted keys. Problems are reported by key path through a callback, so one
 * run lists them all instead of stopping at the first.
 * @module
 */
import { resolve } from "../deps/path.ts";
import type { ConfigFile } from "./schema.ts";

/** Dependencies of config loading, injectable for tests. */
export interface ConfigEnv {
  readTextFile(path: string): Promise<string>;
  getEnv(name: string): string | undefined;
  cwd(): string;
}

/** Settings for one upstream registry. */
export interface UpstreamConfig {
  /** The hostname clients use in provider addresses (the key in `upstreams`). */
  hostname: string;
  /** Base URL where the registry is reached; discovery is `{url}/.well-known/terraform.json`. */
  url: string;
  /** Bearer token for the registry API (already resolved from `env:`/`file:`). */
  token?: string;
  /** Armored OpenPGP public keys pinned by the operator for this upstream. */
  trustedKeys: string[];
  /** Set when the registry is reached through a central Repoxy (`via`): its base URL. */
  via?: string;
}

/** The resolved `tls` section. */
export interface TlsConfig {
  cert: string;
  key: string;
  certPem: string;
  keyPem: string;
  http2: boolean;
}

type Problem = (message: string) => void;

/**
 * The value of `env:NAME` or `file:PATH` (relative to `base`), trimmed; any
 * other string is the value itself. Undefined after reporting a problem.
 */
export async function resolveSecret(
  value: string,
  key: string,
  env: ConfigEnv,
  base: string,
  problem: Problem,
): Promise<string | undefined> {
  if (value.startsWith("env:")) {
    const name = value.slice(4);
    let got: string | undefined;
    try {
      got = env.getEnv(name);
    } catch (e) {
      // The compiled binary is built with --allow-env limited to REPOXY_* names.
      if (!(e instanceof Deno.errors.NotCapable)) throw e;
      problem(
        `"${key}" names environment variable ${name}, which this build may not read; name it REPOXY_${name} or use "file:"`,
      );
      return undefined;
    }
    if (got === undefined || got === "") {
      problem(`"${key}" names environment variable ${name}, which is not set`);
      return undefined;
    }
    return got.trim();
  }
  if (value.startsWith("file:")) {
    const path = resolve(base, value.slice(5));
    try {
      return (await env.readTextFile(path)).trim();
    } catch (e) {
      problem(`"${key}": cannot read token file "${path}": ${(e as Error).message}`);
      return undefined;
    }
  }
  return value;
}

/**
 * Reads the PEM files of `tls`; `pathOf` resolves a key's relative path and
 * `nameOf` names a key in messages (the variable that set it, if one did).
 */
export async function readTls(
  raw: ConfigFile["tls"],
  pathOf: (key: string, value: string) => string,
  nameOf: (key: string) => string,
  env: ConfigEnv,
  problem: Problem,
): Promise<TlsConfig | undefined> {
  if (raw === undefined) return undefined;
  if ((raw.cert === undefined) !== (raw.key === undefined)) {
    problem(`"tls.cert" and "tls.key" must be set together`);
    return undefined;
  }
  if (raw.cert === undefined || raw.key === undefined) {
    // Deno serves HTTP/2 only over TLS (ALPN); silently ignoring it would mislead.
    if (raw.http2 !== undefined) problem(`"tls.http2" needs "tls.cert" and "tls.key"`);
    return undefined;
  }
  const read = async (key: string, p: string) => {
    try {
      const text = await env.readTextFile(p);
      if (!text.includes("-----BEGIN ")) throw new Error("not a PEM file");
      return text;
    } catch (e) {
      problem(`"${nameOf(key)}": cannot read "${p}": ${(e as Error).message}`);
      return undefined;
    }
  };
  const cert = pathOf("tls.cert", raw.cert);
  const key = pathOf("tls.key", raw.key);
  const certPem = await read("tls.cert", cert);
  const keyPem = await read("tls.key", key);
  if (certPem === undefined || keyPem === undefined) return undefined;
  return { cert, key, certPem, keyPem, http2: raw.http2 === true };
}

/** One upstream with its token and trusted keys read. */
export async function resolveUpstream(
  host: string,
  raw: NonNullable<ConfigFile["upstreams"]>[string],
  secret: (value: string, key: string) => Promise<string | undefined>,
  problem: Problem,
): Promise<UpstreamConfig> {
  const key = `upstreams.${host}`;
  const url = raw.url === undefined ? `https://${host}` : new URL(raw.url).href.replace(/\/+$/, "");
  const up: UpstreamConfig = { hostname: host, url, trustedKeys: [] };
  if (raw.token !== undefined) {
    const token = await secret(raw.token, `${key}.token`);
    if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
      problem(`"${key}.token" must be printable ASCII without spaces`);
    } else if (token !== undefined) up.token = token;
  }
  for (const [i, k] of (raw.trustedKeys ?? []).entries()) {
    const s = await secret(k, `${key}.trustedKeys[${i}]`);
    if (s === undefined) continue;
    if (!s.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
      problem(`"${key}.trustedKeys[${i}]" is not an armored OpenPGP public key`);
    } else up.trustedKeys.push(s);
  }
  return up;
}
