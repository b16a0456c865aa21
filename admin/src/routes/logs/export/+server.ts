import type { RequestHandler } from './$types';
import { run } from '$lib/server/db';
import { parseFilters, where } from '../filters';

const COLS = ['id', 'created_at', 'status', 'http_status', 'endpoint', 'model', 'upstream_model', 'stream', 'username', 'key_id', 'channel_id',
  'prompt_tokens', 'completion_tokens', 'total_tokens', 'usage_source', 'cost_micros', 'ttfb_ms', 'latency_ms', 'error_code'];

const cell = (v: unknown) => {
  if (v === null || v === undefined) return '';
  const s = v instanceof Date ? v.toISOString() : String(v);
  // Quote, and defuse spreadsheet formulas.
  return /[",\n\r]|^[=+\-@]/.test(s) ? `"${(/^[=+\-@]/.test(s) ? `'${s}` : s).replace(/"/g, '""')}"` : s;
};

export const GET: RequestHandler = async ({ locals, url }) => {
  const { filters, problems } = parseFilters(url.searchParams);
  if (problems.length) return new Response(`${problems.join('\n')}\n`, { status: 400, headers: { 'content-type': 'text/plain; charset=utf-8' } });
  const rows = await run(locals, (tx) => tx`
    select r.id, r.created_at, r.status, r.http_status, r.endpoint, r.model, r.upstream_model, r.stream, u.username, r.key_id, r.channel_id,
           r.prompt_tokens, r.completion_tokens, r.total_tokens, r.usage_source, r.cost_micros, r.ttfb_ms, r.latency_ms, r.error_code
      from admin.requests r left join admin.users u on u.id = r.user_id
     where ${where(tx, filters)} order by r.created_at desc limit 100000`);
  const body = [COLS.join(','), ...rows.map((r) => COLS.map((c) => cell(r[c])).join(','))].join('\n') + '\n';
  return new Response(body, { headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': 'attachment; filename="elygate-requests.csv"' } });
};
