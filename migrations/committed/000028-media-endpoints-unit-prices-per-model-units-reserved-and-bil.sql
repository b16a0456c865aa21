--! Previous: sha1:1504f1e19d1955c7f7869c9f8b74f1dfea28edf3
--! Hash: sha1:5a00d1e2c0430c08150781bcd66c00d6e4fef5b0
--! Message: Media endpoints: unit prices per model, units reserved and billed

-- Media endpoints (images, speech, transcription, rerank): unit prices per model, and the units an
-- admission reserved with and a request was billed for.
alter table private.models add column if not exists image_prices jsonb;           -- micro-USD per image by "size" or "size/quality"
alter table private.models add column if not exists character_price bigint;       -- micro-USD per 1M input characters (speech)
alter table private.models add column if not exists audio_second_price bigint;    -- micro-USD per second of audio (transcription)
alter table private.models add column if not exists search_unit_price bigint;     -- micro-USD per search unit (rerank)
do $$ begin
  if not exists (select 1 from pg_constraint where conname = 'models_image_prices_object') then
    alter table private.models add constraint models_image_prices_object
      check (image_prices is null or jsonb_typeof(image_prices) = 'object');
  end if;
end $$;
alter table private.admissions add column if not exists unit_price bigint;        -- micro-USD per 1M units (private.price_card.unit_price)
alter table private.requests add column if not exists units integer;              -- images, characters, audio seconds or search units billed
alter table private.ledger add column if not exists units integer not null default 0;
alter table private.ledger add column if not exists unit_price bigint;

-- Signatures that gained a units argument (sql/30, sql/32, sql/34 create the new ones).
drop function if exists private.cost_micros(integer, integer, integer, integer, bigint, bigint, bigint, bigint, bigint, numeric, numeric);
drop function if exists private.card_cost_micros(private.price_card, text, numeric, integer, integer, integer, integer);
drop function if exists private.admit_prepare(jsonb, private.key_auth, private.route_choice, uuid, bytea, text, text, boolean, inet, integer, integer, jsonb);
drop function if exists gateway.relay_begin(uuid, bytea, text, text, boolean, inet, integer, integer, jsonb);
