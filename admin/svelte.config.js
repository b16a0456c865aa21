// SvelteKit config: built with adapter-node into admin/build, served by scripts/start.mjs on :3001.
import adapter from '@sveltejs/adapter-node';

/** @type {import('@sveltejs/kit').Config} */
export default {
  kit: {
    adapter: adapter({ out: 'build' }),
    // Form posts must come from the panel's own origin, on top of SameSite=Strict cookies. The
    // check lives in src/hooks.server.ts (rule: src/lib/server/origin.js), which says how to fix a
    // wrong origin; '*' only switches off SvelteKit's built-in one, which answers a bare 403.
    csrf: { trustedOrigins: ['*'] },
  },
};
