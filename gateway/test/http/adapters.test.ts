// The official `openai` npm client through the gateway to every channel type: an OpenAI-type
// channel, an Azure OpenAI channel, an Anthropic Messages channel and a Gemini channel (mock
// upstreams speaking each provider's real wire format). Stream and non-stream, a tool call and its
// result, usage recorded, upstream errors in OpenAI's shape, parameter and header overrides.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { startMockUpstream, type MockUpstream } from '../support/mock-upstream';
import { startMockAnthropic, type MockAnthropic } from '../support/mock-anthropic';
import { startMockGemini, type MockGemini } from '../support/mock-gemini';

let gw: RunningGateway;
let openai: MockUpstream;
let anthropic: MockAnthropic;
let gemini: MockGemini;
let azure: { url: string; calls: { path: string; query: string; apiKey: string | undefined }[]; server: Server };
let client: OpenAI;
const models: Record<'openai' | 'azure' | 'anthropic' | 'gemini', string> = {} as never;

/** Azure OpenAI in front of the OpenAI mock: checks Azure's URL shape and api-key header. */
async function startMockAzure(target: string) {
  const calls: { path: string; query: string; apiKey: string | undefined }[] = [];
  const server = createServer(async (req, res) => {
    const [path, query = ''] = (req.url ?? '').split('?');
    calls.push({ path, query, apiKey: req.headers['api-key'] as string | undefined });
    const m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|completions|embeddings)$/.exec(path);
    if (!m || !/api-version=\d{4}-\d{2}-\d{2}/.test(query) || !req.headers['api-key'] || req.headers.authorization) {
      res.writeHead(m ? 401 : 404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: m ? '401' : 'DeploymentNotFound', message: 'Access denied due to invalid subscription key or wrong API endpoint.' } }));
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const up = await fetch(`${target}/v1/${m[2]}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${req.headers['api-key']}` },
      body: Buffer.concat(chunks),
    });
    res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/json' });
    const reader = up.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      res.write(value);
    }
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}

beforeAll(async () => {
  [openai, anthropic, gemini] = await Promise.all([startMockUpstream(), startMockAnthropic(), startMockGemini()]);
  azure = await startMockAzure(openai.url);
  const sql = db();
  const group = await createGroup(sql);
  for (const t of ['openai', 'azure', 'anthropic', 'gemini'] as const) models[t] = unique(`m-${t}`);
  const user = await createUser(sql, { group });
  const { key } = await createKey(sql, { user_id: user.id });
  await createChannel(sql, { type: 'openai', base_url: openai.url, models: [models.openai], groups: [group] });
  await createChannel(sql, {
    type: 'azure',
    base_url: azure.url,
    models: [models.azure],
    model_mapping: { [models.azure]: 'my-gpt4o-deployment' },
    config: { api_version: '2024-10-21' },
    groups: [group],
  });
  await createChannel(sql, {
    type: 'anthropic',
    base_url: anthropic.url,
    models: [models.anthropic],
    model_mapping: { [models.anthropic]: 'claude-sonnet-4-5' },
    groups: [group],
    config: { header_override: { 'anthropic-beta': 'test-beta-2025' } },
  });
  await createChannel(sql, {
    type: 'gemini',
    base_url: gemini.url,
    models: [models.gemini],
    model_mapping: { [models.gemini]: 'gemini-2.5-flash' },
    groups: [group],
    config: { param_override: { safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }] } },
  });
  gw = await startGateway();
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([openai?.close(), anthropic?.close(), gemini?.close()]);
  await new Promise((r) => azure?.server.close(r));
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

const tools: OpenAI.ChatCompletionTool[] = [
  {
    type: 'function',
    function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  },
];

describe.each(['openai', 'azure', 'anthropic', 'gemini'] as const)('openai client → %s channel', (type) => {
  it('non-stream chat: the answer and the usage', async () => {
    const { data: r, response } = await client.chat.completions
      .create({ model: models[type], messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'ping pong' }] })
      .withResponse();
    expect(r.choices[0].message.content).toBe('echo: ping pong');
    expect(r.choices[0].finish_reason).toBe('stop');
    expect(r.model).toBe(type === 'openai' ? models.openai : type === 'azure' ? 'my-gpt4o-deployment' : models[type]);
    expect(r.usage?.completion_tokens).toBe(3);
    const row = await settled(response.headers.get('x-request-id')!);
    expect(row).toMatchObject({ status: 'ok', completion_tokens: 3, usage_source: 'upstream' });
    expect(row.prompt_tokens).toBeGreaterThan(0);
  });

  it('streamed chat: text in chunks, usage only when asked for', async () => {
    const stream = await client.chat.completions.create({ model: models[type], stream: true, messages: [{ role: 'user', content: 'one two three' }] });
    let text = '';
    let sawUsage = false;
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) sawUsage = true;
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe('echo: one two three');
    expect(finish).toBe('stop');
    expect(sawUsage).toBe(false);

    const withUsage = await client.chat.completions.create({
      model: models[type],
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'a b' }],
    });
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject({ completion_tokens: 3 });
    expect(usage!.prompt_tokens).toBeGreaterThan(0);
  });

  it('a tool call, non-stream and streamed, and the tool result sent back', async () => {
    const r = await client.chat.completions.create({ model: models[type], tools, messages: [{ role: 'user', content: 'weather in Paris?' }] });
    expect(r.choices[0].finish_reason).toBe('tool_calls');
    const call = r.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(call.type).toBe('function');
    expect(call.function.name).toBe('get_weather');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'Paris' });
    expect(call.id).toBeTruthy();

    const runner = client.chat.completions.stream({ model: models[type], tools, messages: [{ role: 'user', content: 'weather in Paris?' }] });
    const final = await runner.finalChatCompletion();
    const streamed = final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(streamed.function.name).toBe('get_weather');
    expect(JSON.parse(streamed.function.arguments)).toEqual({ city: 'Paris' });
    expect(final.choices[0].finish_reason).toBe('tool_calls');

    // Second turn: the tool's result goes back in the provider's own shape.
    const second = await client.chat.completions.create({
      model: models[type],
      tools: type === 'openai' || type === 'azure' ? undefined : tools,
      messages: [
        { role: 'user', content: 'weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: call.id, content: '{"temp":21}' },
      ],
    });
    if (type === 'anthropic') {
      expect(second.choices[0].message.content).toBe('tool said: {"temp":21}');
      const sent = anthropic.calls.at(-1)!.body;
      expect(sent.messages.map((m: any) => m.role)).toEqual(['user', 'assistant', 'user']);
      expect(sent.messages[1].content[0]).toMatchObject({ type: 'tool_use', id: call.id, name: 'get_weather', input: { city: 'Paris' } });
      expect(sent.messages[2].content[0]).toMatchObject({ type: 'tool_result', tool_use_id: call.id, content: '{"temp":21}' });
    } else if (type === 'gemini') {
      expect(second.choices[0].message.content).toBe('tool said: {"temp":21}');
      const sent = gemini.calls.at(-1)!.body;
      expect(sent.contents.map((c: any) => c.role)).toEqual(['user', 'model', 'user']);
      expect(sent.contents[2].parts[0]).toEqual({ functionResponse: { name: 'get_weather', response: { temp: 21 } } });
    } else {
      expect(second.choices[0].message.content).toBe('tool said: {"temp":21}');
    }
  });

  it('upstream errors arrive in OpenAI shape with the upstream status, and are not retried', async () => {
    const mock = type === 'anthropic' ? anthropic : type === 'gemini' ? gemini : openai;
    mock.mode = { kind: 'status', status: 400 };
    try {
      const before = mock.calls.length;
      const e = await client.chat.completions.create({ model: models[type], messages: [{ role: 'user', content: 'x' }] }).catch((err) => err);
      expect(e).toBeInstanceOf(OpenAI.BadRequestError);
      expect(e.status).toBe(400);
      expect(e.message).toContain('says 400');
      expect(mock.calls.length - before).toBe(1);
    } finally {
      mock.mode = { kind: 'ok' };
    }
  });
});

describe('what each provider received', () => {
  it('azure: deployment URL, api-version from config, api-key header', async () => {
    await client.chat.completions.create({ model: models.azure, messages: [{ role: 'user', content: 'hi' }] });
    const c = azure.calls.at(-1)!;
    expect(c.path).toBe('/openai/deployments/my-gpt4o-deployment/chat/completions');
    expect(c.query).toBe('api-version=2024-10-21');
    expect(c.apiKey).toBe('sk-upstream-test');
  });

  it('anthropic: /v1/messages, x-api-key, anthropic-version, header override, converted body', async () => {
    await client.chat.completions.create({
      model: models.anthropic,
      max_tokens: 64,
      stop: ['END'],
      temperature: 0.3,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] },
      ],
    });
    const c = anthropic.calls.at(-1)!;
    expect(c.path).toBe('/v1/messages');
    expect(c.headers['x-api-key']).toBe('sk-upstream-test');
    expect(c.headers['anthropic-version']).toBe('2023-06-01');
    expect(c.headers['anthropic-beta']).toBe('test-beta-2025');
    expect(c.body).toMatchObject({
      model: 'claude-sonnet-4-5',
      system: 'be brief',
      max_tokens: 64,
      stop_sequences: ['END'],
      temperature: 0.3,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }],
    });
  });

  it('gemini: model in the URL, alt=sse for streams, x-goog-api-key, parameter override', async () => {
    const s = await client.chat.completions.create({ model: models.gemini, stream: true, max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] });
    for await (const _ of s) void _;
    const c = gemini.calls.at(-1)!;
    expect(c.path).toBe('/v1beta/models/gemini-2.5-flash:streamGenerateContent');
    expect(c.query).toBe('alt=sse');
    expect(c.headers['x-goog-api-key']).toBe('sk-upstream-test');
    expect(c.body.generationConfig).toEqual({ maxOutputTokens: 20 });
    expect(c.body.safetySettings).toEqual([{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }]);
  });

  it('embeddings on a channel type that has none: a clear 503 naming why', async () => {
    const e = await client.embeddings.create({ model: models.anthropic, input: 'x' }).catch((err) => err);
    expect(e.status).toBe(503);
    expect(e.message).toContain('cannot serve /v1/embeddings');
  });
});
