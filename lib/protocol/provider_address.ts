/**
 * Provider addresses and platforms as users type them on the command line:
 * `registry.terraform.io/hashicorp/aws@5.31.0`, `hashicorp/aws`,
 * `linux_amd64`.
 * @module
 */
import {
  isValidHostname,
  isValidOsArch,
  isValidPart,
  isValidVersion,
  type PlatformRef,
  type ProviderRef,
} from "./names.ts";

/** A provider, and the version asked for (undefined: the newest release). */
export interface ProviderTarget {
  provider: ProviderRef;
  version?: string;
}

/** A provider address or platform that does not parse. */
export class ArgumentError extends Error {
  override name = "ArgumentError";
}

/**
 * Parses `[hostname/]namespace/type[@version]`. Like Terraform, a bare
 * `namespace/type` means the default registry, and names are case-insensitive.
 *
 * @param defaultHost registry for addresses without a hostname
 * @throws {ArgumentError} naming what is wrong
 */
export function parseProviderAddress(arg: string, defaultHost: string): ProviderTarget {
  const at = arg.lastIndexOf("@");
  const address = (at >= 0 ? arg.slice(0, at) : arg).toLowerCase();
  const version = at >= 0 ? arg.slice(at + 1) : undefined;
  const parts = address.split("/");
  if (parts.length !== 2 && parts.length !== 3) {
    throw new ArgumentError(
      `"${arg}" is not a provider address; expected [HOSTNAME/]NAMESPACE/TYPE[@VERSION], e.g. hashicorp/aws@5.31.0`,
    );
  }
  const [hostname, namespace, type] = parts.length === 3
    ? parts as [string, string, string]
    : [defaultHost, parts[0]!, parts[1]!];
  if (!isValidHostname(hostname)) {
    throw new ArgumentError(`"${arg}": "${hostname}" is not a valid registry hostname`);
  }
  if (!isValidPart(namespace)) {
    throw new ArgumentError(`"${arg}": "${namespace}" is not a valid provider namespace`);
  }
  if (!isValidPart(type)) {
    throw new ArgumentError(`"${arg}": "${type}" is not a valid provider type`);
  }
  if (version !== undefined && !isValidVersion(version)) {
    throw new ArgumentError(
      `"${arg}": "${version}" is not a version; expected an exact version such as 1.2.3`,
    );
  }
  const target: ProviderTarget = { provider: { hostname, namespace, type } };
  if (version !== undefined) target.version = version;
  return target;
}

/**
 * Parses `os_arch` (`linux_amd64`, `darwin_arm64`).
 * @throws {ArgumentError}
 */
export function parsePlatform(s: string): PlatformRef {
  const m = /^([a-z0-9]+)_([a-z0-9]+)$/.exec(s);
  if (!m || !isValidOsArch(m[1]!) || !isValidOsArch(m[2]!)) {
    throw new ArgumentError(`"${s}" is not a platform; expected OS_ARCH such as linux_amd64`);
  }
  return { os: m[1]!, arch: m[2]! };
}

const GO_ARCH: Record<string, string> = { "x86_64": "amd64", "aarch64": "arm64" };

/** The platform Terraform would use on this machine, in Go's names. */
export function currentPlatform(): PlatformRef {
  return { os: Deno.build.os, arch: GO_ARCH[Deno.build.arch] ?? Deno.build.arch };
}
