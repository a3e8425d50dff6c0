/**
 * Provider version constraints as Terraform reads, matches and writes them
 * (`version = "~> 5.0, != 5.2.1"` in `required_providers`, `constraints` in a
 * lock file).
 *
 * Mirrors Terraform's own rules (`getproviders.ParseVersionConstraints` over
 * apparentlymart/go-versions, and `VersionConstraintsString` for the lock
 * file's normalized form), so `repoxy lock` picks the version and writes the
 * `constraints` line `terraform providers lock` would:
 *
 * - terms are separated by commas; operators `=` (or none), `!=`, `>`, `>=`,
 *   `<`, `<=`, `~>`; versions may omit minor and patch;
 * - `~> 1.2` means `>= 1.2.0, < 2.0.0`, `~> 1.2.3` means `>= 1.2.3, < 1.3.0`;
 * - a pre-release is selected only when some exact (`=`) term names it;
 * - the normalized string sorts terms by boundary version, then lower bounds
 *   before upper bounds, drops duplicates and writes every version with three
 *   components (`~> 1.2` keeps two).
 * @module
 */
import { compareVersions } from "./names.ts";

/** A constraint term that cannot be parsed. */
export class ConstraintError extends Error {
  override name = "ConstraintError";
}

/**
 * The operators, each with its rank in the lock file's order (Terraform's
 * `versionSelectionsBoundaryPriority`: lower bounds first, upper bounds last).
 */
const OP_RANK = {
  ">": 1,
  ">=": 2,
  "=": 3,
  "~>patch": 4,
  "~>minor": 5,
  "<=": 6,
  "<": 7,
  "!=": 8,
} as const;

/** One term of a constraint. */
export interface ConstraintTerm {
  op: keyof typeof OP_RANK;
  major: number;
  /** Undefined when the term leaves it out (`~> 1`, `>= 2`). */
  minor?: number;
  patch?: number;
  prerelease?: string;
  build?: string;
}

/**
 * One term as Terraform accepts it: at most one space after the operator
 * (go-versions), no "v" prefix, no empty pre-release or build identifier
 * (hashicorp/go-version, which Terraform also applies to `version`).
 */
const TERM_RE =
  /^(?:(=|!=|>=|<=|>|<|~>) ?)?(\d+)(?:\.(\d+)(?:\.(\d+))?)?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

/** Terraform parses version numbers as 64-bit integers; a bigger one is a syntax error there. */
const MAX_NUMBER = 2n ** 63n - 1n;

/**
 * Parses a constraint string (`">= 1.0, < 2.0"`). The empty string is no
 * constraint at all.
 * @throws {ConstraintError}
 */
export function parseConstraints(text: string): ConstraintTerm[] {
  const out: ConstraintTerm[] = [];
  if (text.trim() === "") return out;
  for (const raw of text.split(",")) {
    const s = raw.trim();
    const m = TERM_RE.exec(s);
    if (!m) throw new ConstraintError(`invalid version constraint "${s}" in "${text}"`);
    const [, opText, maj, min, pat, pre, build] = m;
    if ([maj, min, pat].some((n) => n !== undefined && BigInt(n) > MAX_NUMBER)) {
      throw new ConstraintError(`invalid version constraint "${s}" in "${text}": number too big`);
    }
    let op: ConstraintTerm["op"];
    if (opText === "~>") op = pat === undefined ? "~>minor" : "~>patch";
    else op = (opText ?? "=") as ConstraintTerm["op"];
    if ((pre !== undefined || build !== undefined) && pat === undefined) {
      throw new ConstraintError(`"${s}": a pre-release needs a full version in "${text}"`);
    }
    const t: ConstraintTerm = { op, major: Number(maj) };
    if (min !== undefined) t.minor = Number(min);
    if (pat !== undefined) t.patch = Number(pat);
    if (pre !== undefined) t.prerelease = pre;
    if (build !== undefined) t.build = build;
    out.push(t);
  }
  return out;
}

/**
 * Parses the `version` argument of `required_providers`: as
 * {@link parseConstraints}, except that Terraform refuses an empty or blank
 * string there (a lock file's empty `constraints` means none).
 * @throws {ConstraintError}
 */
export function parseRequiredVersion(text: string): ConstraintTerm[] {
  if (text.trim() === "") throw new ConstraintError(`invalid version constraint "${text}"`);
  return parseConstraints(text);
}

function boundary(t: ConstraintTerm): string {
  const v = `${t.major}.${t.minor ?? 0}.${t.patch ?? 0}`;
  return t.prerelease === undefined ? v : `${v}-${t.prerelease}`;
}

/** The first version past the range a partial version names (`1.2` → `1.3.0`). */
function nextAfterPartial(t: ConstraintTerm): string {
  if (t.minor === undefined) return `${t.major + 1}.0.0`;
  return `${t.major}.${t.minor + 1}.0`;
}

function termAllows(t: ConstraintTerm, v: string): boolean {
  const b = boundary(t);
  const c = compareVersions(v, b);
  switch (t.op) {
    case "=":
    case "!=": {
      // A partial version names a range: "= 1.2" is any 1.2.x.
      const inside = t.patch === undefined
        ? c >= 0 && compareVersions(v, nextAfterPartial(t)) < 0
        : c === 0;
      return t.op === "=" ? inside : !inside;
    }
    case ">":
      return c > 0;
    case ">=":
      return c >= 0;
    case "<":
      return c < 0;
    case "<=":
      return c <= 0;
    case "~>minor":
      return c >= 0 && compareVersions(v, `${t.major + 1}.0.0`) < 0;
    case "~>patch":
      return c >= 0 && compareVersions(v, `${t.major}.${t.minor! + 1}.0`) < 0;
  }
}

function isPrerelease(v: string): boolean {
  return /^[^-+]*-/.test(v);
}

/**
 * Whether `version` meets every term. A pre-release meets them only when an
 * exact term names it, as in Terraform.
 */
export function allows(terms: ConstraintTerm[], version: string): boolean {
  if (isPrerelease(version)) {
    const named = terms.some((t) =>
      t.op === "=" && t.patch !== undefined && compareVersions(boundary(t), version) === 0
    );
    if (!named) return false;
  }
  return terms.every((t) => termAllows(t, version));
}

/**
 * The newest of `versions` that meets `terms` (no terms: the newest release),
 * or undefined.
 */
export function newestAllowed(terms: ConstraintTerm[], versions: string[]): string | undefined {
  let best: string | undefined;
  for (const v of versions) {
    if (!allows(terms, v)) continue;
    if (best === undefined || compareVersions(v, best) > 0) best = v;
  }
  return best;
}

/**
 * The normalized form Terraform writes to a lock file's `constraints`: terms
 * sorted by boundary version, then by operator; duplicates dropped; three
 * version components except for `~> X.Y`. Empty for no terms.
 */
export function constraintsString(terms: ConstraintTerm[]): string {
  const sorted = [...terms].sort((a, b) => {
    const c = compareBoundaries(a, b);
    return c !== 0 ? c : OP_RANK[a.op] - OP_RANK[b.op];
  });
  const parts: string[] = [];
  for (const t of sorted) {
    const prefix = t.op === "="
      ? ""
      : t.op === "~>minor" || t.op === "~>patch"
      ? "~> "
      : `${t.op} `;
    let v = t.op === "~>minor"
      ? `${t.major}.${t.minor ?? 0}`
      : `${t.major}.${t.minor ?? 0}.${t.patch ?? 0}`;
    if (t.prerelease !== undefined) v += `-${t.prerelease}`;
    if (t.build !== undefined) v += `+${t.build}`;
    const s = prefix + v;
    if (!parts.includes(s)) parts.push(s);
  }
  return parts.join(", ");
}

function compareBoundaries(a: ConstraintTerm, b: ConstraintTerm): number {
  const c = compareVersions(boundary(a), boundary(b));
  if (c !== 0) return c;
  // Same precedence: build metadata decides, as in Terraform's visual order.
  const ma = a.build ?? "";
  const mb = b.build ?? "";
  return ma === mb ? 0 : compareVersions(`0.0.0-${ma}`, `0.0.0-${mb}`);
}
