/**
 * Name resolution: `node:dns` `lookup` (getaddrinfo, the same answers the
 * system gives every other program, /etc/hosts included).
 * @module
 */
export { lookup } from "node:dns/promises";
