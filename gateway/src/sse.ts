// Server-sent events, OpenAI flavour: split the upstream byte stream into events, watch for the
// usage chunk, and drop it when the client did not ask for usage. Everything else is passed on
// byte for byte, as soon as it arrives.

const encoder = new TextEncoder();

export interface StreamUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

export interface SseWatch {
  usage: StreamUsage | null;
  sawDone: boolean;
  /** Characters of content delivered to the client (text and tool-call arguments). */
  deliveredChars: number;
  /** The content itself, for a tokenizer count when the upstream reports no usage. */
  delivered: string[];
  finishReason: string | null;
  /** The upstream sent an event whose data is not JSON: the stream ends there, with an error. */
  malformed: boolean;
  /** Sees every chat chunk that reaches the client (the cache assembles answers with it). */
  onChunk?: (chunk: any) => void;
}

export function newWatch(): SseWatch {
  return { usage: null, sawDone: false, deliveredChars: 0, delivered: [], finishReason: null, malformed: false };
}

/** Notes delivered content (text or tool-call arguments). */
export function noteDelivered(watch: SseWatch, text: string): void {
  if (!text) return;
  watch.deliveredChars += text.length;
  watch.delivered.push(text);
}

/**
 * Returns a function turning upstream text into what the client should receive. Partial events are
 * held back until their terminating blank line arrives.
 */
export function openAiSseFilter(stripUsage: boolean, watch: SseWatch): (text: string, final?: boolean) => Uint8Array | null {
  let buffer = '';
  return (text: string, final = false) => {
    buffer += text;
    let out = '';
    for (;;) {
      const m = watch.malformed ? null : /\r?\n\r?\n/.exec(buffer);
      if (!m) break;
      const event = buffer.slice(0, m.index);
      const sep = m[0];
      buffer = buffer.slice(m.index + sep.length);
      const kept = filterEvent(event, stripUsage, watch);
      if (kept !== null) out += kept + sep;
    }
    if (final && buffer.length > 0 && !watch.malformed) {
      const kept = filterEvent(buffer, stripUsage, watch);
      if (kept !== null) out += kept;
      buffer = '';
    }
    return out.length > 0 ? encoder.encode(out) : null;
  };
}

/** The event to send on (usually unchanged), or null to drop it. */
function filterEvent(event: string, stripUsage: boolean, watch: SseWatch): string | null {
  const dataAt = event.indexOf('data:');
  if (dataAt < 0) return event; // comments, keepalives, event names: pass on
  const data = event.slice(dataAt + 5).trim();
  if (data === '[DONE]') {
    watch.sawDone = true;
    return event;
  }
  if (data === '') return event; // an empty data field: a keepalive of sorts
  let chunk: any;
  try {
    chunk = JSON.parse(data);
  } catch {
    chunk = null;
  }
  if (!chunk || typeof chunk !== 'object') {
    // Not an OpenAI event: nothing after it can be trusted, and nothing of it is passed on.
    watch.malformed = true;
    return null;
  }
  const choices: any[] = Array.isArray(chunk.choices) ? chunk.choices : [];
  for (const c of choices) {
    const d = c?.delta ?? {};
    if (typeof d.content === 'string') noteDelivered(watch, d.content);
    if (typeof c?.text === 'string') noteDelivered(watch, c.text);
    if (Array.isArray(d.tool_calls)) {
      for (const t of d.tool_calls) noteDelivered(watch, t?.function?.arguments ?? '');
    }
    if (c?.finish_reason) watch.finishReason = c.finish_reason;
  }
  watch.onChunk?.(chunk);
  if (!chunk.usage) return event;
  watch.usage = chunk.usage;
  if (!stripUsage) return event;
  // The client did not ask for usage: drop the usage-only chunk OpenAI sends last, and take usage
  // off a content chunk that carries it (some OpenAI-compatible upstreams do that).
  if (choices.length === 0) return null;
  delete chunk.usage;
  return event.slice(0, dataAt) + 'data: ' + JSON.stringify(chunk);
}

/** One server-sent event: its `event:` name (if any) and its `data:` lines joined. */
export interface SseEvent {
  event: string | null;
  data: string;
}

/**
 * Splits a byte stream (as text) into whole events; an incomplete event waits for its blank line.
 * Used by the adapters that convert a provider's stream into another wire format.
 */
export function sseParser(): (text: string, final?: boolean) => SseEvent[] {
  let buffer = '';
  const parse = (block: string): SseEvent | null => {
    let event: string | null = null;
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    return data.length > 0 || event ? { event, data: data.join('\n') } : null;
  };
  return (text: string, final = false) => {
    buffer += text;
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r?\n\r?\n/.exec(buffer);
      if (!m) break;
      const ev = parse(buffer.slice(0, m.index));
      buffer = buffer.slice(m.index + m[0].length);
      if (ev) out.push(ev);
    }
    if (final && buffer.trim().length > 0) {
      const ev = parse(buffer);
      buffer = '';
      if (ev) out.push(ev);
    }
    return out;
  };
}

/** Formats one event for the wire. */
export function sseFormat(data: unknown, event?: string): string {
  return `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
}
