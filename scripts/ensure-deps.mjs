// Installs the project's npm dependencies when they are missing or older than package-lock.json.
// Runs before `npm start` and `npm test` (prestart/pretest), with nothing but Node itself.
import { existsSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const marker = join(root, 'node_modules', '.elygate-deps');

function fingerprint() {
  const h = createHash('sha256');
  for (const f of ['package.json', 'package-lock.json', 'gateway/package.json', 'admin/package.json']) {
    const p = join(root, f);
    if (existsSync(p)) h.update(f).update(readFileSync(p));
  }
  return h.digest('hex');
}

const want = fingerprint();
const have = existsSync(marker) ? readFileSync(marker, 'utf8') : '';
if (want !== have) {
  console.log('Installing npm dependencies (first run, or package files changed)…');
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('npm install failed; see the output above.');
    process.exit(r.status ?? 1);
  }
}

// Bun comes from the npm registry (package "bun"); its postinstall puts the real binary in place.
// If install scripts were skipped, run that step ourselves.
const bun = join(root, 'node_modules', 'bun', 'bin', 'bun.exe');
function bunWorks() {
  try {
    execFileSync(bun, ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}
if (!existsSync(bun) || !bunWorks()) {
  console.log('Setting up Bun from the npm package…');
  const r = spawnSync(process.execPath, ['install.js'], { cwd: join(root, 'node_modules', 'bun'), stdio: 'inherit' });
  if (r.status !== 0 || !bunWorks()) {
    console.error('Bun could not be set up from node_modules/bun; try `npm rebuild bun`.');
    process.exit(1);
  }
}
if (want !== have || !existsSync(marker) || statSync(marker).size === 0) writeFileSync(marker, want);
