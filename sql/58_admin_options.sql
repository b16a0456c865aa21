-- Options, for operators: set one (validated by the registry, sql/20_options.sql) and list them.

-- admin.option_set: validates and stores a setting; every gateway picks it up through NOTIFY.
create or replace function admin.option_set(p_key text, p_value text)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform private.option_validate(p_key, p_value);
  update private.options set value = p_value where key = p_key;
  return p_value;
end
$$;

comment on function admin.option_set(text, text) is E'Sets an option after checking its type and bounds (see admin.options); gateways reload within milliseconds.';

create or replace view admin.options as
  select o.key, o.value, o.value_type, o.min_value, o.max_value, o.description, o.updated_at
    from private.options o;
