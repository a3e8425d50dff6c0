/**
 * Path helpers. The product card names `@std/path`; JSR is unreachable from our
 * build machines, so this one module maps the same jobs onto `node:path`.
 * Swapping to `@std/path` later touches only this file.
 * @module
 */
export { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
export { fileURLToPath as fromFileUrl } from "node:url";
