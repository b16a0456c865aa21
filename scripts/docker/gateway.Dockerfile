# The gateway and the admin panel from one image (the compose file runs it twice, with a different
# command). Node runs the scripts (migrations, the admin's adapter-node server); Bun, from npm, runs
# the gateway.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY gateway/package.json gateway/package.json
COPY admin/package.json admin/package.json
RUN npm ci --no-audit --no-fund
COPY . .
# Builds the admin panel (admin/build) when its sources are present.
RUN node scripts/build.mjs --admin-only

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app /app
# The spool (outcomes waiting for an unreachable database) must survive a container restart.
ENV ELYGATE_SPOOL_DIR=/var/lib/elygate/spool
RUN mkdir -p /var/lib/elygate/spool && chown -R node:node /var/lib/elygate
USER node
EXPOSE 3000 3001
# Migrates (scripts/start.mjs --migrate-only), then execs the gateway so that it is PID 1 and gets
# SIGTERM itself: its drain (docs/operations.md) must not depend on a parent forwarding signals.
# The admin panel runs as its own service (docker-compose.yml), not inside this process.
CMD ["sh", "-c", "node scripts/start.mjs --migrate-only && exec node_modules/bun/bin/bun.exe gateway/src/index.ts"]
