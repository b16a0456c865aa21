--! Previous: sha1:8ed18d709b9e347b2be4706dd555e4ed3be43590
--! Hash: sha1:264984a1b8e936fd009c400e8da30146ee413e8d
--! Message: admissions keep their price card; breaker_record takes its caller's options

-- The price card an admission reserved with is kept on its admission row, so settlement bills with
-- the prices the receipt header was computed from, not with whatever the price table says when the
-- outcome arrives. Plain typed columns, not the ticket's jsonb card: settlement reads them without
-- parsing, and a null costs a bit. Measured on a typical admission (input and output prices, group
-- multiplier, hit ratio): the row grows from about 325 to 354 bytes; the ticket's jsonb card alone
-- is 233 bytes. The channel multipliers are not repeated here: route_plan's candidates already
-- carry each channel's multiplier as admission priced it.
-- group_multiplier is the marker: null means no card was stored (a row admitted before this
-- migration, or one private.settle restores after a crash), and settlement prices it at the current
-- prices, as before. Rows in flight during the upgrade keep their reservation and stay null.
alter table private.admissions
  add column if not exists input_price        bigint,
  add column if not exists output_price       bigint,
  add column if not exists cached_input_price bigint,
  add column if not exists cache_write_price  bigint,
  add column if not exists per_call_price     bigint,
  add column if not exists group_multiplier   numeric,
  add column if not exists hit_ratio          numeric,
  add column if not exists embedding_price    bigint,
  add column if not exists embedding_per_call bigint;
comment on column private.admissions.group_multiplier is
  'The owner''s group multiplier at admission; null: no price card was stored (settlement uses the current prices).';
comment on column private.admissions.hit_ratio is
  'SemanticCacheHitPriceRatio at admission: the share of the answer''s price a cache hit is billed.';
comment on column private.admissions.embedding_price is
  'The semantic cache''s embedding model input price at admission (with embedding_per_call).';

-- private.admit_plan (sql/10_types.sql) carries the card from the reading half of an admission to
-- the writing half: its shape changed, so it is dropped with the functions that take or return it,
-- and sql/ creates them again.
drop type if exists private.admit_plan cascade;

-- private.refusal_json gained reason and retry_after (refusals reach the gateway as values, with
-- the fields it acts on, instead of text it parsed).
drop function if exists private.refusal_json(text, text, text, text, text);

-- private.breaker_record takes the options its caller read (settlement reads them once per batch).
drop function if exists private.breaker_record(jsonb, timestamptz);
