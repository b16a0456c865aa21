import type { Actions, PageServerLoad } from './$types';
import { fail } from '@sveltejs/kit';
import { act, run } from '$lib/server/db';
import { compact, jsonField } from '$lib/server/forms';

export const load: PageServerLoad = async ({ locals }) =>
  run(locals, async (tx) => ({ models: [...(await tx`select * from admin.models order by name`)] }));

const price = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  return s === '' ? undefined : Math.round(Number(s) * 1e6); // USD per 1M tokens → micro-USD per 1M tokens
};

/**
 * The image prices field: "size=USD" pairs, comma-separated ("1024x1024=0.04, 1024x1024/hd=0.08,
 * default=0.02") → micro-USD per image by size; empty = unchanged, "none" clears them. A pair that
 * is not one goes on as written, for admin.model_upsert to refuse by name.
 */
const imagePrices = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  if (s === '') return undefined;
  if (s.toLowerCase() === 'none') return {};
  return Object.fromEntries(
    s.split(',').map((x) => x.trim()).filter(Boolean).map((pair) => {
      const [size, usd] = pair.split('=').map((y) => y?.trim());
      const n = Number(usd);
      return [size ?? pair, usd !== undefined && usd !== '' && Number.isFinite(n) ? Math.round(n * 1e6) : usd ?? pair];
    }),
  );
};

const modelArgs = (f: FormData) =>
  compact({
    name: String(f.get('name') ?? '').trim(),
    input_price: price(f.get('input_price')),
    output_price: price(f.get('output_price')),
    cached_input_price: price(f.get('cached_input_price')),
    cache_write_price: price(f.get('cache_write_price')),
    per_call_price: price(f.get('per_call_price')),
    // The media endpoints' units: USD per 1M characters, per audio second, per search unit.
    image_prices: imagePrices(f.get('image_prices')),
    character_price: price(f.get('character_price')),
    audio_second_price: price(f.get('audio_second_price')),
    search_unit_price: price(f.get('search_unit_price')),
  });

/** The fallbacks field: model names, comma-separated, in order; empty = unchanged, "none" clears them. */
const fallbacks = (v: FormDataEntryValue | null) => {
  const s = String(v ?? '').trim();
  if (s === '') return undefined;
  return s.toLowerCase() === 'none' ? [] : s.split(',').map((x) => x.trim()).filter(Boolean);
};

const tableText = async (f: FormData) => {
  const file = f.get('file');
  return file instanceof File && file.size ? await file.text() : String(f.get('json') ?? '');
};

/** A date field (UTC day) as a timestamp; SQL says if it is not one. */
const day = (v: FormDataEntryValue | null, fallback: Date) => {
  const s = String(v ?? '').trim();
  return s === '' ? fallback.toISOString().slice(0, 10) : s;
};

export const actions: Actions = {
  // The dry run (admin.price_preview): the period's ledger under the entered prices, nothing applied.
  // "what" says which form it came from: one model's prices, or a whole table.
  preview: async ({ request, locals }) => {
    const f = await request.formData();
    const what = String(f.get('what') ?? 'table');
    const text = what === 'table' ? await tableText(f) : '';
    if (what === 'table' && !text.trim()) return fail(400, { code: 'BADIN', field: 'json', message: 'Choose a price table file or paste one before previewing it.' });
    const since = day(f.get('since'), new Date(Date.now() - 30 * 86400000));
    const until = day(f.get('until'), new Date(Date.now() + 86400000));
    return act(locals, async (tx) => {
      const table = what === 'table' ? jsonField(text, 'json') : { models: [modelArgs(f)] };
      const rows = [...(await tx`select * from admin.price_preview(${tx.json(table as never)}, ${since}::date, ${until}::date)`)];
      return { preview: { what, json: text, model: what === 'table' ? null : modelArgs(f), since, until, rows } };
    });
  },
  save: async ({ request, locals }) => {
    const f = await request.formData();
    return act(locals, async (tx) => {
      const args = compact({ ...modelArgs(f), fallbacks: fallbacks(f.get('fallbacks')) });
      await tx`select admin.model_upsert(${tx.json(args as never)})`;
      return { done: `Saved ${args.name}.` };
    });
  },
  // All of a model's prices go; admission then treats it as unpriced (admin.model_price_clear).
  clear: async ({ request, locals }) => {
    const f = await request.formData();
    const name = String(f.get('name') ?? '');
    return act(locals, async (tx) => {
      await tx`select admin.model_price_clear(${name})`;
      return { done: `Cleared the prices of ${name}: it is unpriced now, so requests for it are refused unless AllowUnpricedModels is on.` };
    });
  },
  // For good: refused, unlisted, never a fallback again; prices and history kept (admin.model_archive).
  archive: async ({ request, locals }) => {
    const f = await request.formData();
    const name = String(f.get('name') ?? '');
    return act(locals, async (tx) => {
      await tx`select admin.model_archive(${name})`;
      return { done: `Archived ${name}: requests for it are refused and it is no longer listed; its prices and history stay.` };
    });
  },
  import: async ({ request, locals }) => {
    const f = await request.formData();
    const text = await tableText(f);
    if (!text.trim()) return fail(400, { code: 'BADIN', field: 'json', message: 'Choose a price table file or paste one (the format of Export JSON) before importing.' });
    return act(locals, async (tx) => {
      const [{ n }] = await tx`select admin.prices_import(${tx.json(jsonField(text, 'json') as never)}) as n`;
      return { done: `Imported ${n} model(s).` };
    });
  },
};
