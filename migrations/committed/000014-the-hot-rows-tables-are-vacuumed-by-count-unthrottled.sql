--! Previous: sha1:ec777ce49198f77ce52d26b2f1474bf3a8125211
--! Hash: sha1:2786a85db2f40878d5ed81bf2ded9d3042830112
--! Message: the hot rows' tables are vacuumed by count, unthrottled

-- The hot rows' tables are vacuumed by count, not by share, and unthrottled. A busy key's wallet
-- and counters and a busy channel's breaker bucket are each one row updated thousands of times a
-- second; under concurrent writers their dead versions cannot all be pruned in place, the tables
-- grow to hundreds of pages for a handful of live rows, and every admission and settlement then
-- reads through them (docs/performance.md, finding 48). Each autovacuum round now takes them once
-- 100 dead versions piled up, whatever the table's size, without the cost delay (they are small).
-- (private.admissions, the in-flight queue, has had such settings from the start.)
alter table private.wallets set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                 autovacuum_vacuum_cost_delay = 0);
alter table private.key_counters set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                      autovacuum_vacuum_cost_delay = 0);
alter table private.channel_outcomes set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                          autovacuum_vacuum_cost_delay = 0);
