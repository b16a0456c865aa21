// The official `@anthropic-ai/sdk` client against POST /v1/messages, through an Anthropic-type
// channel (passed through natively), an OpenAI-type channel and a Gemini channel (converted both
// ways, SSE events included): text and tool use, stream and non-stream, usage, and errors in
// Anthropic's shape.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Anthropic from '@anthropic-ai/sdk';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';

let gw: RunningGateway;
let openai: MockUpstream;
let anthropic: MockAnthropic;
let gemini: MockGemini;
let client: Anthropic;
let key: string;
const models: Record<'openai' | 'anthropic' | 'gemini', string> = {} as never;

beforeAll(async () => {
  [openai, anthropic, gemini] = await Promise.all([startMockUpstream(), startMockAnthropic(), startMockGemini()]);
  const sql = db();
  const group = await createGroup(sql);
  for (const t of ['openai', 'anthropic', 'gemini'] as const) models[t] = unique(`claude-via-${t}`);
  const user = await createUser(sql, { group });
  key = (await createKey(sql, { user_id: user.id })).key;
  await createChannel(sql, { type: 'openai', base_url: openai.url, models: [models.openai], groups: [group] });
  await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: [models.anthropic], groups: [group] });
  await createChannel(sql, { type: 'gemini', base_url: gemini.url, models: [models.gemini], groups: [group] });
  gw = await startGateway();
  client = new Anthropic({ apiKey: key, baseURL: gw.url, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close(), gemini?.close()]);
  await closeDb();
});

async function settled(requestId: string) {
  for (let i = 0; i < 150; i++) {
    const [row] = await db()`select * from private.requests where id = ${requestId} and status <> 'pending'`;
    if (row) return row;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`request ${requestId} was not settled`);
}

const tools: Anthropic.Tool[] = [
  { name: 'get_weather', description: 'Weather for a city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
];

describe.each(['anthropic', 'openai', 'gemini'] as const)('@anthropic-ai/sdk → %s channel', (type) => {
  it('messages.create: text answer, stop reason, usage', async () => {
    const { data: msg, response } = await client.messages
      .create({ model: models[type], max_tokens: 100, system: 'be brief', messages: [{ role: 'user', content: 'ping pong' }] })
      .withResponse();
    expect(msg.type).toBe('message');
    expect(msg.role).toBe('assistant');
    expect(msg.content).toEqual([{ type: 'text', text: 'echo: ping pong' }]);
    expect(msg.stop_reason).toBe('end_turn');
    expect(msg.usage.output_tokens).toBe(3);
    expect(msg.usage.input_tokens).toBeGreaterThan(0);
    const row = await settled(response.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'ok', endpoint: 'messages', completion_tokens: 3, usage_source: 'upstream' });
    expect(row.prompt_tokens).toBe(msg.usage.input_tokens);
  });

  it('messages.stream: events in order, text deltas, final message with usage', async () => {
    const stream = client.messages.stream({ model: models[type], max_tokens: 100, messages: [{ role: 'user', content: 'one two three' }] });
    const types: string[] = [];
    let text = '';
    stream.on('streamEvent', (e) => types.push(e.type));
    stream.on('text', (t) => (text += t));
    const final = await stream.finalMessage();
    expect(text).toBe('echo: one two three');
    expect(final.content).toEqual([{ type: 'text', text: 'echo: one two three', ...(final.content[0] as any).citations !== undefined ? { citations: (final.content[0] as any).citations } : {} }]);
    expect(final.stop_reason).toBe('end_turn');
    expect(final.usage.output_tokens).toBe(4);
    expect(final.usage.input_tokens).toBeGreaterThan(0);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(types).toContain('content_block_start');
    expect(types).toContain('content_block_delta');
    expect(types.indexOf('message_delta')).toBeLessThan(types.indexOf('message_stop'));
  });

  it('tool use: non-stream and streamed, then the tool result', async () => {
    const msg = await client.messages.create({ model: models[type], max_tokens: 100, tools, messages: [{ role: 'user', content: 'weather in Paris?' }] });
    expect(msg.stop_reason).toBe('tool_use');
    const use = msg.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use).toMatchObject({ type: 'tool_use', name: 'get_weather', input: { city: 'Paris' } });
    expect(use.id).toBeTruthy();

    const final = await client.messages.stream({ model: models[type], max_tokens: 100, tools, messages: [{ role: 'user', content: 'weather in Paris?' }] }).finalMessage();
    expect(final.stop_reason).toBe('tool_use');
    expect(final.content.find((b) => b.type === 'tool_use')).toMatchObject({ name: 'get_weather', input: { city: 'Paris' } });

    const second = await client.messages.create({
      model: models[type],
      max_tokens: 100,
      tools: type === 'openai' ? undefined : tools,
      messages: [
        { role: 'user', content: 'weather in Paris?' },
        { role: 'assistant', content: msg.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '{"temp":21}' }] },
      ],
    });
    const text = (second.content[0] as Anthropic.TextBlock).text;
    if (type === 'openai') {
      const sent = openai.calls.at(-1)!.body;
      expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'tool']);
      expect(sent.messages[1].tool_calls[0]).toMatchObject({ id: use.id, type: 'function', function: { name: 'get_weather' } });
      expect(JSON.parse(sent.messages[1].tool_calls[0].function.arguments)).toEqual({ city: 'Paris' });
      expect(sent.messages[2]).toEqual({ role: 'tool', tool_call_id: use.id, content: '{"temp":21}' });
    }
    expect(text).toBe('tool said: {"temp":21}');
  });

  it('errors use Anthropic\'s shape and the SDK\'s typed errors', async () => {
    const mock = type === 'anthropic' ? anthropic : type === 'gemini' ? gemini : openai;
    mock.mode = { kind: 'status', status: 400 };
    try {
      const e = await client.messages.create({ model: models[type], max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
      expect(e).toBeInstanceOf(Anthropic.BadRequestError);
      expect(e.error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('says 400') } });
    } finally {
      mock.mode = { kind: 'ok' };
    }
  });
});

describe('/v1/messages refusals', () => {
  it('a bad key: 401 authentication_error', async () => {
    const bad = new Anthropic({ apiKey: 'sk-wrong', baseURL: gw.url, maxRetries: 0 });
    const e = await bad.messages.create({ model: models.anthropic, max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
    expect(e).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(e.error).toMatchObject({ type: 'error', error: { type: 'authentication_error', message: 'Incorrect API key provided.' } });
  });

  it('an unknown model: 404 not_found_error', async () => {
    const e = await client.messages.create({ model: 'no-such-claude', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
    expect(e).toBeInstanceOf(Anthropic.NotFoundError);
    expect(e.error.error.type).toBe('not_found_error');
  });

  it('no max_tokens: 400 invalid_request_error before any database call', async () => {
    const res = await fetch(`${gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: models.anthropic, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringContaining('max_tokens') } });
  });

  it('an upstream stream that breaks after the first byte ends with an Anthropic error event', async () => {
    anthropic.mode = { kind: 'stream-break', afterChunks: 4 };
    try {
      const res = await fetch(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ model: models.anthropic, max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'a b c d e f' }] }),
      });
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain('event: message_start');
      expect(text).toMatch(/event: error\ndata: \{"type":"error","error":\{"type":"api_error"/);
      const row = await settled(res.headers.get('x-request-id')!);
      expect(row.status).toBe('error');
    } finally {
      anthropic.mode = { kind: 'ok' };
    }
  });
});

// Issue 19, "billing exactly what providers charge": tokens read from and written to a provider's
// prompt cache are billed at the model's cached_input_price and cache_write_price, whatever the
// client's protocol and the channel's; the mocks report them in each provider's own fields.
describe('prompt-cache tokens, billed at their own prices', () => {
  const prices = { input_price: 3_000_000, output_price: 15_000_000, cached_input_price: 300_000, cache_write_price: 3_750_000 };
  const priced: Record<'openai' | 'anthropic' | 'gemini', string> = {} as never;
  let pkey: string;

  beforeAll(async () => {
    const sql = db();
    const group = await createGroup(sql);
    const user = await createUser(sql, { group });
    await sql`select admin.wallet_credit(${sql.json({ user_id: user.id, amount_micros: 1_000_000_000 })})`;
    pkey = (await createKey(sql, { user_id: user.id })).key;
    for (const t of ['openai', 'anthropic', 'gemini'] as const) {
      priced[t] = unique(`cached-via-${t}`);
      await sql`select admin.model_upsert(${sql.json({ name: priced[t], ...prices })})`;
    }
    await createChannel(sql, { type: 'openai', base_url: openai.url, models: [priced.openai], groups: [group] });
    await createChannel(sql, { type: 'anthropic', base_url: anthropic.url, models: [priced.anthropic], groups: [group] });
    await createChannel(sql, { type: 'gemini', base_url: gemini.url, models: [priced.gemini], groups: [group] });
  });

  /** The request's log and ledger rows, and what the SQL cost formula makes of the usage they hold. */
  async function billed(requestId: string) {
    const row = await settled(requestId);
    const [l] = await db()`
      select l.prompt_tokens, l.completion_tokens, l.cached_tokens, l.cache_write_tokens, l.amount_micros::bigint as amount,
             private.cost_micros(l.prompt_tokens, l.completion_tokens, l.cached_tokens, l.cache_write_tokens,
                                 ${prices.input_price}, ${prices.output_price}, ${prices.cached_input_price},
                                 ${prices.cache_write_price}, null, 1, 1)::bigint as formula
        from private.ledger l where l.request_id = ${requestId}`;
    return { row, l };
  }

  const chat = (model: string, content: string, stream = false) =>
    fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${pkey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream, ...(stream ? { stream_options: { include_usage: true } } : {}), messages: [{ role: 'user', content }] }),
    });

  it('Anthropic through /v1/messages, stream and not: reads and writes apart from the input, the prompt all three', async () => {
    const pclient = new Anthropic({ apiKey: pkey, baseURL: gw.url, maxRetries: 0 });
    const { data: msg, response } = await pclient.messages
      .create({ model: priced.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'hello there mock:cache:400:100' }] })
      .withResponse();
    expect(msg.usage).toMatchObject({ cache_read_input_tokens: 400, cache_creation_input_tokens: 100 });
    const a = await billed(response.headers.get('x-request-id')!);
    expect(a.l).toMatchObject({ prompt_tokens: msg.usage.input_tokens + 500, cached_tokens: 400, cache_write_tokens: 100 });
    expect(a.l.amount).toBe(a.l.formula);
    // 400 cached at a tenth of the input price and 100 written at 1.25×: not 500 more at the input price.
    const allInput = BigInt(Math.round(((msg.usage.input_tokens + 500) * prices.input_price + a.l.completion_tokens * prices.output_price) / 1e6));
    expect(BigInt(a.l.amount)).toBeLessThan(allInput);

    const stream = pclient.messages.stream({ model: priced.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'again mock:cache:300:60' }] });
    const final = await stream.finalMessage();
    const id = (await stream.withResponse()).response.headers.get('x-request-id')!;
    const b = await billed(id);
    expect(b.l).toMatchObject({ prompt_tokens: final.usage.input_tokens + 360, cached_tokens: 300, cache_write_tokens: 60 });
    expect(b.l.amount).toBe(b.l.formula);
  });

  it('Anthropic behind /v1/chat/completions, stream and not: the same tokens, the same bill', async () => {
    const res = await chat(priced.anthropic, 'hello there mock:cache:400:100');
    const body = await res.json();
    expect(body.usage.prompt_tokens_details).toEqual({ cached_tokens: 400 });
    expect(body.usage.cache_creation_input_tokens).toBe(100);
    const a = await billed(res.headers.get('x-request-id')!);
    expect(a.l).toMatchObject({ prompt_tokens: body.usage.prompt_tokens, cached_tokens: 400, cache_write_tokens: 100 });
    expect(a.l.amount).toBe(a.l.formula);

    const s = await chat(priced.anthropic, 'again mock:cache:300:60', true);
    await s.text();
    const b = await billed(s.headers.get('x-request-id')!);
    expect(b.l).toMatchObject({ cached_tokens: 300, cache_write_tokens: 60 });
    expect(b.l.amount).toBe(b.l.formula);
  });

  it('OpenAI cached_tokens and Gemini cachedContentTokenCount are billed at the cached price', async () => {
    for (const [t, content] of [['openai', 'a b c d e f g h mock:cached:5'], ['gemini', 'a b c d e f g h mock:cached:3']] as const) {
      for (const stream of [false, true]) {
        const res = await chat(priced[t], content, stream);
        await res.text();
        const { l } = await billed(res.headers.get('x-request-id')!);
        expect(l, `${t} stream=${stream}`).toMatchObject({ cached_tokens: t === 'openai' ? 5 : 3 });
        expect(Number(l.cache_write_tokens ?? 0)).toBe(0);
        expect(l.amount).toBe(l.formula);
      }
    }
  });
});
