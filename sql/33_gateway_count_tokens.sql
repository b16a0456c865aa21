-- gateway.count_tokens_plan: POST /v1/messages/count_tokens. Counting a prompt's tokens is free
-- and answers no model: nothing is admitted, reserved, billed or logged. The key is checked as
-- for any request (status, expiry, owner, IP allowlist, model allowlist), and the model's route
-- plan says which channels could count it (an Anthropic channel counts exactly; the gateway
-- estimates when none is planned).
create or replace function gateway.count_tokens_plan(p_key_hash bytea, p_client_ip inet, p_model text)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_auth private.key_auth;
  v_route private.route_choice;
begin
  if p_model is null or p_model = '' then
    raise exception using errcode = 'BADRQ', message = 'you must provide a model parameter', column = 'model';
  end if;
  select a.* into v_auth from private.key_auth_of(p_key_hash, p_model) a;
  v_auth := private.key_verify(p_key_hash, v_auth, p_client_ip);
  if (v_auth.key).allowed_models is not null and not (p_model = any((v_auth.key).allowed_models)) then
    raise exception using errcode = 'MDENY', column = 'model',
      message = format('This API key is not allowed to use the model `%s`.', p_model);
  end if;
  v_route := (private.route_plans(array[p_model], array[v_auth.user_group]))[1];
  if v_route.served = 0 then
    raise exception using errcode = 'NOMDL', column = 'model',
      message = format('The model `%s` does not exist or you do not have access to it.', p_model);
  end if;
  return coalesce(v_route.candidates, '[]'::jsonb);
end
$$;
comment on function gateway.count_tokens_plan(bytea, inet, text) is
  E'POST /v1/messages/count_tokens: checks the key as relay_begin does (no admission, reservation, bill or log row) and returns the model''s usable channels in try order (route_plans'' candidates, [] when none is usable).';
