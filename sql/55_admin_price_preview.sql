-- Pricing dry-run (issue 17): what a period's ledger would have cost under a new price table,
-- before it is applied. Called from psql and by the admin panel's Prices page ("Preview").

-- admin.price_preview: p_prices is a price table as admin.prices_import takes it
-- ({"models": [...]}, the admin.prices_export format) and may also carry
-- "groups": [{"name", "price_multiplier"}] (as admin.group_upsert takes them). Returns, for the
-- ledger rows created in [p_since, p_until), what they cost (old_micros: what was billed) beside
-- what they would cost with the new table applied (new_micros) and the difference, per
-- (user, group, model) ('detail') and summed per user, model, group and in total (dimension).
/* why the import is run and rolled back: "the new prices" are exactly what admin.prices_import and
   admin.group_upsert would leave in the tables (absent fields keep their value, the same checks,
   the same errors), so they are applied in a subtransaction, the ledger is priced against them with
   THE cost function (private.card_cost_micros, as settlement bills), and the subtransaction is rolled
   back (SQLSTATE PRVWX, caught here, never raised to the caller). Nothing of it stays.
   Each row is priced as settlement would price it now: a cache hit at SemanticCacheHitPriceRatio, the
   semantic cache's embedding call at the embedding model's price, rows billed nothing (an error
   before any content) stay at 0, and rows the reaper settled at their reservation ('expired') are
   priced by their recorded tokens. Channel multipliers are those recorded on each row. */
create or replace function admin.price_preview(p_prices jsonb, p_since timestamptz, p_until timestamptz)
returns table (dimension text, user_id bigint, username text, group_name text, model text, requests bigint,
               old_micros bigint, new_micros bigint, diff_micros bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_rows jsonb;
  v_opt jsonb := private.options_pick('SemanticCacheHitPriceRatio', 'SemanticCacheEmbeddingModel');
  v_group jsonb;
begin
  if p_since is null or p_until is null or p_since >= p_until then
    raise exception using errcode = 'BADIN', column = 'p_since',
      message = 'The preview needs a period: p_since before p_until (ledger rows created from p_since up to p_until).';
  end if;
  if p_prices is null or jsonb_typeof(p_prices) <> 'object' then
    raise exception using errcode = 'BADIN', column = 'models',
      message = 'Expected a price table: {"models": [{"name": ..., "input_price": ...}], "groups": [{"name": ..., "price_multiplier": ...}]}.';
  end if;
  if p_prices ? 'groups' and jsonb_typeof(p_prices -> 'groups') <> 'array' then
    raise exception using errcode = 'BADIN', column = 'groups', message = '"groups" is a list of {"name", "price_multiplier"}.';
  end if;
  begin
    perform admin.prices_import(jsonb_build_object('models', coalesce(p_prices -> 'models', '[]'::jsonb))
                                || case when p_prices ? 'format' then jsonb_build_object('format', p_prices -> 'format') else '{}'::jsonb end);
    for v_group in select * from jsonb_array_elements(coalesce(p_prices -> 'groups', '[]'::jsonb)) loop
      if not exists (select 1 from private.groups g where g.name = v_group ->> 'name') then
        raise exception using errcode = 'BADIN', column = 'groups', message = format('No group named "%s".', v_group ->> 'name');
      end if;
      perform admin.group_upsert(v_group);
    end loop;
    with priced as (
      select l.user_id, l.group_name, l.model, l.amount_micros as old,
             -- (as settlement prices a ledger row: private.settle's answer_amount, sql/35_settlement.sql)
             case
               when l.usage_source = 'none' then 0
               when l.cache in ('exact', 'semantic') then
                 private.card_cost_micros(c.card, 'hit', null, l.prompt_tokens, l.completion_tokens, l.cached_tokens,
                                          l.cache_write_tokens, l.units)
               else private.card_cost_micros(c.card, 'answer', l.channel_multiplier, l.prompt_tokens, l.completion_tokens,
                                             l.cached_tokens, l.cache_write_tokens, l.units)
             end
             + case when l.embedding_tokens > 0 and em.name is not null
                    then private.card_cost_micros(c.card, 'embedding', null, l.embedding_tokens, 0, 0, 0)
                    else l.embedding_micros end as new
        from private.ledger l
        left join private.models m on m.name = l.model
        left join private.groups g on g.name = l.group_name
        left join private.models em on em.name = nullif(v_opt ->> 'SemanticCacheEmbeddingModel', '')
        cross join lateral (
          select row(m.input_price, m.output_price, m.cached_input_price, m.cache_write_price, m.per_call_price,
                     coalesce(g.price_multiplier, l.group_multiplier), (v_opt ->> 'SemanticCacheHitPriceRatio')::numeric,
                     em.input_price, em.per_call_price,
                     -- (a media request's units keep the unit price they were billed at: the ledger
                     -- does not say which image size it was)
                     l.unit_price)::private.price_card as card) c
       where l.created_at >= p_since and l.created_at < p_until
         and not exists (select 1 from admin.internal_users i where i.id = l.user_id)   -- channel tests are not spend
    ), sums as (
      select case
               when grouping(p.user_id, p.group_name, p.model) = 0 then 'detail'
               when grouping(p.user_id) = 0 then 'user'
               when grouping(p.model) = 0 then 'model'
               when grouping(p.group_name) = 0 then 'group'
               else 'total'
             end as dimension,
             p.user_id, p.group_name, p.model, count(*) as requests, sum(p.old)::bigint as old_micros, sum(p.new)::bigint as new_micros
        from priced p
       group by grouping sets ((p.user_id, p.group_name, p.model), (p.user_id), (p.model), (p.group_name), ())
    )
    select coalesce(jsonb_agg(to_jsonb(s) || jsonb_build_object('username', u.username)), '[]'::jsonb) into v_rows
      from sums s left join private.users u on u.id = s.user_id;
    raise exception using errcode = 'PRVWX', message = 'price preview: roll back';
  exception when sqlstate 'PRVWX' then
    null;   -- the import is undone; v_rows keeps what was computed
  end;
  return query
    select x.dimension, x.user_id, x.username, x.group_name, x.model, x.requests, x.old_micros, x.new_micros,
           x.new_micros - x.old_micros
      from jsonb_to_recordset(v_rows) as x(dimension text, user_id bigint, username text, group_name text, model text,
                                            requests bigint, old_micros bigint, new_micros bigint)
     order by array_position(array['total', 'model', 'group', 'user', 'detail'], x.dimension),
              abs(x.new_micros - x.old_micros) desc, x.model, x.user_id;
end
$$;

comment on function admin.price_preview(jsonb, timestamptz, timestamptz) is
  E'Dry run of a price table ({"models": [...] as admin.prices_import, "groups": [{"name", "price_multiplier"}]}): the ledger rows created from p_since to p_until priced as billed (old_micros) and under the new table (new_micros, by private.card_cost_micros), per user/group/model (dimension ''detail'') and summed per user, model, group and in total. Changes nothing.';
