/**
 * Validation of the names that appear in request paths. Every path segment
 * Repoxy uses to build a file path or an upstream URL passes through one of
 * these, which is what keeps `..`, `%2f`, NUL and friends out of the cache dir.
 * @module
 */

const LABEL = "(?:xn--)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const HOSTNAME_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*(?::[0-9]{1,5})?$`);
const PART_RE = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
const VERSION_RE =
  /^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;
const OS_ARCH_RE = /^[a-z0-9]{1,32}$/;

/** A registry hostname in the client's comparison form (lowercase, punycode, optional :port). */
export function isValidHostname(s: string): boolean {
  if (s.length > 260 || !HOSTNAME_RE.test(s)) return false;
  const port = s.split(":")[1];
  return port === undefined || (Number(port) > 0 && Number(port) <= 65535);
}

/** A provider namespace or type as the client sends it (already lowercased). */
export function isValidPart(s: string): boolean {
  return PART_RE.test(s);
}

/** Canonical semver as Terraform prints it (`5.31.0`, `1.0.0-beta1`). */
export function isValidVersion(s: string): boolean {
  return s.length <= 128 && VERSION_RE.test(s);
}

/** An OS or architecture name such as `linux`, `amd64`, `386`. */
export function isValidOsArch(s: string): boolean {
  return OS_ARCH_RE.test(s);
}

/** Identifies one provider at one upstream. */
export interface ProviderRef {
  hostname: string;
  namespace: string;
  type: string;
}

/** One platform of one provider version. */
export interface PlatformRef {
  os: string;
  arch: string;
}

/** `host/ns/type` of a provider: how logs, keys and paths name it. */
export function providerString(p: ProviderRef): string {
  return `${p.hostname}/${p.namespace}/${p.type}`;
}

/**
 * What a client hears about a provider its upstream does not have. Client
 * auth answers a provider a token may not see with these same words (no
 * upstream path, nothing only a lookup could know), so hidden and
 * nonexistent cannot be told apart.
 */
export function unknownProviderMessage(p: ProviderRef, offline: boolean): string {
  return offline
    ? `nothing of ${providerString(p)} is cached and this mirror is offline`
    : `upstream ${p.hostname} has no provider ${p.namespace}/${p.type}`;
}

/** The module counterpart of {@link unknownProviderMessage}. */
export function unknownModuleMessage(
  m: { hostname: string; namespace: string; name: string; system: string },
  offline: boolean,
): string {
  return offline
    ? `nothing of module ${m.namespace}/${m.name}/${m.system} is cached and this mirror is offline`
    : `upstream ${m.hostname} has no module ${m.namespace}/${m.name}/${m.system}`;
}

/** `os_arch` of a platform, as mirror JSON and archive names spell it. */
export function platformString(pl: PlatformRef): string {
  return `${pl.os}_${pl.arch}`;
}

/** The archive file name of the packed mirror layout. */
export function archiveFilename(type: string, version: string, p: PlatformRef): string {
  return `terraform-provider-${type}_${version}_${platformString(p)}.zip`;
}

/**
 * Parses `terraform-provider-{type}_{version}_{os}_{arch}.zip` for a known type.
 * Returns undefined for anything else.
 */
export function parseArchiveFilename(
  type: string,
  filename: string,
): { version: string; os: string; arch: string } | undefined {
  const prefix = `terraform-provider-${type}_`;
  if (!filename.startsWith(prefix) || !filename.endsWith(".zip")) return undefined;
  const parts = filename.slice(prefix.length, -4).split("_");
  if (parts.length !== 3) return undefined;
  const [version, os, arch] = parts as [string, string, string];
  if (!isValidVersion(version) || !isValidOsArch(os) || !isValidOsArch(arch)) return undefined;
  return { version, os, arch };
}

/**
 * Compares two semver strings by precedence (build metadata ignored), for
 * sorting version lists newest first.
 */
export function compareVersions(a: string, b: string): number {
  // Looser than VERSION_RE: constraint boundaries may have numbers of any
  // length (Terraform reads them as 64-bit integers), and must still compare
  // as numbers, not as strings.
  const ma = COMPARABLE_RE.exec(a);
  const mb = COMPARABLE_RE.exec(b);
  if (!ma || !mb) return a < b ? -1 : a > b ? 1 : 0;
  for (let i = 1; i <= 3; i++) {
    const d = compareDigits(ma[i]!.replace(/^0+(?=.)/, ""), mb[i]!.replace(/^0+(?=.)/, ""));
    if (d !== 0) return d;
  }
  const pa = ma[4];
  const pb = mb[4];
  if (pa === undefined || pb === undefined) return pa === pb ? 0 : pa === undefined ? 1 : -1;
  const xa = pa.split(".");
  const xb = pb.split(".");
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    const sa = xa[i];
    const sb = xb[i];
    if (sa === undefined) return -1;
    if (sb === undefined) return 1;
    const na = /^\d+$/.test(sa);
    const nb = /^\d+$/.test(sb);
    if (na && nb) {
      // As go-versions: by length, then digit by digit ("01" follows "1").
      const d = compareDigits(sa, sb);
      if (d !== 0) return d;
    } else if (na !== nb) return na ? -1 : 1;
    else if (sa !== sb) return sa < sb ? -1 : 1;
  }
  return 0;
}

const COMPARABLE_RE = /^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

/** Compares digit strings as numbers of any size: the longer is bigger, else the first differing digit decides. */
function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}
