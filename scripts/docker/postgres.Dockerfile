# PostgreSQL 18 with pgvector and pg_cron. Both are packaged in the PGDG apt source that the official
# image already configures, so nothing is built here.
FROM postgres:18
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-18-pgvector postgresql-18-cron \
 && rm -rf /var/lib/apt/lists/*
# From 18 on the official image keeps its data in /var/lib/postgresql/18/docker and declares the
# volume at /var/lib/postgresql: the compose file mounts its named volume there. Stated explicitly so
# a later base-image change cannot silently move the data out of the volume.
ENV PGDATA=/var/lib/postgresql/18/docker
# pg_cron must be preloaded and told which database its jobs run in (DESIGN §6); without it the
# gateway drives the same maintenance functions itself, but the DBA loses cron.job_run_details.
CMD ["postgres", \
     "-c", "shared_preload_libraries=pg_cron,pg_stat_statements", \
     "-c", "cron.database_name=elygate", \
     "-c", "cron.use_background_workers=on", \
     "-c", "max_worker_processes=16", \
     "-c", "timezone=UTC"]
