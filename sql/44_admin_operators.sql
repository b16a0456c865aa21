-- Operator mutations the panel needed after issue 21 ("what operators expect and cannot do yet").
-- Called by the admin panel (admin/src/routes/prices) and from psql; documented in docs/psql.md.

-- admin.model_price_clear: removes a model's prices (all of them, or the named ones).
/* why a function of its own: admin.model_upsert treats an absent field as "unchanged", which is
   what a form with empty fields means, so neither the panel nor an import could ever take a price
   away again. A model left without input, output and per-call price is unpriced: admission refuses
   it (NOPRC) unless AllowUnpricedModels is on, exactly as for a model never priced. */
create or replace function admin.model_price_clear(p_name text, p_fields text[] default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_all constant text[] := array['input_price', 'output_price', 'cached_input_price', 'cache_write_price', 'per_call_price'];
  v_fields text[] := coalesce(p_fields, v_all);
  v_bad text;
  v_m private.models;
begin
  select string_agg(format('"%s"', f), ', ') into v_bad from unnest(v_fields) f where not (f = any(v_all));
  if v_bad is not null then
    raise exception using errcode = 'BADIN', column = 'fields',
      message = format('Unknown price field(s) %s.', v_bad), hint = format('Price fields: %s.', array_to_string(v_all, ', '));
  end if;
  update private.models m set
    input_price        = case when 'input_price' = any(v_fields) then null else m.input_price end,
    output_price       = case when 'output_price' = any(v_fields) then null else m.output_price end,
    cached_input_price = case when 'cached_input_price' = any(v_fields) then null else m.cached_input_price end,
    cache_write_price  = case when 'cache_write_price' = any(v_fields) then null else m.cache_write_price end,
    per_call_price     = case when 'per_call_price' = any(v_fields) then null else m.per_call_price end
  where m.name = p_name
  returning * into v_m;
  if not found then
    raise exception using errcode = 'BADIN', column = 'name', message = format('No model named "%s" has a price to clear.', p_name);
  end if;
  return to_jsonb(v_m);
end
$$;
comment on function admin.model_price_clear(text, text[]) is
  E'Clears a model''s prices: all of them, or only the fields named (input_price, output_price, cached_input_price, cache_write_price, per_call_price). A model with no input, output or per-call price left is unpriced (refused unless AllowUnpricedModels).';

-- admin.key_archive: retires a key for good, keeping its history (requests, ledger, usage).
/* why next to revoke: revoked says "stop it now" (a leak); archived says "this key is finished",
   and the Keys page can leave archived keys out of its list. Both refuse every request (KREVK,
   private.key_verify). Channels and users are archived through their update functions
   ("status": "archived"); a key has no status field in admin.key_update, hence this function. */
create or replace function admin.key_archive(p_key_id bigint)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update private.api_keys k set status = 'archived', revoked_at = coalesce(k.revoked_at, now())
   where k.id = p_key_id and k.status <> 'archived'
     and k.user_id not in (select i.id from admin.internal_users i)
  returning true
$$;
comment on function admin.key_archive(bigint) is
  E'Archives a key (active or revoked): every request with it is refused (KREVK, "has been archived"); its requests and ledger stay. Returns true, or null if it was already archived or unknown.';

-- admin.model_archive / admin.group_archive: retire a model or a group for good, keeping history.
/* why for good, like a channel's or a key's archive: an operator archives what is finished (a
   model a provider retired, a plan no longer sold). Requests for an archived model are refused
   (NOMDL, "has been archived"), it is left out of /v1/models and of every fallback list; an
   archived group's users are refused (UDSBL, "in the group ..., which has been archived") and
   cannot be moved into it. Prices, usage, ledger and request rows stay. */
create or replace function admin.model_archive(p_name text)
returns boolean
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update private.models m set archived_at = now(), updated_at = now()
   where m.name = p_name and m.archived_at is null
  returning true
$$;
comment on function admin.model_archive(text) is
  E'Archives a model for good: requests for it are refused (NOMDL), it is not listed by /v1/models nor tried as a fallback; its prices and history stay. Returns true, or null if unknown or already archived.';

create or replace function admin.group_archive(p_name text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_name = 'default' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'The group "default" cannot be archived: new users join it. Move its users and channels elsewhere instead.';
  end if;
  update private.groups g set archived_at = now() where g.name = p_name and g.archived_at is null;
  return found;
end
$$;
comment on function admin.group_archive(text) is
  E'Archives a group for good: its users'' requests are refused (UDSBL, "in the group ..., which has been archived"); its history stays. The default group cannot be archived. Returns whether it was archived now.';

