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
