-- Wallets, for operators: top-ups, debits, the balance set by hand, redemption codes. Every change
-- goes through private.wallet_adjust, which writes its audit row. Documented in docs/psql.md
-- ("Billing").

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
