# PostgreSQL 18 with pgvector and pg_cron (both packaged in the official image's PGDG apt source).
FROM postgres:18
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-18-pgvector postgresql-18-cron \
 && rm -rf /var/lib/apt/lists/*
