// The upstream's own model listing, per channel type, in its real wire format (the panel's
// "Import models"; see upstream-models.ts). Where the listing comes in pages, the next page's
// request is built from the previous answer.
//   openai:    GET {base}/v1/models                   Authorization: Bearer  → data[].id
//   azure:     GET {base}/openai/models?api-version=… api-key                → data[].id
//   anthropic: GET {base}/v1/models?limit=1000        x-api-key, anthropic-version → data[].id,
//              more pages while has_more (after_id = last_id)
//   gemini:    GET {base}/v1beta/models?pageSize=1000 x-goog-api-key → models[].name without
//              "models/", only models that support generateContent (what a gemini channel calls),
//              more pages while nextPageToken
import { ANTHROPIC_VERSION } from './anthropic';
import { AZURE_DEFAULT_API_VERSION, openAiUrl } from './openai';
import type { ChannelLike } from './index';
import type { UpstreamCall } from './types';

export interface ModelPage {
  ids: string[];
  /** The next page's token (Anthropic's last_id, Gemini's nextPageToken), if there is one. */
  next: string | null;
}

/** The request for one page of the channel's model listing (`after` from the previous page). */
export function modelListCall(channel: ChannelLike, key: string, after: string | null): Omit<UpstreamCall, 'body'> {
  const cfg = channel.config ?? {};
  const base = channel.baseUrl.replace(/\/+$/, '');
  let url: string;
  let headers: Record<string, string>;
  if (channel.type === 'openai') {
    url = openAiUrl(base, 'models');
    headers = { authorization: `Bearer ${key}` };
  } else if (channel.type === 'azure') {
    const version = encodeURIComponent(String(cfg.api_version ?? AZURE_DEFAULT_API_VERSION));
    url = `${base.replace(/\/openai$/, '')}/openai/models?api-version=${version}`;
    headers = { 'api-key': key };
  } else if (channel.type === 'anthropic') {
    url = `${base.replace(/\/v1$/, '')}/v1/models?limit=1000${after ? `&after_id=${encodeURIComponent(after)}` : ''}`;
    headers = { 'x-api-key': key, 'anthropic-version': String(cfg.anthropic_version ?? ANTHROPIC_VERSION) };
  } else {
    const root = /\/v1(beta|alpha)?$/.test(base) ? base : `${base}/${cfg.api_version ?? 'v1beta'}`;
    url = `${root}/models?pageSize=1000${after ? `&pageToken=${encodeURIComponent(after)}` : ''}`;
    headers = { 'x-goog-api-key': key };
  }
  headers.accept = 'application/json';
  const override = cfg.header_override;
  if (override && typeof override === 'object') for (const [k, v] of Object.entries(override)) headers[k.toLowerCase()] = String(v);
  return { url, headers };
}

/** One page of the listing read from the upstream's answer, or null when it is not a model list. */
export function readModelPage(type: ChannelLike['type'], answer: unknown): ModelPage | null {
  const a = answer as Record<string, any> | null;
  if (!a || typeof a !== 'object') return null;
  const strings = (xs: unknown[]) => xs.filter((x): x is string => typeof x === 'string' && x !== '');
  if (type === 'gemini') {
    if (!Array.isArray(a.models)) return null;
    const chat = a.models.filter((m: any) => !Array.isArray(m?.supportedGenerationMethods) || m.supportedGenerationMethods.includes('generateContent'));
    return { ids: strings(chat.map((m: any) => (typeof m?.name === 'string' ? m.name.replace(/^models\//, '') : null))), next: a.nextPageToken || null };
  }
  if (!Array.isArray(a.data)) return null;
  const ids = strings(a.data.map((m: any) => m?.id));
  return { ids, next: type === 'anthropic' && a.has_more === true && typeof a.last_id === 'string' ? a.last_id : null };
}
