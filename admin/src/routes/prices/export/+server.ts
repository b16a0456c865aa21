import type { RequestHandler } from './$types';
import { run } from '$lib/server/db';

export const GET: RequestHandler = async ({ locals }) => {
  const table = await run(locals, async (tx) => (await tx`select admin.prices_export() as t`)[0].t);
  return new Response(JSON.stringify(table, null, 2), {
    headers: { 'content-type': 'application/json', 'content-disposition': 'attachment; filename="elygate-prices.json"' },
  });
};
