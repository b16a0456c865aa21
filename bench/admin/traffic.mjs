// Real-looking traffic for the admin page-speed measurement (issue 21): users, keys, models and
// channels, then N finished requests spread over the 24 hours before `now` and their ledger rows,
// written with `insert ... select from generate_series` (seconds, not the hours the gateway would
// need), then the rollup job as pg_cron last ran it, 5 minutes ago. Used by
// admin/test/page-speed.test.ts (200k rows) and bench/admin/pages.mjs (2M, by hand).
/* why these spreads: a rollup's size depends on how many (user, key, model, channel) combinations
   an hour holds, so the distribution matters as much as the count. Key activity is skewed (the key
   index is n·u³, a few keys send most traffic, as with real tenants), models too (n·u²), and each
   model is served by two channels (80/20), so an hour holds a few thousand combinations. */

/** Generates the rows; `sql` is a superuser connection to the database. Returns what it made. */
export async function generateTraffic(sql, { rows = 200_000, users = 300, keysPerUser = 2, models = 8, now = new Date() } = {}) {
  await sql`select private.partitions_maintain(${now})`; // today's and yesterday's partitions, as the job makes them
  await sql`insert into private.users (username) select 'load-user-' || g from generate_series(1, ${users}::int) g`;
  await sql`insert into private.api_keys (user_id, name, key_hash, key_prefix)
            select u.id, 'load key ' || k, sha256(convert_to('load-key-' || u.id || '-' || k, 'UTF8')), 'sk-load' || u.id || '.' || k
              from private.users u cross join generate_series(1, ${keysPerUser}::int) k where u.username like 'load-user-%'`;
  await sql`insert into private.models (name, input_price, output_price)
            select 'load-model-' || g, 1000000 * g, 3000000 * g from generate_series(1, ${models}::int) g`;
  await sql`insert into private.channels (name, type, base_url, models)
            select 'load-channel-' || g, 'openai', 'https://upstream-' || g || '.example.com', array['load-model-' || (1 + (g - 1) / 2)]
              from generate_series(1, ${models * 2}::int) g`;
  const keys = (await sql`select k.id, k.user_id from private.api_keys k where k.name like 'load key %' order by k.id`).map((k) => [Number(k.id), Number(k.user_id)]);
  const channels = (await sql`select id from private.channels where name like 'load-channel-%' order by id`).map((c) => Number(c.id));
  await insertRequests(sql, { rows, now, keys, channels, models });
  await sql`insert into private.ledger (request_id, created_at, user_id, key_id, channel_id, model, prompt_tokens, completion_tokens,
                                        input_price, output_price, amount_micros, usage_source, folded)
            select r.id, r.finished_at, r.user_id, r.key_id, r.channel_id, r.model, r.prompt_tokens, r.completion_tokens,
                   0, 0, r.cost_micros, 'upstream', true
              from private.requests r where r.cost_micros > 0 and r.model like 'load-model-%'`;
  await sql`analyze private.requests`;
  await sql`analyze private.ledger`;
  /* why 5 minutes ago: pg_cron runs the rollup every 5 minutes; just before its next run the log
     half the pages read is at its largest (the rollup's cut is a minute before its run). */
  const t = Date.now();
  const [{ r }] = await sql`select private.usage_rollup(${new Date(now.getTime() - 5 * 60_000)}) as r`;
  return { rows, keys: keys.length, channels: channels.length, models, rollupMs: Date.now() - t, rollup: r };
}

/** The request log: one statement, every value drawn per row, rows stored in time order. */
async function insertRequests(sql, { rows, now, keys, channels, models }) {
  const keyIds = keys.map((k) => k[0]);
  const userIds = keys.map((k) => k[1]);
  await sql`
    insert into private.requests (id, created_at, finished_at, key_id, user_id, group_name, endpoint, model, stream, status, http_status,
                                  channel_id, upstream_model, prompt_tokens, completion_tokens, total_tokens, usage_source,
                                  cost_micros, error_code, ttfb_ms, latency_ms, cache)
    select gen_random_uuid(), t.at, t.at + make_interval(secs => t.lat / 1000.0), (${keyIds}::bigint[])[t.k], (${userIds}::bigint[])[t.k],
           'default', 'chat/completions', 'load-model-' || t.m, t.u4 < 0.6, t.status,
           case t.status when 'ok' then 200 when 'error' then 502 when 'refused' then 429 else 499 end,
           case when t.status = 'refused' then null else (${channels}::bigint[])[2 * t.m - (t.u5 < 0.8)::int] end,
           'load-model-' || t.m, t.pt, t.ct, t.pt + t.ct, 'upstream',
           case when t.status = 'ok' then (t.pt * t.m + t.ct * 3 * t.m)::bigint else 0 end,
           case when t.status = 'error' then 'upstream_error' end,
           least(t.lat, 40 + (t.u6 * 400)::int), t.lat,
           case when t.u6 < 0.3 then null when t.u6 < 0.8 then 'miss' when t.u6 < 0.95 then 'exact' else 'semantic' end
      from (select ${now}::timestamptz - make_interval(secs => random() * 86400) as at,
                   1 + floor(${keyIds.length}::int * power(random(), 3))::int as k,
                   1 + floor(${models}::int * power(random(), 2))::int as m,
                   case when s.u < 0.95 then 'ok' when s.u < 0.98 then 'error' when s.u < 0.99 then 'aborted' else 'refused' end as status,
                   (exp(5 + random() * 3))::int as lat,   -- 150 ms .. 3 s, most of them short
                   50 + (random() * 2000)::int as pt, 10 + (random() * 800)::int as ct,
                   random() as u4, random() as u5, random() as u6
              from (select g, random() as u from generate_series(1, ${rows}::int) g) s) t
     order by t.at`;   // the gateway writes the log as requests finish: in time order on disk, as here
}

/**
 * Older days of the same traffic, as their rollups: the last 24 rolled-up hours copied into each of
 * the `days - 1` days before them (the dashboard reads nothing but the rollup there; generating the
 * log itself for 30 days at 2M a day would take an hour and 60M rows). The day-old copy of the hour
 * in progress would land on the window's oldest, partial hour: that one keeps what the log holds.
 */
export async function spreadRollups(sql, { days = 30 } = {}) {
  if (days <= 1) return { usageRows: 0, latencyRows: 0, dimRows: 0 };
  const [{ n: usageRows }] = await sql`
    with ins as (
      insert into private.usage_hourly (hour, user_id, key_id, model, channel_id, requests, errors, prompt_tokens, completion_tokens,
                                             cost_micros, latency_ms_sum, latency_p50_ms, latency_p95_ms, cache_exact, cache_semantic, cache_miss, cache_bypass)
      select h.hour - make_interval(days => d), h.user_id, h.key_id, h.model, h.channel_id, h.requests, h.errors, h.prompt_tokens, h.completion_tokens,
             h.cost_micros, h.latency_ms_sum, h.latency_p50_ms, h.latency_p95_ms, h.cache_exact, h.cache_semantic, h.cache_miss, h.cache_bypass
        from (select * from private.usage_hourly where hour > (select max(hour) from private.usage_hourly) - interval '24 hours') h
       cross join generate_series(1, ${days - 1}::int) d
       where h.hour - make_interval(days => d) < (select min(hour) from private.usage_hourly)
      returning 1)
    select count(*)::int as n from ins`;
  const [{ n: latencyRows }] = await sql`
    with ins as (
      insert into private.latency_hourly (hour, requests, errors, p50_ms, p95_ms, buckets, covered_to)
      select h.hour - make_interval(days => d), h.requests, h.errors, h.p50_ms, h.p95_ms, h.buckets, h.hour - make_interval(days => d) + interval '1 hour'
        from (select * from private.latency_hourly where hour > (select max(hour) from private.latency_hourly) - interval '24 hours') h
       cross join generate_series(1, ${days - 1}::int) d
       where h.hour - make_interval(days => d) < (select min(hour) from private.latency_hourly)
      returning 1)
    select count(*)::int as n from ins`;
  // Their rollup per dimension, by the hour and by the day, as the job's runs would have built it.
  const [{ n: dimRows }] = await sql`select private.usage_dims_rollup(min(hour), max(hour), (select max(covered_to) from private.latency_hourly)) as n
                                       from private.usage_hourly`;
  await sql`analyze private.usage_hourly`;
  await sql`analyze private.latency_hourly`;
  await sql`analyze private.usage_by_dim`;
  return { usageRows, latencyRows, dimRows };
}
