/**
 * The SHA256SUMS document a provider release publishes (`sha256sum` output):
 * which archive files the release has, and the sha256 of each.
 * @module
 */

const SHA256SUMS_LINE = /^([0-9a-fA-F]{64}) [ *]?(\S.*)$/;

/**
 * Parses a SHA256SUMS document: one `<64 hex digits>  <filename>` per line, as
 * `sha256sum` writes it. Also accepted: a single separating space, the `*`
 * binary-mode marker, CRLF line ends and blank lines. A filename may contain
 * spaces but not start with one, so a stray third separator is an error rather
 * than part of the name.
 *
 * @returns Filename → lower-case hex digest.
 * @throws {TypeError} Naming the 1-based line number of the first malformed
 *   line, or of a filename listed twice with different digests (which of the
 *   two would be meant is unknowable).
 */
export function parseSha256Sums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") continue;
    const match = SHA256SUMS_LINE.exec(line);
    if (match === null) {
      throw new TypeError(
        `Line ${i + 1} of SHA256SUMS is not "<64 hex digits>  <filename>": ${
          JSON.stringify(line.slice(0, 120))
        }`,
      );
    }
    const digest = match[1]!.toLowerCase();
    const name = match[2]!;
    const previous = sums.get(name);
    if (previous !== undefined && previous !== digest) {
      throw new TypeError(`Line ${i + 1} of SHA256SUMS gives ${name} a second, different digest`);
    }
    sums.set(name, digest);
  }
  return sums;
}
