// The TypeScript declarations compile in strict mode and fit the documented use (usage.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const here = dirname(fileURLToPath(import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

test('realtime.d.ts compiles with --strict and types the documented use', () => {
  const done = spawnSync(process.execPath, [tsc, '--strict', '--noEmit', '--target', 'es2022',
    '--module', 'nodenext', '--moduleResolution', 'nodenext', '--lib', 'es2022,dom',
    join(here, 'usage.ts')], { encoding: 'utf8' });
  assert.equal(done.status, 0, done.stdout + done.stderr);
});
