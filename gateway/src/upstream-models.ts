// GET /internal/channels/:id/upstream-models: a channel's model list as its upstream lists it,
// for the admin panel's "Import models". The panel holds no upstream key (DESIGN §7), so the
// gateway reads the list: it checks the caller's key (gateway.channel_models_source: only the
// panel's five-minute key for this channel, admin.channel_test_key with no model), decrypts the
// channel's first enabled key and calls the upstream's listing (adapters/models.ts) through the
// SSRF-guarded client. Off the request path; nothing is billed or logged as a request.
import { sql } from './db';
import { GatewayError } from './errors';
import { channelsFor, options, optionsReady, type Channel } from './snapshot';
import { SsrfError, upstreamFetch } from './ssrf';
import { modelListCall, readModelPage } from './adapters/models';
import { upstreamErrorOf } from './adapters/index';

/** Pages followed at most (Anthropic, Gemini): a listing longer than this is cut, and says so. */
const MAX_PAGES = 20;

const upstreamError = (status: number, code: string, message: string) => new GatewayError(status, message, 'upstream_error', code);

/** The listing's pages, one call each, until the upstream says there are no more. */
async function fetchListing(channel: Channel): Promise<{ ids: string[]; truncated: boolean }> {
  const ids = new Set<string>();
  let after: string | null = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const call = modelListCall(channel, channel.keys[0], after);
    const host = new URL(call.url).host;
    let res: Response;
    try {
      res = await upstreamFetch(call.url, { method: 'GET', headers: call.headers, signal: AbortSignal.timeout(options.ProbeTimeoutMs as number) }, options.AllowPrivateUpstreams === true);
    } catch (err) {
      if (err instanceof SsrfError) {
        throw upstreamError(502, 'upstream_private_address', `Refused to call ${host}: ${err.message}. If this upstream is yours, turn on "Allow private upstreams" in Settings.`);
      }
      throw upstreamError(502, 'upstream_unreachable', `Could not reach ${host}: ${(err as Error)?.message ?? err}.`);
    }
    const payload = new Uint8Array(await res.arrayBuffer());
    if (res.status === 401 || res.status === 403) {
      throw upstreamError(502, 'upstream_unauthorized', `The upstream refused the channel's key (HTTP ${res.status}): ${upstreamErrorOf(payload).message}`);
    }
    if (res.status === 404 || res.status === 405 || res.status === 501) {
      throw upstreamError(502, 'upstream_no_model_listing', `The upstream at ${host} has no model listing (GET ${new URL(call.url).pathname} answered HTTP ${res.status}); enter the channel's models by hand.`);
    }
    if (!res.ok) throw upstreamError(502, 'upstream_error', `The upstream's model listing answered HTTP ${res.status}: ${upstreamErrorOf(payload).message}`);
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      /* not JSON: said below */
    }
    const got = readModelPage(channel.type, parsed);
    if (!got) {
      throw upstreamError(502, 'upstream_no_model_listing', `The upstream at ${host} answered GET ${new URL(call.url).pathname} with something that is not a model list; enter the channel's models by hand.`);
    }
    for (const id of got.ids) ids.add(id);
    if (!got.next) return { ids: [...ids], truncated: false };
    after = got.next;
  }
  return { ids: [...ids], truncated: true };
}

export async function upstreamModels(channelId: number, keyHash: Buffer | null): Promise<{ object: 'list'; channel_id: number; data: { id: string }[]; truncated: boolean }> {
  const [src] = await sql`select * from gateway.channel_models_source(${keyHash}, ${channelId})`;
  const channel = (await channelsFor([{ channel_id: Number(src.id), version: src.version, model: '' }])).get(Number(src.id));
  if (!channel || channel.unusable) {
    throw new GatewayError(503, `The gateway cannot open channel ${channelId}'s keys: ${channel?.unusable ?? 'not found'}.`, 'service_unavailable', 'channels_unavailable');
  }
  if (channel.keys.length === 0) {
    throw new GatewayError(400, `Channel ${channelId} has no enabled upstream key, so its upstream cannot be asked for its models. Add a key on the channel's page.`, 'invalid_request_error', 'invalid_channel');
  }
  await optionsReady();   // (ProbeTimeoutMs and AllowPrivateUpstreams come from them)
  const { ids, truncated } = await fetchListing(channel);
  return { object: 'list', channel_id: channel.id, data: ids.sort().map((id) => ({ id })), truncated };
}
