/**
 * Redaction of URLs before they reach logs or disk: presigned download URLs
 * carry their credential in the query string, so the query and any userinfo
 * are replaced by a marker.
 * @module
 */

/** Marker that replaces a removed query string. */
export const REDACTED = "REDACTED";

/**
 * Returns `url` without userinfo and with its query replaced by `?REDACTED`
 * (the fragment is dropped). Strings that are not absolute URLs are cut at `?`.
 */
export function redactUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    const s = String(url);
    const q = s.search(/[?#]/);
    return q === -1 ? s : `${s.slice(0, q)}${s[q] === "?" ? `?${REDACTED}` : ""}`;
  }
  u.username = "";
  u.password = "";
  u.hash = "";
  if (u.search) u.search = `?${REDACTED}`;
  return u.href;
}
