// `npm run test:faults`: the fault suite (gateway/test/faults/*.fault.ts) against the real gateway,
// a real PostgreSQL and the mock upstream. Each scenario prints its figures ("[fault] …").
//   node scripts/faults.mjs           full run (the 10-second database restart, 10,000 mutations…)
//   node scripts/faults.mjs --short   what `npm test` (and so CI) runs: same scenarios, smaller counts
// Extra arguments go to vitest (e.g. a file name filter).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const short = argv.includes('--short');
const rest = argv.filter((a) => a !== '--short');
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
// Scenario 7's evidence (the run's plaintext keys, of a throwaway database) goes into a folder of
// this run's own, removed afterwards, also when a filter skipped 7-secrets, which removes its own.
// Only this run's: another run on the machine keeps its evidence until its scenario 7 has read it.
const evidence = mkdtempSync(join(tmpdir(), 'elygate-fault-evidence-'));
const child = spawn(process.execPath, [vitest, 'run', '--config', join(root, 'gateway', 'vitest.faults.config.ts'), ...rest], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, ELYGATE_FAULTS: short ? 'short' : 'full', ELYGATE_FAULTS_EVIDENCE: evidence },
});
// Ctrl-C or a stop: vitest is told, and the evidence is removed once it has exited.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('close', (code) => {
  rmSync(evidence, { recursive: true, force: true });
  process.exit(code ?? 1);
});
