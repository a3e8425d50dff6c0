/**
 * Command-line parsing (stands in for `@std/cli`).
 * @module
 */
export { parseArgs } from "node:util";
