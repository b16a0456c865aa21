// The fault suite (npm run test:faults): kills, restarts and hostile input against the real
// gateway. Kept out of the main suite's glob (files end in .fault.ts) because it is slow and
// stops processes; `npm test` runs it afterwards in its short form (ELYGATE_FAULTS=short).
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// Files run in name order (1-…, 2-…): 7-secrets scans what the others left behind.
class ByName extends BaseSequencer {
  async sort(files: TestSpecification[]) {
    return [...files].sort((a, b) => a.moduleId.localeCompare(b.moduleId));
  }
}
import { fileURLToPath } from 'node:url';

const short = process.env.ELYGATE_FAULTS === 'short';

export default defineConfig({
  test: {
    root: fileURLToPath(new URL('.', import.meta.url)),
    include: ['test/faults/**/*.fault.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    fileParallelism: false,
    testTimeout: short ? 90000 : 300000,
    hookTimeout: 120000,
    // The figures each scenario prints are the point of the run: show them.
    silent: false,
    reporters: ['default'],
    sequence: { sequencer: ByName },
  },
});
