// Writes test/generated/openapi.ts: the TypeScript types of the document that `vevee openapi`
// prints (the binary is $VEVEE_BIN, else the repository's debug build).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.VEVEE_BIN ?? resolve(here, "../../../target/debug/vevee");
const document = JSON.parse(execFileSync(binary, ["openapi"], { encoding: "utf8" }));
const ast = await openapiTS(document);
mkdirSync(resolve(here, "generated"), { recursive: true });
writeFileSync(resolve(here, "generated/openapi.ts"), astToString(ast));
