// Validates an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser):
// the JSON schema of the spec plus its semantic rules (references resolve, operations point at
// channel messages...). Usage: node tools/validate-asyncapi.mjs <file>. Prints the diagnostics
// as JSON; exits 1 when any is an error.
import { readFileSync } from 'node:fs';

import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2], 'utf8');
const diagnostics = await new Parser().validate(text);
const report = diagnostics.map((d) => ({ severity: d.severity, code: d.code, message: d.message,
  path: d.path.join('/') }));
console.log(JSON.stringify(report, null, 1));
process.exit(report.some((d) => d.severity === 0) ? 1 : 0);
