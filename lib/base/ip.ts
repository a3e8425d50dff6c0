/**
 * IP address and CIDR parsing: every address as 16 bytes, IPv4 as
 * ::ffff:a.b.c.d, so one table and one prefix matcher serve both families.
 * Used by the egress policy and by the config check of `egressAllow`.
 * @module
 */

export type Addr = Uint8Array;

export function parseV4(s: string): number[] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  return parts.every((p) => p <= 255) ? parts : undefined;
}

function parseV6(input: string): Addr | undefined {
  let s = input.replace(/^\[|\]$/g, "");
  const zone = s.indexOf("%");
  if (zone !== -1) s = s.slice(0, zone);
  if (!s.includes(":")) return undefined;
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    const v4 = parseV4(s.slice(lastColon + 1));
    if (!v4) return undefined;
    tail = v4;
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0] ?? "");
  const rest = halves.length === 2 ? groups(halves[1] ?? "") : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 2 ? fill < 0 : fill !== 0) return undefined;
  const all = [...head, ...Array(fill).fill("0"), ...rest];
  const out = new Uint8Array(16);
  for (const [i, g] of all.entries()) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    const n = parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  if (tail.length) out.set(tail, 12);
  return out;
}

/** Parses an IPv4 or IPv6 literal (brackets and zone allowed) into 16 bytes. */
export function parseAddr(s: string): Addr | undefined {
  const v4 = parseV4(s);
  if (v4) return Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4);
  return parseV6(s);
}

export function inPrefix(a: Addr, net: Addr, bits: number): boolean {
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((a[i] ?? 0) & mask) !== ((net[i] ?? 0) & mask)) return false;
  }
  return true;
}

export interface Cidr {
  net: Addr;
  /** Prefix length over the 16-byte form (an IPv4 /8 is /104). */
  bits: number;
}

/** Parses `address/bits` (IPv4 or IPv6). */
export function parseCidr(cidr: string): Cidr | undefined {
  const m = /^([0-9a-f:.]+)\/(\d{1,3})$/i.exec(cidr);
  if (!m || m[1] === undefined) return undefined;
  const net = parseAddr(m[1]);
  const v4 = parseV4(m[1]) !== undefined;
  const bits = Number(m[2]);
  if (!net || bits > (v4 ? 32 : 128)) return undefined;
  return { net, bits: bits + (v4 ? 96 : 0) };
}
