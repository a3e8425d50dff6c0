/**
 * ASN.1 schemas of RFC 5280 (`@peculiar/asn1-x509`, `@peculiar/asn1-schema`,
 * MIT): the structures `@peculiar/x509` (lib/deps/x509.ts) is built on, for the
 * one extension it has no class for (name constraints). Loaded with it, only by
 * `repoxy tls init`.
 * @module
 */
export { AsnConvert } from "@peculiar/asn1-schema";
export {
  GeneralName,
  GeneralSubtree,
  GeneralSubtrees,
  id_ce_nameConstraints,
  NameConstraints,
} from "@peculiar/asn1-x509";
