// Builds the admin panel (vite build → admin/build) when the build is missing or older than its
// sources. Used by scripts/start.mjs and the admin test suite; `node admin/build.mjs` runs it by hand.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const adminDir = dirname(fileURLToPath(import.meta.url));
export const serverEntry = join(adminDir, 'build', 'index.js');

function newest(p) {
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(p).map((f) => newest(join(p, f))));
}

export function adminBuildStale() {
  if (!existsSync(serverEntry)) return true;
  const built = statSync(serverEntry).mtimeMs;
  const inputs = ['src', 'svelte.config.js', 'vite.config.ts', 'package.json'].map((f) => join(adminDir, f)).filter(existsSync);
  return Math.max(...inputs.map(newest)) > built;
}

export function ensureAdminBuild({ log = console.log } = {}) {
  if (!adminBuildStale()) return false;
  log('Building the admin panel (vite build)…');
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(adminDir, '..', 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn'], {
    cwd: adminDir,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (r.status !== 0) throw new Error('The admin panel build failed; see the output above.');
  log(`Admin panel built in ${((Date.now() - t0) / 1000).toFixed(1)} s.`);
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) ensureAdminBuild();
