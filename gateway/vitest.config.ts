import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  test: {
    root: fileURLToPath(new URL('.', import.meta.url)),
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // One throwaway database for the run; files run one after another (as graphile runs jest -i),
    // since HTTP tests share the gateway's database and SQL tests assert on global state.
    fileParallelism: false,
    testTimeout: 30000,
    hookTimeout: 120000,
  },
});
