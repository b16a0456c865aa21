// GET /internal/channels/:id/upstream-models: the admin panel's "Import models" reads a channel's
// model list from its upstream's own listing, through the gateway (which holds the decrypted key
// and the SSRF guard). Each channel type against its mock's listing in the real wire format, the
// key that may ask (only the panel's key for that channel), and what each failure says.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeDb, createChannel, createKey, createUser, db } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { MOCK_OPENAI_MODELS, startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { MOCK_ANTHROPIC_MODELS, startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';

let gw: RunningGateway;
let openai: MockUpstream;
let anthropic: MockAnthropic;
let gemini: MockGemini;
let azure: { url: string; calls: { path: string; query: string; apiKey?: string }[]; server: Server };
const ch: Record<'openai' | 'azure' | 'anthropic' | 'gemini', number> = {} as never;

/** Azure OpenAI's GET /openai/models?api-version=… (api-key header), listing in OpenAI's shape. */
async function startMockAzure() {
  const calls: { path: string; query: string; apiKey?: string }[] = [];
  const server = createServer((req, res) => {
    const [path, query = ''] = (req.url ?? '').split('?');
    calls.push({ path, query, apiKey: req.headers['api-key'] as string | undefined });
    if (path !== '/openai/models' || !/api-version=\d{4}-\d{2}-\d{2}/.test(query) || !req.headers['api-key']) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: '404', message: 'Resource not found' } }));
      return;
    }
    const data = ['gpt-4o', 'gpt-4.1'].map((id) => ({ id, object: 'model', created_at: 1700000000, status: 'succeeded', capabilities: { chat_completion: true } }));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}

/** The panel's key for a channel: admin.channel_test_key with no model. */
async function panelKey(channelId: number): Promise<string> {
  const [{ k }] = await db()`select admin.channel_test_key(${channelId}, null) as k`;
  return k.key;
}

async function list(channelId: number | string, key: string | null) {
  const res = await fetch(`${gw.url}/internal/channels/${channelId}/upstream-models`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  return { status: res.status, body: (await res.json()) as any };
}

beforeAll(async () => {
  [openai, anthropic, gemini, azure] = await Promise.all([startMockUpstream(), startMockAnthropic(), startMockGemini(), startMockAzure()]);
  const sql = db();
  ch.openai = (await createChannel(sql, { type: 'openai', base_url: openai.url, models: ['gpt-4o'], api_key: 'sk-openai-upstream' })).id;
  ch.azure = (await createChannel(sql, { type: 'azure', base_url: azure.url, models: ['gpt-4o'], api_key: 'azure-upstream', config: { api_version: '2024-10-21' } })).id;
  ch.anthropic = (await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: ['claude-sonnet-4-5'], api_key: 'sk-ant-upstream' })).id;
  ch.gemini = (await createChannel(sql, { type: 'gemini', base_url: gemini.url, models: ['gemini-2.5-flash'], api_key: 'AIza-upstream' })).id;
  gw = await startGateway();
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close(), gemini?.close()]);
  azure?.server.close();
  await closeDb();
});

describe('each channel type, from its upstream listing', () => {
  it('openai: GET /v1/models with the channel key as Bearer, data[].id', async () => {
    const r = await list(ch.openai, await panelKey(ch.openai));
    expect(r.status).toBe(200);
    expect(r.body.data.map((m: any) => m.id)).toEqual([...MOCK_OPENAI_MODELS].sort());
    const call = openai.calls.filter((c) => c.path === '/v1/models').at(-1)!;
    expect(call.headers.authorization).toBe('Bearer sk-openai-upstream');
  });

  it('azure: GET /openai/models?api-version with the api-key header', async () => {
    const r = await list(ch.azure, await panelKey(ch.azure));
    expect(r.status).toBe(200);
    expect(r.body.data.map((m: any) => m.id)).toEqual(['gpt-4.1', 'gpt-4o']);
    expect(azure.calls.at(-1)).toMatchObject({ path: '/openai/models', query: 'api-version=2024-10-21', apiKey: 'azure-upstream' });
  });

  it('anthropic: GET /v1/models with x-api-key and anthropic-version, every page followed', async () => {
    // More models than one page of 1000 would hold is a lot of fixtures; a listing the upstream
    // pages at 1000 is followed by after_id all the same.
    anthropic.models = [...MOCK_ANTHROPIC_MODELS, ...Array.from({ length: 1005 }, (_, i) => `claude-old-${String(i).padStart(4, '0')}`)];
    try {
      const r = await list(ch.anthropic, await panelKey(ch.anthropic));
      expect(r.status).toBe(200);
      expect(r.body.data).toHaveLength(1008);
      expect(r.body.data.map((m: any) => m.id)).toContain('claude-sonnet-4-5');
      const calls = anthropic.calls.filter((c) => c.path === '/v1/models');
      expect(calls).toHaveLength(2);
      expect(calls[0].headers['x-api-key']).toBe('sk-ant-upstream');
      expect(calls[0].headers['anthropic-version']).toBe('2023-06-01');
    } finally {
      anthropic.models = [...MOCK_ANTHROPIC_MODELS];
    }
  });

  it('gemini: GET /v1beta/models, names without "models/", only models that generate content', async () => {
    const r = await list(ch.gemini, await panelKey(ch.gemini));
    expect(r.status).toBe(200);
    expect(r.body.data.map((m: any) => m.id)).toEqual(['gemini-2.5-flash', 'gemini-2.5-pro']);
    const call = gemini.calls.filter((c) => c.path === '/v1beta/models').at(-1)!;
    expect(call.headers['x-goog-api-key']).toBe('AIza-upstream');
    expect(call.query).not.toContain('AIza'); // the key travels in a header, not in the URL
  });
});

describe('who may ask', () => {
  it('only the panel key of that very channel: no key, a client key and another channel\'s key are refused', async () => {
    expect((await list(ch.openai, null)).status).toBe(401);
    const user = await createUser(db());
    const { key } = await createKey(db(), { user_id: user.id });
    const asClient = await list(ch.openai, key);
    expect(asClient.status).toBe(403);
    expect(asClient.body.error.code).toBe('channel_not_allowed');
    const other = await list(ch.openai, await panelKey(ch.gemini));
    expect(other.status).toBe(403);
    expect(other.body.error.code).toBe('channel_not_allowed');
    expect((await list('abc', await panelKey(ch.openai))).status).toBe(400);
  });

  it('the panel key calls no model through the relay', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await panelKey(ch.openai)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(403);
  });
});

describe('what a failure says', () => {
  it('401 from the upstream: the channel key was refused', async () => {
    openai.mode = { kind: 'status', status: 401 };
    try {
      const r = await list(ch.openai, await panelKey(ch.openai));
      expect(r.status).toBe(502);
      expect(r.body.error.code).toBe('upstream_unauthorized');
      expect(r.body.error.message).toMatch(/refused the channel's key \(HTTP 401\): mock upstream says 401/);
    } finally {
      openai.mode = { kind: 'ok' };
    }
  });

  it('an upstream without a model listing', async () => {
    openai.models = null;
    try {
      const r = await list(ch.openai, await panelKey(ch.openai));
      expect(r.status).toBe(502);
      expect(r.body.error.code).toBe('upstream_no_model_listing');
      expect(r.body.error.message).toMatch(/has no model listing .*HTTP 404.*by hand/);
    } finally {
      openai.models = [...MOCK_OPENAI_MODELS];
    }
  });

  it('an unreachable upstream', async () => {
    const dead = await createChannel(db(), { type: 'openai', base_url: 'http://127.0.0.1:9', models: ['gpt-4o'] });
    const r = await list(dead.id, await panelKey(dead.id));
    expect(r.status).toBe(502);
    expect(r.body.error.code).toBe('upstream_unreachable');
    expect(r.body.error.message).toMatch(/^Could not reach 127\.0\.0\.1:9/);
  });

  it('a private address is refused by the SSRF guard unless private upstreams are allowed', async () => {
    const key = await panelKey(ch.openai);
    await db()`select admin.option_set('AllowPrivateUpstreams', 'false')`;
    try {
      // The option reaches the gateway through NOTIFY: ask until it has.
      let r = await list(ch.openai, key);
      for (let i = 0; i < 50 && r.status === 200; i++) r = await list(ch.openai, key);
      expect(r.status).toBe(502);
      expect(r.body.error.code).toBe('upstream_private_address');
      expect(r.body.error.message).toMatch(/private address.*"Allow private upstreams" in Settings/);
      // Refused before any connection: the mock hears nothing of it.
      const heard = openai.calls.length;
      expect((await list(ch.openai, key)).body.error.code).toBe('upstream_private_address');
      expect(openai.calls.length).toBe(heard);
    } finally {
      await db()`select admin.option_set('AllowPrivateUpstreams', 'true')`;
    }
    let back = await list(ch.openai, key);
    for (let i = 0; i < 50 && back.status !== 200; i++) back = await list(ch.openai, key);
    expect(back.status).toBe(200);
  });

  it('a channel without an enabled key', async () => {
    const bare = await createChannel(db(), { type: 'openai', base_url: openai.url, models: ['gpt-4o'], api_key: undefined });
    const r = await list(bare.id, await panelKey(bare.id));
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/no enabled upstream key/);
  });
});
