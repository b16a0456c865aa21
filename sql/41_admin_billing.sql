-- The operator's billing API: top-ups, redemption codes, price tables, groups, and usage views.
-- Documented in docs/psql.md ("Billing").

create or replace function private.user_id_from(p_args jsonb)
returns bigint
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint;
begin
  select u.id into v_id from private.users u
   where u.id = private.arg_int(p_args, 'user_id', 1, 9223372036854775807) or u.username = p_args ->> 'username';
  if v_id is null then
    raise exception using errcode = 'BADIN', column = 'user_id', message = 'Needs an existing "user_id" or "username".';
  end if;
  return v_id;
end
$$;

-- private.wallet_adjust: the one place a wallet changes by hand, with its audit row.
create or replace function private.wallet_adjust(p_user_id bigint, p_amount bigint, p_note text)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_balance bigint;
begin
  perform private.user_editable(p_user_id);
  insert into private.wallet_credits (user_id, amount_micros, source, note)
  values (p_user_id, p_amount, case when p_amount > 0 then 'admin' else 'adjustment' end, coalesce(p_note, ''));
  update private.wallets set balance_micros = balance_micros + p_amount, updated_at = now()
   where user_id = p_user_id returning balance_micros into v_balance;
  -- Wallets have no audit trigger (the hot path writes them): the entry is written here.
  perform private.audit('wallets:' || p_user_id,
                        jsonb_build_object('user_id', p_user_id, 'balance_micros', v_balance - p_amount),
                        jsonb_build_object('user_id', p_user_id, 'balance_micros', v_balance, 'amount_micros', p_amount, 'note', coalesce(p_note, '')));
  return jsonb_build_object('user_id', p_user_id, 'amount_micros', p_amount, 'balance_micros', v_balance);
end
$$;

-- admin.wallet_credit: tops up a wallet, with an audit row.
/* why positive only: a negative top-up would debit the wallet without a word. Taking money away is
   its own call, admin.wallet_debit, which needs a note saying why. */
create or replace function admin.wallet_credit(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_amount bigint;
begin
  perform private.args_check(p_args, array['user_id', 'username', 'amount_micros', 'note'], 'admin.wallet_credit');
  v_amount := private.arg_int(p_args, 'amount_micros', -9000000000000000000, 9000000000000000000);
  if v_amount is null or v_amount = 0 then
    raise exception using errcode = 'BADIN', column = 'amount_micros', message = 'A top-up needs a positive amount ("amount_micros", 1 USD = 1000000).';
  end if;
  if v_amount < 0 then
    raise exception using errcode = 'BADIN', column = 'amount_micros',
      message = 'A top-up must be positive. To take money from a wallet, debit it (admin.wallet_debit), with a note saying why.';
  end if;
  return private.wallet_adjust(private.user_id_from(p_args), v_amount, p_args ->> 'note');
end
$$;
comment on function admin.wallet_credit(jsonb) is
  E'Tops up a wallet: {"user_id" or "username", "amount_micros" (> 0; 1 USD = 1000000), "note"}. Recorded in admin.wallet_credits. Debits: admin.wallet_debit.';

-- admin.wallet_debit: takes money from a wallet (a correction or a refund paid out), with the reason.
create or replace function admin.wallet_debit(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_amount bigint;
begin
  perform private.args_check(p_args, array['user_id', 'username', 'amount_micros', 'note'], 'admin.wallet_debit');
  v_amount := private.arg_int(p_args, 'amount_micros', 1, 9000000000000000000);
  if v_amount is null then
    raise exception using errcode = 'BADIN', column = 'amount_micros', message = 'A debit needs a positive amount ("amount_micros", 1 USD = 1000000).';
  end if;
  if btrim(coalesce(p_args ->> 'note', '')) = '' then
    raise exception using errcode = 'BADIN', column = 'note', message = 'A debit needs a note saying why (it is kept in the wallet''s history).';
  end if;
  return private.wallet_adjust(private.user_id_from(p_args), -v_amount, p_args ->> 'note');
end
$$;
comment on function admin.wallet_debit(jsonb) is
  E'Takes money from a wallet: {"user_id" or "username", "amount_micros" (> 0, the amount taken), "note" (required: why)}. Recorded in admin.wallet_credits as an adjustment.';

-- admin.wallet_update: the credit limit (how far below zero a wallet may go).
create or replace function admin.wallet_update(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user bigint;
  v_w private.wallets;
  v_old private.wallets;
begin
  perform private.args_check(p_args, array['user_id', 'username', 'credit_limit_micros'], 'admin.wallet_update');
  v_user := private.user_id_from(p_args);
  perform private.user_editable(v_user);
  select * into v_old from private.wallets w where w.user_id = v_user for update;
  update private.wallets
     set credit_limit_micros = coalesce((p_args ->> 'credit_limit_micros')::bigint, credit_limit_micros), updated_at = now()
   where user_id = v_user returning * into v_w;
  if v_old.credit_limit_micros is distinct from v_w.credit_limit_micros then
    perform private.audit('wallets:' || v_user,
                          jsonb_build_object('user_id', v_user, 'credit_limit_micros', v_old.credit_limit_micros),
                          jsonb_build_object('user_id', v_user, 'credit_limit_micros', v_w.credit_limit_micros));
  end if;
  return to_jsonb(v_w);
exception
  when invalid_text_representation or numeric_value_out_of_range or check_violation then
    raise exception using errcode = 'BADIN', column = 'credit_limit_micros', message = format('admin.wallet_update: %s', sqlerrm);
end
$$;
comment on function admin.wallet_update(jsonb) is
  E'Sets a wallet''s credit limit: {"user_id" or "username", "credit_limit_micros"}. Admission lets the balance go down to minus this limit.';

-- admin.code_create: a batch of redemption codes; the plaintext codes are returned once.
create or replace function admin.code_create(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count integer;
  v_amount bigint;
  v_code text;
  v_codes text[] := '{}';
begin
  perform private.args_check(p_args, array['count', 'amount_micros', 'batch', 'expires_at'], 'admin.code_create');
  v_count := coalesce((p_args ->> 'count')::integer, 1);
  v_amount := (p_args ->> 'amount_micros')::bigint;
  if v_count < 1 or v_count > 10000 then
    raise exception using errcode = 'BADIN', column = 'count', message = '"count" must be between 1 and 10000.';
  end if;
  if v_amount is null or v_amount <= 0 then
    raise exception using errcode = 'BADIN', column = 'amount_micros', message = '"amount_micros" must be a positive integer.';
  end if;
  for i in 1..v_count loop
    v_code := 'ely-' || upper(encode(public.gen_random_bytes(10), 'hex'));
    insert into private.redemption_codes (code_hash, code_prefix, batch, amount_micros, expires_at)
    values (public.digest(v_code, 'sha256'), left(v_code, 8) || '…', coalesce(p_args ->> 'batch', ''), v_amount,
            (p_args ->> 'expires_at')::timestamptz);
    v_codes := v_codes || v_code;
  end loop;
  return jsonb_build_object('batch', coalesce(p_args ->> 'batch', ''), 'amount_micros', v_amount, 'codes', to_jsonb(v_codes));
exception
  when invalid_text_representation or invalid_datetime_format or numeric_value_out_of_range then
    raise exception using errcode = 'BADIN', message = format('admin.code_create: %s', sqlerrm);
end
$$;
comment on function admin.code_create(jsonb) is
  E'Creates redemption codes: {"count" (1..10000), "amount_micros", "batch", "expires_at"}. Returns the codes once; only their sha256 is stored.';

-- admin.code_redeem: credits a code to a user's wallet, once. (Self-service calls this for the
-- signed-in user; it is not reachable with a client API key.)
create or replace function admin.code_redeem(p_user_id bigint, p_code text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_code private.redemption_codes;
  v_balance bigint;
begin
  update private.redemption_codes c
     set redeemed_by = p_user_id, redeemed_at = now()
   where c.code_hash = public.digest(btrim(coalesce(p_code, '')), 'sha256')
     and c.redeemed_at is null
     and (c.expires_at is null or c.expires_at > now())
  returning * into v_code;
  if not found then
    raise exception using errcode = 'BADCD', column = 'code',
      message = 'This code is unknown, already redeemed, or expired.';
  end if;
  insert into private.wallet_credits (user_id, amount_micros, source, code_id, note)
  values (p_user_id, v_code.amount_micros, 'redeem', v_code.id, v_code.batch);
  update private.wallets set balance_micros = balance_micros + v_code.amount_micros, updated_at = now()
   where user_id = p_user_id returning balance_micros into v_balance;
  if v_balance is null then
    raise exception using errcode = 'BADIN', column = 'user_id', message = format('No user with id %s.', p_user_id);
  end if;
  return jsonb_build_object('amount_micros', v_code.amount_micros, 'balance_micros', v_balance);
end
$$;
comment on function admin.code_redeem(bigint, text) is
  E'Redeems a code into the user''s wallet, once (concurrent redemptions of one code: exactly one wins). Raises BADCD for an unknown, used or expired code.';

-- admin.group_upsert: user groups and their price multiplier.
create or replace function admin.group_upsert(p_args jsonb)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_g private.groups;
begin
  perform private.args_check(p_args, array['name', 'price_multiplier', 'description'], 'admin.group_upsert');
  if coalesce(p_args ->> 'name', '') !~ '^[A-Za-z0-9_.-]{1,64}$' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'A group name is 1 to 64 characters: letters, digits and _ . - (no spaces).';
  end if;
  if p_args ->> 'name' like 'channel-test%' then
    raise exception using errcode = 'BADIN', column = 'name',
      message = 'Group names starting with "channel-test" are reserved for the admin panel''s channel tests.';
  end if;
  perform private.arg_numeric(p_args, 'price_multiplier', 0.000001, 999999);
  insert into private.groups as g (name, price_multiplier, description)
  values (p_args ->> 'name', coalesce((p_args ->> 'price_multiplier')::numeric, 1), coalesce(p_args ->> 'description', ''))
  on conflict (name) do update
    set price_multiplier = coalesce((p_args ->> 'price_multiplier')::numeric, g.price_multiplier),
        description = coalesce(p_args ->> 'description', g.description)
  returning * into v_g;
  return to_jsonb(v_g);
exception
  when invalid_text_representation or numeric_value_out_of_range or check_violation or not_null_violation then
    raise exception using errcode = 'BADIN', message = format('admin.group_upsert: %s', sqlerrm);
end
$$;
comment on function admin.group_upsert(jsonb) is
  E'Creates or updates a group: {"name", "price_multiplier" (> 0; 1.2 = 20% surcharge), "description"}.';

-- admin.prices_export / admin.prices_import: the price table as JSON (docs/psql.md, "Price tables").
create or replace function admin.prices_export()
returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
           'format', 'elygate.prices.v1',
           'unit', 'micro-USD per 1M tokens; per_call in micro-USD',
           'models', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
             'name', m.name, 'owned_by', m.owned_by, 'description', nullif(m.description, ''),
             'input_price', m.input_price, 'output_price', m.output_price,
             'cached_input_price', m.cached_input_price, 'cache_write_price', m.cache_write_price,
             'per_call_price', m.per_call_price)) order by m.name), '[]'::jsonb))
    from private.models m
$$;
comment on function admin.prices_export() is E'The price table as JSON ({"format": "elygate.prices.v1", "models": [...]}); feed it to admin.prices_import.';

create or replace function admin.prices_import(p_table jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_model jsonb;
  v_n integer := 0;
begin
  if p_table is null or jsonb_typeof(p_table) <> 'object' or coalesce(jsonb_typeof(p_table -> 'models'), '') <> 'array' then
    raise exception using errcode = 'BADIN', column = 'models',
      message = 'Expected {"format": "elygate.prices.v1", "models": [{"name": ..., "input_price": ..., ...}]}.';
  end if;
  if p_table ? 'format' and p_table ->> 'format' <> 'elygate.prices.v1' then
    raise exception using errcode = 'BADIN', column = 'format', message = format('Unknown price table format "%s".', p_table ->> 'format');
  end if;
  for v_model in select * from jsonb_array_elements(p_table -> 'models') loop
    perform admin.model_upsert(v_model);
    v_n := v_n + 1;
  end loop;
  return v_n;
end
$$;
comment on function admin.prices_import(jsonb) is
  E'Upserts every model of a price table (the admin.prices_export format) in one transaction; returns how many.';

------------------------------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------------------------------
create or replace view admin.wallets as
  select w.user_id, u.username, u.group_name, w.balance_micros, w.reserved_micros, w.credit_limit_micros,
         w.balance_micros - w.reserved_micros + w.credit_limit_micros as available_micros, w.updated_at
    from private.wallets w join private.users u on u.id = w.user_id
   where u.id not in (select i.id from admin.internal_users i);

create or replace view admin.wallet_credits as
  select c.id, c.user_id, u.username, c.amount_micros, c.source, c.code_id, c.note, c.created_by, c.created_at
    from private.wallet_credits c join private.users u on u.id = c.user_id;

create or replace view admin.redemption_codes as
  select c.id, c.code_prefix, c.batch, c.amount_micros, c.expires_at, c.created_at, c.redeemed_by, c.redeemed_at
    from private.redemption_codes c;

create or replace view admin.groups as
  select g.name, g.price_multiplier, g.description, g.created_at,
         (select count(*) from private.users u where u.group_name = g.name) as users, g.archived_at
    from private.groups g
   where g.name not like 'channel-test.%';   -- the channel tests' internal groups (admin.channel_test_key)

-- Spend by dimension and UTC day, from the ledger.
create or replace view admin.usage_daily as
  select (l.created_at at time zone 'UTC')::date as day, l.user_id, l.key_id, l.group_name, l.model, l.channel_id,
         count(*) as requests, sum(l.prompt_tokens) as prompt_tokens, sum(l.completion_tokens) as completion_tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l
   group by 1, 2, 3, 4, 5, 6;

create or replace view admin.usage_by_user as
  select l.user_id, u.username, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l join private.users u on u.id = l.user_id
   where not exists (select 1 from admin.internal_users i where i.id = l.user_id)   -- channel tests are not spend
   group by 1, 2;

create or replace view admin.usage_by_key as
  select l.key_id, k.key_prefix, k.name, k.user_id, count(*) as requests,
         sum(l.prompt_tokens + l.completion_tokens) as tokens, sum(l.amount_micros) as amount_micros
    from private.ledger l join private.api_keys k on k.id = l.key_id
   where not exists (select 1 from admin.internal_users i where i.id = k.user_id)
   group by 1, 2, 3, 4;

create or replace view admin.usage_by_group as
  select l.group_name, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l group by 1;

create or replace view admin.usage_by_model as
  select l.model, count(*) as requests, sum(l.prompt_tokens) as prompt_tokens,
         sum(l.completion_tokens) as completion_tokens, sum(l.amount_micros) as amount_micros
    from private.ledger l group by 1;

create or replace view admin.usage_by_channel as
  select l.channel_id, c.name as channel, count(*) as requests, sum(l.prompt_tokens + l.completion_tokens) as tokens,
         sum(l.amount_micros) as amount_micros
    from private.ledger l left join private.channels c on c.id = l.channel_id group by 1, 2;

-- A request's usage receipt (streams cannot carry it in headers): select * from admin.receipts where request_id = ...
create or replace view admin.receipts as
  select r.id as request_id, r.created_at, r.status, r.model, r.upstream_model, r.channel_id,
         r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.cache_write_tokens,
         r.usage_source, r.reserved_micros, r.cost_micros, l.abort_policy, l.input_price, l.output_price,
         l.group_multiplier, l.channel_multiplier
    from admin.requests r left join private.ledger l on l.request_id = r.id;   -- in-flight requests too
