# The gateway: Node runs the start script (migrations), which runs the gateway under Bun from npm.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY gateway/package.json gateway/package.json
COPY admin/package.json admin/package.json
RUN npm ci --no-audit --no-fund
COPY . .
EXPOSE 3000
CMD ["node", "scripts/start.mjs"]
