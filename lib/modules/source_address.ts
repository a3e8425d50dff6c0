/**
 * What a module registry's download answer names (`X-Terraform-Get`, or a
 * `location`), as go-getter reads it: an optional `getter::` forcing prefix,
 * a URL, and a `//subdir` after the URL's path. Pure: no I/O.
 *
 * Repoxy caches two kinds: git over https/http (`git::https://…?ref=…`, and
 * `https://github.com/…` shorthands go-getter would clone are NOT guessed:
 * only what says `git::` is git) and HTTP(S) archives (`.tar.gz`, `.tgz`,
 * `.zip`, `?archive=`). Everything else is passed through with the reason.
 * @module
 */

/** A module source Repoxy can fetch and keep. */
export type ModuleSource =
  | {
    kind: "git";
    /** The repository URL (https or http), without `ref`/`depth`. */
    url: URL;
    /** What `?ref=` names (a tag, branch or commit), or undefined: the default branch. */
    ref: string | undefined;
    /** A `//subdir` inside the repository ("" for the root). */
    subdir: string;
  }
  | {
    kind: "archive";
    /** The archive URL (https or http), without `archive=`. */
    url: URL;
    format: "tar.gz" | "zip";
    subdir: string;
  }
  | { kind: "other"; why: string };

/**
 * Splits go-getter's `//subdir` off a URL string (after the scheme's `//`),
 * keeping the query with the URL, as `getter.SourceDirSubdir` does.
 */
export function splitSubdir(src: string): { url: string; subdir: string } {
  let query = "";
  const q = src.indexOf("?");
  if (q >= 0) {
    query = src.slice(q);
    src = src.slice(0, q);
  }
  const scheme = src.indexOf("://");
  const from = scheme >= 0 ? scheme + 3 : 0;
  const i = src.indexOf("//", from);
  if (i < 0) return { url: src + query, subdir: "" };
  return { url: src.slice(0, i) + query, subdir: src.slice(i + 2) };
}

/** Whether a subdir is a plain relative path (no `..`, not absolute, no odd characters). */
export function validSubdir(subdir: string): boolean {
  if (subdir === "") return true;
  if (subdir.startsWith("/") || subdir.includes("\\") || subdir.length > 1024) return false;
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f*?[\]]/.test(subdir)) return false;
  return subdir.split("/").every((s) => s !== ".." && s !== "." && s !== "");
}

/**
 * Whether a `?ref=` (already percent-decoded) is a name git accepts and no
 * option: git's ref-name rules that matter here (no control characters,
 * space, `\ : ~ ^ ? * [`, `..` or `@{`), not starting with `-`, bounded.
 */
function plainRef(ref: string): boolean {
  if (ref === "" || ref.length > 255 || ref.startsWith("-")) return false;
  if (ref.includes("..") || ref.includes("@{")) return false;
  // deno-lint-ignore no-control-regex
  return !/[\x00-\x20\x7f\\:~^?*[]/.test(ref);
}

const ARCHIVE_EXT: Array<[string, "tar.gz" | "zip"]> = [
  [".tar.gz", "tar.gz"],
  [".tgz", "tar.gz"],
  [".zip", "zip"],
];

/** Classifies a download answer's source. */
export function parseModuleSource(raw: string): ModuleSource {
  let src = raw.trim();
  let forced: string | undefined;
  const m = /^([a-z0-9]+)::/.exec(src);
  if (m) {
    forced = m[1];
    src = src.slice(m[0].length);
  }
  const { url: bare, subdir } = splitSubdir(src);
  if (!validSubdir(subdir)) return { kind: "other", why: `subdir "${subdir}" is not a plain path` };
  let url: URL;
  try {
    url = new URL(bare);
  } catch {
    return { kind: "other", why: "not an absolute URL (a scheme-less or local source)" };
  }
  const web = url.protocol === "https:" || url.protocol === "http:";
  if (url.username || url.password) {
    return { kind: "other", why: "the URL carries credentials" };
  }
  if (forced === "git") {
    if (!web) return { kind: "other", why: `git over ${url.protocol} is not fetched by Repoxy` };
    const ref = url.searchParams.get("ref") ?? undefined;
    if (ref !== undefined && !plainRef(ref)) {
      return { kind: "other", why: `git ref "${ref}" is not a plain name` };
    }
    for (const k of [...url.searchParams.keys()]) {
      if (k !== "ref" && k !== "depth") {
        return { kind: "other", why: `git option "${k}" is not supported` };
      }
    }
    url.search = "";
    url.hash = "";
    return { kind: "git", url, ref, subdir };
  }
  if (forced !== undefined && forced !== "http" && forced !== "https") {
    return { kind: "other", why: `${forced}:: sources are not fetched by Repoxy` };
  }
  if (!web) return { kind: "other", why: `${url.protocol} sources are not fetched by Repoxy` };
  const archive = url.searchParams.get("archive");
  let format: "tar.gz" | "zip" | undefined;
  if (archive !== null) {
    format = archive === "tar.gz" || archive === "tgz"
      ? "tar.gz"
      : archive === "zip"
      ? "zip"
      : undefined;
    if (!format) return { kind: "other", why: `archive type "${archive}" is not supported` };
    url.searchParams.delete("archive");
  } else {
    format = ARCHIVE_EXT.find(([ext]) => url.pathname.endsWith(ext))?.[1];
    if (!format) {
      return { kind: "other", why: "an HTTP source that is not a .tar.gz, .tgz or .zip archive" };
    }
  }
  return { kind: "archive", url, format, subdir };
}
