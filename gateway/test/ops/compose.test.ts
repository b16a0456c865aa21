// The production packaging, checked without a Docker engine (none runs here or in CI): the compose
// file parses, wires what DESIGN §9 promises, keeps its data in a volume that really persists it,
// and every variable it (or the code) reads is documented in .env.example.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

const root = join(__dirname, '..', '..', '..');
const read = (p: string) => readFileSync(join(root, p), 'utf8');
const compose = parse(read('docker-compose.yml'));

/** Dockerfile instructions, with continuation lines joined and comments dropped. */
function instructions(path: string): { op: string; args: string }[] {
  return read(path)
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

function envVarsIn(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/\$\{([A-Z_][A-Z0-9_]*)/g)) out.add(m[1]);
  return out;
}

describe('docker-compose.yml', () => {
  it('is a plain compose file with postgres, gateway and admin, each with a health check', () => {
    expect(compose.version).toBeUndefined(); // obsolete key: Compose v2 warns about it
    expect(Object.keys(compose.services).sort()).toEqual(['admin', 'gateway', 'postgres']);
    for (const [name, svc] of Object.entries<any>(compose.services)) {
      expect(svc.healthcheck?.test, `${name} health check`).toBeInstanceOf(Array);
      expect(['CMD', 'CMD-SHELL']).toContain(svc.healthcheck.test[0]);
      expect(svc.build?.dockerfile, `${name} builds from a Dockerfile in the repo`).toMatch(/^scripts\/docker\/.+\.Dockerfile$/);
      expect(existsSync(join(root, svc.build.context, svc.build.dockerfile))).toBe(true);
    }
  });

  it('persists PostgreSQL 18 data in the named volume (the image keeps PGDATA under /var/lib/postgresql/18/docker)', () => {
    const pg = compose.services.postgres;
    const mounts: string[] = pg.volumes;
    const named = mounts.map((m) => m.split(':')).filter(([src]) => !src.startsWith('.') && !src.startsWith('/'));
    expect(named).toHaveLength(1);
    const [volume, target] = named[0];
    expect(Object.keys(compose.volumes)).toContain(volume);
    const from = instructions(compose.services.postgres.build.dockerfile);
    expect(from[0]).toEqual({ op: 'FROM', args: 'postgres:18' });
    const pgdata = from.find((i) => i.op === 'ENV' && i.args.startsWith('PGDATA='))?.args.split('=')[1] ?? '/var/lib/postgresql/18/docker';
    // The data directory must lie inside the mount, or the data goes to an anonymous volume.
    expect(pgdata === target || pgdata.startsWith(target.replace(/\/$/, '') + '/')).toBe(true);
    expect(target).toBe('/var/lib/postgresql');
  });

  it('builds PostgreSQL with pgvector and pg_cron, preloaded, with cron.database_name set to the database', () => {
    const df = instructions(compose.services.postgres.build.dockerfile);
    const run = df.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ');
    expect(run).toMatch(/postgresql-18-pgvector/);
    expect(run).toMatch(/postgresql-18-cron/);
    const cmd: string[] = JSON.parse(df.find((i) => i.op === 'CMD')!.args);
    const settings = Object.fromEntries(cmd.filter((_, i) => cmd[i - 1] === '-c').map((s) => s.split('=')));
    expect(settings.shared_preload_libraries.split(',')).toContain('pg_cron');
    expect(settings['cron.database_name']).toBe(compose.services.postgres.environment.POSTGRES_DB);
    // The service must not override the image's CMD (and with it the preload settings).
    expect(compose.services.postgres.command).toBeUndefined();
  });

  it('serves the gateway on :3000 and the admin on :3001, after the database is healthy', () => {
    const { gateway, admin } = compose.services;
    expect(gateway.ports).toContain('3000:3000');
    expect(admin.ports).toContain('3001:3001');
    expect(gateway.depends_on.postgres.condition).toBe('service_healthy');
    expect(admin.depends_on.gateway.condition).toBe('service_healthy');
    expect(gateway.healthcheck.test.join(' ')).toMatch(/127\.0\.0\.1:3000\/readyz/);
    expect(admin.healthcheck.test.join(' ')).toMatch(/127\.0\.0\.1:3001\/healthz/);
    expect(gateway.environment.NODE_ENV).toBe('production');
    expect(gateway.environment.DATABASE_URL).toMatch(/@postgres:5432\/elygate$/);
    // The admin's health path really exists in the SvelteKit app.
    expect(existsSync(join(root, 'admin/src/routes/healthz/+server.ts'))).toBe(true);
    // SIGTERM drains streams: compose must wait longer than the drain deadline before SIGKILL.
    const drainS = Number(/:-(\d+)/.exec(gateway.environment.ELYGATE_SHUTDOWN_DRAIN_MS)![1]) / 1000;
    expect(parseInt(gateway.stop_grace_period, 10)).toBeGreaterThan(drainS);
  });

  it('requires the secrets instead of shipping defaults', () => {
    const text = read('docker-compose.yml');
    for (const v of ['POSTGRES_PASSWORD', 'ELYGATE_MASTER_KEY', 'ELYGATE_ADMIN_PASSWORD']) {
      expect(text, v).toMatch(new RegExp(`\\$\\{${v}:\\?`));
    }
  });

  it('the gateway image runs the migrations and the gateway, and builds the admin', () => {
    const df = instructions(compose.services.gateway.build.dockerfile);
    expect(df.filter((i) => i.op === 'RUN').map((i) => i.args).join(' ')).toMatch(/npm ci/);
    expect(df.some((i) => i.op === 'RUN' && /scripts\/build\.mjs --admin-only/.test(i.args))).toBe(true);
    // Migrate, then exec the gateway: it is PID 1 and receives SIGTERM itself (graceful drain).
    const cmd: string[] = JSON.parse(df.filter((i) => i.op === 'CMD').at(-1)!.args);
    expect(cmd.slice(0, 2)).toEqual(['sh', '-c']);
    expect(cmd[2]).toMatch(/^node scripts\/start\.mjs --migrate-only && exec \S*bun\S* gateway\/src\/index\.ts$/);
    expect(existsSync(join(root, 'gateway/src/index.ts'))).toBe(true);
    expect(compose.services.admin.command).toEqual(['node', 'admin/build/index.js']);
    expect(df.some((i) => i.op === 'USER' && i.args !== 'root')).toBe(true);
  });
});

describe('.env.example', () => {
  const documented = new Set([...read('.env.example').matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));

  it('documents every variable docker-compose.yml reads', () => {
    for (const v of envVarsIn(read('docker-compose.yml'))) expect(documented, v).toContain(v);
  });

  it('documents every variable the gateway, the scripts and the admin read', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      if (!existsSync(join(root, dir))) return;
      for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
        const p = `${dir}/${e.name}`;
        if (e.isDirectory()) walk(p);
        else if (/\.(ts|mjs|js)$/.test(e.name) && !e.name.endsWith('.gen.ts')) files.push(p);
      }
    };
    ['gateway/src', 'scripts', 'admin/src'].forEach(walk);
    const used = new Set<string>();
    for (const f of files) {
      for (const m of read(f).matchAll(/(?:process\.env|\benv)\.([A-Z][A-Z0-9_]+)|process\.env\[['"]([A-Z][A-Z0-9_]+)['"]\]|\b(?:int|envMs)\('([A-Z][A-Z0-9_]+)'/g)) {
        used.add(m[1] ?? m[2] ?? m[3]);
      }
    }
    // Set by graphile-migrate or by our own scripts for their children, never by an operator.
    for (const internal of ['GM_DBURL', 'GM_SHADOW', 'PGOPTIONS', 'ELYGATE_FAULTS', 'ELYGATE_DEFER_SQL', 'CI']) used.delete(internal);
    expect(used.size).toBeGreaterThan(10);
    for (const v of used) expect(documented, `${v} is read by the code but not in .env.example`).toContain(v);
  });
});

describe('packaging', () => {
  const pkg = JSON.parse(read('package.json'));
  it('has the scripts users of the original expect, and the Apache-2.0 licence', () => {
    for (const s of ['dev', 'build', 'start', 'test', 'test:faults']) expect(pkg.scripts[s], s).toBeTypeOf('string');
    for (const s of ['dev', 'build', 'test:faults']) {
      const file = /node (scripts\/\S+\.mjs)/.exec(pkg.scripts[s])![1];
      expect(existsSync(join(root, file)), file).toBe(true);
    }
    expect(pkg.license).toBe('Apache-2.0');
    const license = read('LICENSE');
    expect(license).toMatch(/Apache License\s+Version 2\.0, January 2004/);
    expect(license).toMatch(/END OF TERMS AND CONDITIONS/);
  });
});
