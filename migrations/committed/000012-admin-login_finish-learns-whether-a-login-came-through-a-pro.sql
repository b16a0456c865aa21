--! Previous: sha1:9fa6edff25fa223b00cdcd612b2f1abca5c64a7a
--! Hash: sha1:43ef73b73d1fd3c265e346938ac3779d8352832e
--! Message: admin.login_finish learns whether a login came through a proxy

-- Enter migration here

-- admin.login_finish learns whether the login came through a proxy (the default password is for a
-- direct loopback connection only): its old signature goes, sql/ creates the new one.
drop function if exists admin.login_finish(text, inet, boolean, text);
