// Fault scenario 6: SSRF. Channel base URLs pointing at 127.0.0.0/8, 10/8, 169.254.169.254, [::1],
// a DNS name that resolves to a private address, and a redirect to a private address are refused
// when saved (private.channel_url_check) and when connecting (gateway/src/ssrf.ts), unless the
// option AllowPrivateUpstreams is on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { attempt, closeDb, db, withTx } from '../support/db';
import { startGateway } from '../support/gateway';
import { assertPublicUrl, isPrivateAddress, setSsrfRules, SsrfError, upstreamFetch } from '../../src/ssrf';
import { figure, post, saveLogs, tenant } from './support';

let local: Server;
let localUrl = '';
let hits = 0;
beforeAll(async () => {
  // The connect-time guard in this process, loaded as the gateway loads it (snapshot.ts).
  setSsrfRules((await db()`select gateway.ssrf_rules() as s`)[0].s);
  local = createServer((req, res) => {
    hits++;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  await new Promise<void>((r) => local.listen(0, '127.0.0.1', r));
  localUrl = `http://127.0.0.1:${(local.address() as AddressInfo).port}`;
});
afterAll(async () => {
  local?.closeAllConnections();
  await new Promise((r) => local?.close(r));
  await closeDb();
});

const privateUrls = [
  'http://127.0.0.1:11434/v1',
  'http://127.8.9.10/',
  'http://10.0.0.7/v1',
  'http://169.254.169.254/latest/meta-data',
  'http://[::1]:8080/',
  'http://localhost:8000',
  'http://2130706433/',
  'http://0x7f.0.0.1/',
  'http://[::ffff:169.254.169.254]/',
  'http://[fd00:ec2::254]/',
  'http://metadata.google.internal/computeMetadata/v1/',
  'http://172.16.5.4/',
  'http://192.168.0.10/',
];
const publicUrls = ['https://api.openai.com', 'https://api.anthropic.com/v1', 'http://8.8.8.8/', 'http://172.32.0.1/', 'https://[2606:4700::1111]/'];

describe('6. SSRF', () => {
  it('at save time: private.channel_url_check refuses private hosts with BADCH on base_url, unless AllowPrivateUpstreams', async () => {
    const refused: string[] = [];
    await withTx(async (tx) => {
      await tx`select admin.option_set('AllowPrivateUpstreams', 'false')`;
      for (const u of privateUrls) {
        await expect(attempt(tx, (sp) => sp`select private.channel_url_check(${u})`), u).rejects.toMatchObject({
          code: 'BADCH',
          column_name: 'base_url',
          message: expect.stringContaining('private, loopback, link-local or metadata address'),
        });
        refused.push(u);
      }
      for (const u of publicUrls) await tx`select private.channel_url_check(${u})`;
      // A DNS name passes here (SQL cannot resolve it); the gateway checks it when connecting.
      await tx`select private.channel_url_check('https://my-models.example.com')`;
      await tx`select admin.option_set('AllowPrivateUpstreams', 'true')`;
      for (const u of privateUrls) await tx`select private.channel_url_check(${u})`;
    });
    figure('SSRF at save time', { private_refused: `${refused.length}/${privateUrls.length}`, public_accepted: publicUrls.length });
    expect(refused).toHaveLength(privateUrls.length);
  });

  it('at connect time: literal, resolved and redirected private addresses are refused before any connection', async () => {
    const before = hits;
    const blocked: string[] = [];
    for (const u of [...privateUrls, localUrl]) {
      await expect(upstreamFetch(u, { method: 'POST', body: '{}' }, false), u).rejects.toBeInstanceOf(SsrfError);
      blocked.push(u);
    }
    // A DNS name resolving to a private address: the real resolver (localhost), and a name whose
    // resolver answers 10.0.0.5.
    await expect(assertPublicUrl('http://localhost.:9/')).rejects.toThrow(/private/);
    const lookup = async (h: string) => (h === 'evil.example' ? [{ address: '10.0.0.5', family: 4 }] : h === 'dual.example' ? [{ address: '93.184.216.34', family: 4 }, { address: '::1', family: 6 }] : [{ address: '93.184.216.34', family: 4 }]);
    await expect(assertPublicUrl('https://evil.example/v1', { lookup })).rejects.toThrow(/resolves to a private address \(10\.0\.0\.5\)/);
    await expect(assertPublicUrl('https://dual.example/v1', { lookup })).rejects.toThrow(/::1/);
    expect(await assertPublicUrl('https://fine.example/v1', { lookup })).toEqual(['93.184.216.34']);
    // A public upstream that redirects to the metadata service: the hop is checked and refused.
    // Each connection is pinned to the checked address; the Host header keeps the name.
    const seen: string[] = [];
    const fakeFetch = (async (u: string, init: RequestInit) => {
      const host = new Headers(init.headers).get('host');
      seen.push(`${host} ${u} auth=${new Headers(init.headers).get('authorization') ?? '-'}`);
      if (host === 'fine.example') return new Response(null, { status: 302, headers: { location: 'http://169.254.169.254/latest/meta-data/iam' } });
      if (host === 'hop.example') return new Response(null, { status: 307, headers: { location: 'https://other.example/v1' } });
      return new Response('{}', { status: 200 });
    }) as unknown as typeof fetch;
    await expect(upstreamFetch('https://fine.example/v1/chat', { method: 'POST', headers: { authorization: 'Bearer sk-x' } }, false, { lookup, fetch: fakeFetch })).rejects.toThrow(/169\.254\.169\.254/);
    // A redirect to another public host is followed, without the channel's credentials.
    const ok = await upstreamFetch('https://hop.example/v1', { method: 'POST', headers: { authorization: 'Bearer sk-x' }, body: '{}' }, false, { lookup, fetch: fakeFetch });
    expect(ok.status).toBe(200);
    expect(seen).toEqual([
      'fine.example https://93.184.216.34/v1/chat auth=Bearer sk-x',
      'hop.example https://93.184.216.34/v1 auth=Bearer sk-x',
      'other.example https://93.184.216.34/v1 auth=-',
    ]);
    expect(hits).toBe(before); // nothing was ever connected to
    // With the option on, the same local upstream is reached.
    const allowed = await upstreamFetch(localUrl, { method: 'POST', body: '{}' }, true);
    expect(allowed.status).toBe(200);
    expect(hits).toBe(before + 1);
    expect(isPrivateAddress('8.8.8.8')).toBe(false);
    expect(isPrivateAddress('2606:4700::1111')).toBe(false);
    // Both halves read one list (private.ssrf_rules): every range's first and last address is
    // private at connect time, and the address just past it is not (unless another range has it).
    for (const [inside, outside] of [['172.31.255.255', '172.32.0.0'], ['100.127.255.255', '100.128.0.0'], ['198.19.255.255', '198.20.0.0'],
                                      ['::ffff:8.8.8.8', '2001:4860::8888'], ['fdff:ffff::1', 'fe00::1'], ['febf::1', 'fe7f::1']]) {
      expect(isPrivateAddress(inside), inside).toBe(true);
      expect(isPrivateAddress(outside), outside).toBe(false);
    }
    await withTx(async (tx) => {
      for (const a of ['10.1.2.3', '172.31.255.255', '172.32.0.0', '::ffff:8.8.8.8', '2001:4860::8888', '169.254.1.1', '8.8.8.8']) {
        const [{ p }] = await tx`select private.url_is_private(${`http://${a.includes(':') ? `[${a}]` : a}/`}) as p`;
        expect(p, a).toBe(isPrivateAddress(a));
      }
    });
    figure('SSRF at connect time', { private_refused: blocked.length, dns_to_private_refused: 3, redirect_to_metadata_refused: true, connections_made_while_refusing: hits - before - 1 });
  });

  it('DNS rebinding: the connection goes to the address that passed the check, never to a second answer', async () => {
    // A rebinding DNS server: public on the first question, 127.0.0.1 on every later one.
    let asked = 0;
    const rebinding = async () => [{ address: asked++ === 0 ? '93.184.216.34' : '127.0.0.1', family: 4 }];
    // The network as the gateway's fetch meets it: a name is resolved by asking that same DNS
    // server again (what fetch does with a URL that carries a name), an address is dialled. The
    // public address is answered here, in-process (no test reaches the internet); anything else is
    // a real connection, so a request resolved to 127.0.0.1 lands on the local listener.
    const dialled: string[] = [];
    const network = (async (u: string, init: RequestInit) => {
      const url = new URL(u);
      if (isIP(url.hostname.replace(/^\[|\]$/g, '')) === 0) url.hostname = (await rebinding())[0].address;
      dialled.push(url.hostname);
      if (url.hostname === '93.184.216.34') return new Response(JSON.stringify({ from: 'public', host: new Headers(init.headers).get('host') }), { status: 200 });
      return fetch(url, init);
    }) as unknown as typeof fetch;
    const port = new URL(localUrl).port;
    const before = hits;
    const res = await upstreamFetch(`http://rebind.example:${port}/v1/chat/completions`, { method: 'POST', body: '{}' }, false, { lookup: rebinding, fetch: network });
    expect(await res.json()).toEqual({ from: 'public', host: `rebind.example:${port}` });
    expect(dialled).toEqual(['93.184.216.34']);
    expect(hits).toBe(before); // the listener on 127.0.0.1 saw no connection
    expect(asked).toBe(1); // one resolution per connection: the one that was checked
    figure('DNS rebinding', { resolutions: asked, dialled: dialled.join(','), loopback_connections: hits - before });
  });

  it('a name with several vetted addresses: IPv4 first, the next address when one refuses the connection, never after a reset', async () => {
    const lookup = async () => [{ address: '2606:4700::1111', family: 6 }, { address: '93.184.216.34', family: 4 }, { address: '93.184.216.35', family: 4 }];
    const dialled: string[] = [];
    const failWith = (code: string) => Object.assign(new TypeError(`${code}: Unable to connect`), { code });
    const network = (first: string) =>
      (async (u: string, init: RequestInit) => {
        const ip = new URL(u).hostname;
        dialled.push(ip);
        if (ip === '93.184.216.34') throw failWith(first);
        return new Response(JSON.stringify({ ip, host: new Headers(init.headers).get('host') }), { status: 200 });
      }) as unknown as typeof fetch;
    const res = await upstreamFetch('https://multi.example/v1/chat/completions', { method: 'POST', body: '{}' }, false, { lookup, fetch: network('ECONNREFUSED') });
    expect(await res.json()).toEqual({ ip: '93.184.216.35', host: 'multi.example' });
    expect(dialled).toEqual(['93.184.216.34', '93.184.216.35']);
    // A reset may come after the request was sent: not retried here (the relay fails over instead).
    dialled.length = 0;
    await expect(upstreamFetch('https://multi.example/v1', { method: 'POST', body: '{}' }, false, { lookup, fetch: network('ECONNRESET') })).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(dialled).toEqual(['93.184.216.34']);
  });

  it('a literal public address is fetched as it is: no resolver call, no rewritten URL or Host header', async () => {
    let asked = 0;
    const lookup = async () => (asked++, [{ address: '127.0.0.1', family: 4 }]);
    const seen: string[] = [];
    const network = (async (u: string, init: RequestInit) => {
      seen.push(`${u} host=${new Headers(init.headers).get('host') ?? '-'} tls=${'tls' in init}`);
      return new Response('{}', { status: 200 });
    }) as unknown as typeof fetch;
    for (const u of ['https://8.8.8.8/v1/chat/completions', 'http://[2606:4700::1111]:8080/v1']) {
      await upstreamFetch(u, { method: 'POST', body: '{}' }, false, { lookup, fetch: network });
    }
    expect(asked).toBe(0);
    expect(seen).toEqual(['https://8.8.8.8/v1/chat/completions host=- tls=false', 'http://[2606:4700::1111]:8080/v1 host=- tls=false']);
  });

  it('a pinned https connection sends and verifies the name (SNI, certificate, Host), under Bun as the gateway runs', () => {
    const bun = join(__dirname, '..', '..', '..', 'node_modules', 'bun', 'bin', 'bun.exe');
    const out = execFileSync(bun, [join(__dirname, 'fixtures', 'pinned-tls.ts')], { encoding: 'utf8', timeout: 30000 });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r.named.status).toBe(200);
    expect(r.named.seen).toEqual({ host: expect.stringMatching(/^upstream\.test:\d+$/), sni: 'upstream.test' });
    expect(r.other).toEqual({ error: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('the running gateway refuses a private upstream before connecting, as an upstream error naming why', async () => {
    const t = await tenant(localUrl);
    const gw = await startGateway();
    const [{ was }] = await db()`select value as was from private.options where key = 'AllowPrivateUpstreams'`;
    try {
      await db()`select admin.option_set('AllowPrivateUpstreams', 'false')`;
      await new Promise((r) => setTimeout(r, 300));
      const before = hits;
      const res = await post(gw.url, t.key, { model: t.model, messages: [{ role: 'user', content: 'reach the loopback' }] });
      const body = await res.text();
      const reached = hits > before;
      // Wired: refused before connecting, recorded as a failed attempt, answered as an upstream error.
      const wired = !reached && (res.status === 502 || res.status === 503) && /private/.test(body);
      figure('SSRF in the running gateway', {
        status: res.status,
        upstream_reached: reached,
        connect_time_guard: wired ? 'wired' : reached ? 'NOT wired' : `unclear: ${body.slice(0, 160)}`,
      });
      // The guard is wired: no connection was made, and the client got the gateway's upstream error
      // (502/503, naming the private address), never a 500 of its own nor the upstream's answer.
      expect(reached).toBe(false);
      expect(wired).toBe(true);
    } finally {
      await db()`select admin.option_set('AllowPrivateUpstreams', ${was})`;
      await gw.stop();
      saveLogs('ssrf', gw.output());
    }
  });
});
