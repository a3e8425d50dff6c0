/**
 * X.509 certificates: `@peculiar/x509` (MIT), which builds, signs (with
 * WebCrypto) and parses certificates. Only `repoxy tls init` uses it, and
 * lib/commands/mod.ts imports that command on its first run, so a serving
 * process never loads this module (tests/lazy_load_test.ts).
 *
 * The library resolves its algorithm providers through `tsyringe`, which
 * refuses to load without the `Reflect.getMetadata` polyfill: `reflect-metadata`
 * (Apache-2.0) is imported first for that reason and nothing else.
 * @module
 */
import "reflect-metadata";

export * as x509 from "@peculiar/x509";
