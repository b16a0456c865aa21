// The official `openai` npm client pointed at the gateway: chat (both modes, with a tool call),
// legacy completions, embeddings, models, and typed errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { closeDb, createChannel, createGroup, createKey, createUser, db, unique } from '../support/db';
import { startGateway, type RunningGateway } from '../support/gateway';
import { embeddingFor, startMockUpstream, type MockUpstream } from '../support/mock-upstream';

let gw: RunningGateway;
let upstream: MockUpstream;
let client: OpenAI;
let model: string;
let embedModel: string;

beforeAll(async () => {
  upstream = await startMockUpstream();
  const sql = db();
  const group = await createGroup(sql);
  model = unique('gpt-4o');
  embedModel = unique('text-embedding');
  const user = await createUser(sql, { group });
  const { key } = await createKey(sql, { user_id: user.id });
  await createChannel(sql, { base_url: upstream.url, models: [model, embedModel], groups: [group] });
  gw = await startGateway();
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.stop();
  await upstream?.close();
  await closeDb();
});

describe('openai npm client through the gateway', () => {
  it('chat completion', async () => {
    const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'ping pong' }] });
    expect(r.choices[0].message.content).toBe('echo: ping pong');
    expect(r.usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 3 });
  });

  it('chat completion, streamed', async () => {
    const stream = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: 'one two three' }] });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    expect(text).toBe('echo: one two three');
    expect(chunks).toBeGreaterThan(3);
  });

  it('streamed usage when asked for', async () => {
    const stream = await client.chat.completions.create({
      model,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'a b' }],
    });
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject({ prompt_tokens: 2, completion_tokens: 3 });
  });

  it('a tool call, in both modes', async () => {
    const tools: OpenAI.ChatCompletionTool[] = [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
    ];
    const r = await client.chat.completions.create({ model, tools, messages: [{ role: 'user', content: 'weather?' }] });
    expect(r.choices[0].finish_reason).toBe('tool_calls');
    expect(r.choices[0].message.tool_calls?.[0]).toMatchObject({ type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } });
    // The tools array reached the upstream as the client sent it.
    expect(upstream.calls.at(-1)!.body.tools).toEqual(tools);

    const runner = client.chat.completions.stream({ model, tools, messages: [{ role: 'user', content: 'weather?' }] });
    const final = await runner.finalChatCompletion();
    expect((final.choices[0].message.tool_calls?.[0] as any).function).toEqual({ name: 'get_weather', arguments: '{"city":"Paris"}' });
  });

  it('vision and JSON mode pass through untouched', async () => {
    const content: OpenAI.ChatCompletionContentPart[] = [
      { type: 'text', text: 'what is this' },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
    ];
    await client.chat.completions.create({ model, response_format: { type: 'json_object' }, messages: [{ role: 'user', content }] });
    const sent = upstream.calls.at(-1)!.body;
    expect(sent.messages[0].content).toEqual(content);
    expect(sent.response_format).toEqual({ type: 'json_object' });
  });

  it('legacy completions', async () => {
    const r = await client.completions.create({ model, prompt: 'hello' });
    expect(r.choices[0].text).toBe('echo: hello');
  });

  it('embeddings', async () => {
    const r = await client.embeddings.create({ model: embedModel, input: ['first text', 'second'] });
    expect(r.data).toHaveLength(2);
    const expected = embeddingFor('first text');
    r.data[0].embedding.forEach((x, i) => expect(x).toBeCloseTo(expected[i], 6));
    expect(r.usage.prompt_tokens).toBe(3);
  });

  it('models: list and retrieve', async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids.sort()).toEqual([model, embedModel].sort());
    const one = await client.models.retrieve(model);
    expect(one.id).toBe(model);
    await expect(client.models.retrieve('nope')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('typed errors: bad key, unknown model, bad request', async () => {
    const bad = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const e1 = await bad.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(e1.status).toBe(401);
    expect(e1.code).toBe('invalid_api_key');
    expect(e1.requestID ?? e1.request_id ?? e1.headers?.get?.('x-request-id')).toBeTruthy();

    const e2 = await client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    expect(e2).toBeInstanceOf(OpenAI.NotFoundError);
    expect(e2.code).toBe('model_not_found');
    expect(e2.param).toBe('model');

    const e3 = await client.chat.completions.create({ model, messages: [] }).catch((e) => e);
    expect(e3).toBeInstanceOf(OpenAI.BadRequestError);
    expect(e3.param).toBe('messages');
  });
});
