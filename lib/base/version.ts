/**
 * The Repoxy version, taken from deno.json so there is one place to bump it.
 * A static JSON import is embedded by `deno compile` and `deno bundle`.
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };

/** Repoxy's version string. */
export const VERSION: string = denoJson.version;

/** The User-Agent Repoxy sends upstream. */
export const USER_AGENT = `Repoxy/${VERSION}`;
