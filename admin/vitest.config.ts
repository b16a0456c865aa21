import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  test: {
    root: fileURLToPath(new URL('.', import.meta.url)),
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // One throwaway database; the SQL tests and the browser run share it, so files run in turn.
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 180000,
  },
});
