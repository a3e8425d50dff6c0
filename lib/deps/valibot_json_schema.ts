/**
 * `@valibot/to-json-schema`: turns the config schema into the JSON Schema
 * file shipped as `repoxy.schema.json`. Only the generator script and tests
 * import it; the server never loads it.
 * @module
 */
export { toJsonSchema } from "@valibot/to-json-schema";
