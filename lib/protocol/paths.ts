/**
 * Maps a request path to a route. Pure: no I/O, so it is tested with strings.
 *
 * Every segment is validated here ({@link ./names.ts}); a path that does not
 * parse is a 404 (or 400 for a malformed name on a known route shape), and
 * nothing downstream ever sees an unvalidated segment.
 * @module
 */
import {
  isValidHostname,
  isValidOsArch,
  isValidPart,
  isValidVersion,
  parseArchiveFilename,
  type ProviderRef,
} from "./names.ts";

/** What a request path asks for. */
export type Route =
  | { kind: "wellKnown" }
  | { kind: "health" }
  | { kind: "ready" }
  | { kind: "metrics" }
  | { kind: "status" }
  | { kind: "mirrorIndex"; provider: ProviderRef }
  | { kind: "mirrorVersion"; provider: ProviderRef; version: string }
  | { kind: "archive"; provider: ProviderRef; version: string; os: string; arch: string }
  | { kind: "registryVersions"; provider: ProviderRef }
  | {
    kind: "registryDownload";
    provider: ProviderRef;
    version: string;
    os: string;
    arch: string;
  }
  | { kind: "registrySums"; provider: ProviderRef; version: string; signature: boolean }
  | { kind: "moduleVersions"; module: ModuleRef }
  | { kind: "moduleDownload"; module: ModuleRef; version: string };

/** A module in a registry: `{namespace}/{name}/{system}`. */
export interface ModuleRef {
  hostname: string;
  namespace: string;
  name: string;
  system: string;
}

/** A request path that is understood but names something invalid. */
export class BadPathError extends Error {
  override name = "BadPathError";
}

function provider(hostname: string, namespace: string, type: string): ProviderRef {
  if (!isValidHostname(hostname)) throw new BadPathError(`invalid registry hostname "${hostname}"`);
  // The client lowercases namespace and type; accept other casing the same way.
  const ns = namespace.toLowerCase();
  const ty = type.toLowerCase();
  if (!isValidPart(ns)) throw new BadPathError(`invalid provider namespace "${namespace}"`);
  if (!isValidPart(ty)) throw new BadPathError(`invalid provider type "${type}"`);
  return { hostname, namespace: ns, type: ty };
}

function version(v: string): string {
  if (!isValidVersion(v)) {
    throw new BadPathError(`invalid version "${v}": expected semver such as 1.2.3`);
  }
  return v;
}

function platform(os: string, arch: string): { os: string; arch: string } {
  if (!isValidOsArch(os) || !isValidOsArch(arch)) {
    throw new BadPathError(`invalid platform "${os}_${arch}"`);
  }
  return { os, arch };
}

function registryRoute(segs: string[], hostname: string): Route | undefined {
  // segs: [ns, type, "versions"] or [ns, type, ver, "download", os, arch]
  //       or [ns, type, ver, "SHA256SUMS" | "SHA256SUMS.sig"]
  if (segs.length === 3 && segs[2] === "versions") {
    return { kind: "registryVersions", provider: provider(hostname, segs[0]!, segs[1]!) };
  }
  if (segs.length === 6 && segs[3] === "download") {
    return {
      kind: "registryDownload",
      provider: provider(hostname, segs[0]!, segs[1]!),
      version: version(segs[2]!),
      ...platform(segs[4]!, segs[5]!),
    };
  }
  if (segs.length === 4 && (segs[3] === "SHA256SUMS" || segs[3] === "SHA256SUMS.sig")) {
    return {
      kind: "registrySums",
      provider: provider(hostname, segs[0]!, segs[1]!),
      version: version(segs[2]!),
      signature: segs[3] === "SHA256SUMS.sig",
    };
  }
  return undefined;
}

/**
 * Parses a URL pathname.
 *
 * @param pathname the raw (still percent-encoded) path of the request URL
 * @param defaultUpstream hostname for `/v1/providers/{ns}/{type}/...`
 * @returns the route, or undefined when nothing is served there
 * @throws {BadPathError} when the shape matches but a name is invalid
 */
export function parseRoute(pathname: string, defaultUpstream: string): Route | undefined {
  if (pathname === "/.well-known/terraform.json") return { kind: "wellKnown" };
  if (pathname === "/-/healthz" || pathname === "/-/health") return { kind: "health" };
  if (pathname === "/-/readyz") return { kind: "ready" };
  if (pathname === "/-/metrics") return { kind: "metrics" };
  // `/` is used by neither protocol (mirror paths start with a hostname).
  if (pathname === "/") return { kind: "status" };
  if (!pathname.startsWith("/")) return undefined;
  // Every valid name is plain ASCII without '%', so encoded bytes (%2e%2e, %2f,
  // %00) are simply invalid; rejecting them early means nothing is decoded twice.
  // deno-lint-ignore no-control-regex
  if (/[%\\\x00-\x20\x7f]/.test(pathname)) {
    throw new BadPathError("request path contains an encoded, control or backslash character");
  }
  const segs = pathname.slice(1).split("/");
  if (segs.some((s) => s === "" || s === "." || s === "..")) {
    throw new BadPathError("request path contains an empty, '.' or '..' segment");
  }
  if (segs.some((s) => s.length > 255)) throw new BadPathError("request path segment too long");

  if (segs[0] === "v1" && segs[1] === "providers") {
    const rest = segs.slice(2);
    // `{ns}/{type}/...` (default upstream) and `{host}/{ns}/{type}/...` never have
    // the same length and tail, so trying the short form first is unambiguous.
    return registryRoute(rest, defaultUpstream) ??
      (rest.length > 1 ? registryRoute(rest.slice(1), rest[0]!) : undefined);
  }

  if (segs[0] === "v1" && segs[1] === "modules") {
    // {host}/{ns}/{name}/{system}/versions or {host}/{ns}/{name}/{system}/{version}/download
    const [host, ns, name, system, a, b] = segs.slice(2);
    if (host === undefined || ns === undefined || name === undefined || system === undefined) {
      return undefined;
    }
    const p = provider(host, ns, name);
    if (!isValidPart(system.toLowerCase())) {
      throw new BadPathError(`invalid module system "${system}"`);
    }
    const module: ModuleRef = {
      hostname: p.hostname,
      namespace: p.namespace,
      name: p.type,
      system: system.toLowerCase(),
    };
    if (segs.length === 7 && a === "versions") return { kind: "moduleVersions", module };
    if (segs.length === 8 && b === "download") {
      return { kind: "moduleDownload", module, version: version(a!) };
    }
    return undefined;
  }

  if (segs.length === 4) {
    const [host, ns, type, file] = segs as [string, string, string, string];
    const p = provider(host, ns, type);
    if (file === "index.json") return { kind: "mirrorIndex", provider: p };
    if (file.endsWith(".json")) {
      return { kind: "mirrorVersion", provider: p, version: version(file.slice(0, -5)) };
    }
    if (file.endsWith(".zip")) {
      const a = parseArchiveFilename(p.type, file);
      if (!a) throw new BadPathError(`invalid archive name "${file}"`);
      return { kind: "archive", provider: p, ...a };
    }
  }
  return undefined;
}
