/**
 * Maps a request path to a route. Pure: no I/O, so it is tested with strings.
 *
 * Every segment is validated here ({@link ./names.ts}), and nothing
 * downstream ever sees an unvalidated segment. Two kinds of "no":
 * - a well-formed path that names nothing served here (an unknown shape, a
 *   file that is neither `.json` nor `.zip`, a trailing slash) is not found:
 *   `undefined`, answered 404 as the registry answers it;
 * - a malformed path (traversal, encoded or control bytes, a backslash, an
 *   empty or over-long segment inside the path, an invalid name on a known
 *   route shape) throws {@link BadPathError}, answered 400.
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
  /**
   * `/{host}/.well-known/terraform.json`: the discovery document of one
   * upstream as this instance serves it, so another Repoxy (an edge) can use
   * `{this instance}/{host}` as that registry's URL.
   */
  | { kind: "hostWellKnown"; hostname: string }
  | { kind: "health" }
  | { kind: "ready" }
  | { kind: "metrics" }
  | { kind: "status" }
  | { kind: "mirrorIndex"; provider: ProviderRef }
  | { kind: "mirrorVersion"; provider: ProviderRef; version: string }
  | { kind: "archive"; provider: ProviderRef; version: string; os: string; arch: string }
  | { kind: "registryVersions"; provider: ProviderRef }
  /**
   * `{providers.v1}-/{type}/versions`: the lookup Terraform makes for a
   * provider required without `source` that the registry does not know, to
   * print "Did you intend to use {namespace}/{type}?". No namespace: the
   * answer names it.
   */
  | { kind: "registryLegacyLookup"; hostname: string; type: string }
  | {
    kind: "registryDownload";
    provider: ProviderRef;
    version: string;
    os: string;
    arch: string;
  }
  | { kind: "registrySums"; provider: ProviderRef; version: string; signature: boolean }
  | { kind: "moduleVersions"; module: ModuleRef }
  | { kind: "moduleDownload"; module: ModuleRef; version: string }
  /** Repoxy's own archive of a module version (`…/{version}/module.tar.gz`). */
  | { kind: "moduleArchive"; module: ModuleRef; version: string };

/** The file name of Repoxy's archive of a module version (go-getter unpacks it by its extension). */
export const MODULE_ARCHIVE_NAME = "module.tar.gz";

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

/** The namespace segment of the legacy lookup: not a valid namespace, so never a provider's. */
const LEGACY_NAMESPACE = "-";

function registryRoute(segs: string[], hostname: string): Route | undefined {
  // segs: [ns, type, "versions"] or [ns, type, ver, "download", os, arch]
  //       or [ns, type, ver, "SHA256SUMS" | "SHA256SUMS.sig"] or ["-", type, "versions"]
  if (segs.length === 3 && segs[0] === LEGACY_NAMESPACE && segs[2] === "versions") {
    // Validated like any provider type (the hostname too), with a stand-in namespace.
    const p = provider(hostname, "legacy", segs[1]!);
    return { kind: "registryLegacyLookup", hostname: p.hostname, type: p.type };
  }
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
  if (segs.some((s) => s === "." || s === "..")) {
    throw new BadPathError("request path contains a '.' or '..' segment");
  }
  if (segs.some((s) => s.length > 255)) throw new BadPathError("request path segment too long");
  // A trailing slash is a directory-style URL of a well-formed path: nothing
  // is served there (the registry answers it 404 too). Checked after the
  // traversal and encoding checks, so "/../" stays a 400.
  if (segs.at(-1) === "") return undefined;
  if (segs.some((s) => s === "")) throw new BadPathError("request path contains an empty segment");

  if (segs[0] === "v1" && segs[1] === "providers") {
    const rest = segs.slice(2);
    // `{ns}/{type}/...` (default upstream) and `{host}/{ns}/{type}/...` never have
    // the same length and tail, so trying the short form first is unambiguous.
    return registryRoute(rest, defaultUpstream) ??
      (rest.length > 1 ? registryRoute(rest.slice(1), rest[0]!) : undefined);
  }

  if (segs[0] === "v1" && segs[1] === "modules") {
    // {host}/{ns}/{name}/{system}/versions, {host}/{ns}/{name}/{system}/{version}/download
    // and Repoxy's own {host}/{ns}/{name}/{system}/{version}/module.tar.gz
    const [host, ns, name, system, a, b] = segs.slice(2);
    // The shape first: names are validated only on paths something is served at.
    const isVersions = segs.length === 7 && a === "versions";
    const isDownload = segs.length === 8 && b === "download";
    const isArchive = segs.length === 8 && b === MODULE_ARCHIVE_NAME;
    if (!isVersions && !isDownload && !isArchive) return undefined;
    const p = provider(host!, ns!, name!);
    if (!isValidPart(system!.toLowerCase())) {
      throw new BadPathError(`invalid module system "${system}"`);
    }
    const module: ModuleRef = {
      hostname: p.hostname,
      namespace: p.namespace,
      name: p.type,
      system: system!.toLowerCase(),
    };
    if (isVersions) return { kind: "moduleVersions", module };
    if (isArchive) return { kind: "moduleArchive", module, version: version(a!) };
    return { kind: "moduleDownload", module, version: version(a!) };
  }

  if (segs.length === 3 && segs[1] === ".well-known" && segs[2] === "terraform.json") {
    if (!isValidHostname(segs[0]!)) {
      throw new BadPathError(`invalid registry hostname "${segs[0]}"`);
    }
    return { kind: "hostWellKnown", hostname: segs[0]! };
  }

  if (segs.length === 4) {
    const [host, ns, type, file] = segs as [string, string, string, string];
    // Only `.json` and `.zip` files are served: any other name is unknown
    // (404), whatever the names before it look like.
    if (!file.endsWith(".json") && !file.endsWith(".zip")) return undefined;
    const p = provider(host, ns, type);
    if (file === "index.json") return { kind: "mirrorIndex", provider: p };
    if (file.endsWith(".json")) {
      return { kind: "mirrorVersion", provider: p, version: version(file.slice(0, -5)) };
    }
    const a = parseArchiveFilename(p.type, file);
    if (!a) throw new BadPathError(`invalid archive name "${file}"`);
    return { kind: "archive", provider: p, ...a };
  }
  return undefined;
}
