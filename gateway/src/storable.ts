// Text PostgreSQL can store. JSON may carry "\u0000" and lone UTF-16 surrogates ("\ud800"), and
// upstreams accept and echo both, but a jsonb or text column refuses them: an outcome carrying one
// (in an answer kept for the cache, an upstream error text, a model name) would fail its whole
// settlement batch, end in the dead-letter folder, and leave its reservation to the reaper, which
// bills all of it. Every string of an outcome is made storable before it is sent to relay_finish
// (settle.ts, storableJson): NUL and lone surrogates become U+FFFD, and the outcome says that its
// text was altered.

const UNSTORABLE = /[\u0000\ud800-\udfff]/;

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function fix(s: string): string {
  return s.replace(LONE_SURROGATE, '\ufffd').replaceAll('\u0000', '\ufffd');
}

/** True when no string in the value (nor any key) needs fixing: the common case, checked without
 *  allocating anything. */
function clean(v: unknown): boolean {
  if (typeof v === 'string') return !UNSTORABLE.test(v);
  if (!v || typeof v !== 'object' || v instanceof Date) return true;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!clean(v[i])) return false;
    return true;
  }
  for (const k in v) {
    if (!Object.hasOwn(v, k)) continue;
    if (UNSTORABLE.test(k) || !clean((v as Record<string, unknown>)[k])) return false;
  }
  return true;
}

/** The value with every string storable (a new object only where something changed). */
export function storable<T>(value: T): { value: T; altered: boolean } {
  /* why: every outcome goes through here; the copying walk below allocates an entry array per
     object, which showed in the gateway's CPU profile, and almost every outcome is clean. */
  if (clean(value)) return { value, altered: false };
  let altered = false;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      if (!UNSTORABLE.test(v)) return v;
      const fixed = fix(v);
      if (fixed !== v) altered = true;
      return fixed;
    }
    if (Array.isArray(v)) {
      let copy: unknown[] | null = null;
      v.forEach((x, i) => {
        const w = walk(x);
        if (w !== x) (copy ??= v.slice())[i] = w;
      });
      return copy ?? v;
    }
    if (v && typeof v === 'object' && !(v instanceof Date)) {
      let copy: Record<string, unknown> | null = null;
      for (const [k, x] of Object.entries(v)) {
        const w = walk(x);
        if (w !== x) (copy ??= { ...(v as Record<string, unknown>) })[k] = w;
        if (UNSTORABLE.test(k)) altered = true; // keys are ours; never expected to need this
      }
      return copy ?? v;
    }
    return v;
  };
  return { value: walk(value) as T, altered };
}
