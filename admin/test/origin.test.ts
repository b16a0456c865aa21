// The admin's origin rule (src/lib/server/origin.js), and what `npm start` does with a wrong one.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { acceptedOrigins, adminOrigin, adminOriginEnv, refusalMessage } from '../src/lib/server/origin.js';
import { userEnv } from './support/admin-server';

describe('the admin origin rule', () => {
  it('defaults to http://localhost:<ADMIN_PORT>, and ADMIN_ORIGIN wins over adapter-node’s ORIGIN', () => {
    expect(adminOrigin({}, 3001)).toEqual({ origin: 'http://localhost:3001', from: 'default' });
    expect(adminOrigin({ ORIGIN: 'https://a.example' }, 3001)).toEqual({ origin: 'https://a.example', from: 'ORIGIN' });
    expect(adminOrigin({ ORIGIN: 'https://a.example', ADMIN_ORIGIN: 'https://b.example:8443/' }, 3001)).toEqual({
      origin: 'https://b.example:8443',
      from: 'ADMIN_ORIGIN',
    });
    expect(adminOriginEnv({}, 4000)).toEqual({ ORIGIN: 'http://localhost:4000' });
  });

  it('leaves the origin to a proxy only when told to trust its headers', () => {
    expect(adminOrigin({ PROTOCOL_HEADER: 'x-forwarded-proto', HOST_HEADER: 'x-forwarded-host' }, 3001).origin).toBeNull();
    expect(adminOriginEnv({ HOST_HEADER: 'x-forwarded-host' }, 3001)).toEqual({});
    // An explicit origin still wins over proxy headers.
    expect(adminOrigin({ HOST_HEADER: 'x-forwarded-host', ADMIN_ORIGIN: 'https://a.example' }, 3001).origin).toBe('https://a.example');
  });

  it('refuses what is not an origin, saying what to write', () => {
    for (const bad of ['localhost:3001', 'http://a.example/admin', 'ftp://a.example', 'https://u:p@a.example', 'nonsense']) {
      expect(() => adminOrigin({ ADMIN_ORIGIN: bad }, 3001), bad).toThrow(/ADMIN_ORIGIN=.*is not an origin.*ADMIN_ORIGIN=http/);
    }
  });

  it('accepts the loopback spellings of a loopback origin only', () => {
    expect(acceptedOrigins('http://localhost:3001')).toEqual(['http://localhost:3001', 'http://127.0.0.1:3001', 'http://[::1]:3001']);
    expect(acceptedOrigins('http://127.0.0.1:3001')).toEqual(['http://127.0.0.1:3001', 'http://localhost:3001', 'http://[::1]:3001']);
    expect(acceptedOrigins('https://admin.example.com')).toEqual(['https://admin.example.com']);
    expect(acceptedOrigins('http://192.168.1.20:3001')).toEqual(['http://192.168.1.20:3001']);
  });

  it('explains a refusal with the origin to set', () => {
    const text = refusalMessage(['http://localhost:3001', 'http://127.0.0.1:3001'], 'http://192.168.1.20:3001').join(' ');
    expect(text).toContain('sent from http://192.168.1.20:3001');
    expect(text).toContain('only from http://localhost:3001, http://127.0.0.1:3001');
    expect(text).toContain('ADMIN_ORIGIN=http://192.168.1.20:3001');
    expect(refusalMessage(['http://localhost:3001'], null).join(' ')).toContain('no Origin header');
  });
});

describe('npm start with a malformed ADMIN_ORIGIN', () => {
  it('stops at once with the fix, before provisioning or migrating anything', () => {
    const root = join(__dirname, '..', '..');
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'start.mjs')], {
      cwd: root,
      env: userEnv({ ADMIN_ORIGIN: 'localhost:3001', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' }),
      encoding: 'utf8',
      timeout: 20000,
    });
    expect(r.status).toBe(1);
    expect(r.stdout + r.stderr).toContain('ADMIN_ORIGIN="localhost:3001" is not an origin');
    expect(r.stdout + r.stderr).not.toContain('Using the database');
  });
});
