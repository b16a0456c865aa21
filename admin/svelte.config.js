// SvelteKit config: built with adapter-node into admin/build, served by scripts/start.mjs on :3001.
import adapter from '@sveltejs/adapter-node';

/** @type {import('@sveltejs/kit').Config} */
export default {
  kit: {
    adapter: adapter({ out: 'build' }),
    // SvelteKit checks that form posts come from this origin (on by default), on top of SameSite=Strict.
  },
};
