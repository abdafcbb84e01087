// `fetch` for step bodies, through the host's `fetch`: only inside a step
// body, only to hosts on the workflow's allow-list, secrets redacted from
// what is journaled. The request and response are the usual `fetch`
// shapes, reduced to what a durable step needs (bodies are read whole).

import { durable, op } from './ops.js';
import { toMs } from './duration.js';

/** Case-insensitive header map, shaped like the Fetch `Headers`. */
export class Headers {
  #map = new Map();

  constructor(init) {
    if (init instanceof Headers) init = [...init.entries()];
    else if (init && typeof init === 'object' && !Array.isArray(init)) init = Object.entries(init);
    for (const [k, v] of init ?? []) this.append(k, v);
  }

  append(name, value) {
    const key = String(name).toLowerCase();
    const prev = this.#map.get(key);
    this.#map.set(key, prev === undefined ? String(value) : `${prev}, ${value}`);
  }

  set(name, value) {
    this.#map.set(String(name).toLowerCase(), String(value));
  }

  get(name) {
    return this.#map.get(String(name).toLowerCase()) ?? null;
  }

  has(name) {
    return this.#map.has(String(name).toLowerCase());
  }

  delete(name) {
    this.#map.delete(String(name).toLowerCase());
  }

  forEach(fn, thisArg) {
    for (const [k, v] of this.#map) fn.call(thisArg, v, k, this);
  }

  entries() {
    return this.#map.entries();
  }

  keys() {
    return this.#map.keys();
  }

  values() {
    return this.#map.values();
  }

  [Symbol.iterator]() {
    return this.#map.entries();
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A response read whole, shaped like the Fetch `Response`. */
export class Response {
  #body;

  constructor(body, init = {}) {
    this.#body = typeof body === 'string' ? encoder.encode(body) : (body ?? new Uint8Array());
    this.status = init.status ?? 200;
    this.statusText = init.statusText ?? '';
    this.headers = new Headers(init.headers);
    this.url = init.url ?? '';
    this.bodyUsed = false;
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  #take() {
    if (this.bodyUsed) throw new TypeError('the response body was already read');
    this.bodyUsed = true;
    return this.#body;
  }

  async arrayBuffer() {
    const b = this.#take();
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  }

  async bytes() {
    return this.#take();
  }

  async text() {
    return decoder.decode(this.#take());
  }

  async json() {
    return JSON.parse(await this.text());
  }
}

/** Why `fetch` got no response: `name` is `Fetch<Kind>`. */
export class FetchError extends TypeError {
  constructor(kind, message) {
    super(message);
    this.name = `Fetch${kind}`;
    // A request that can never succeed is not worth retrying.
    this.nonRetryable = kind === 'NotInStep' || kind === 'Denied' || kind === 'InvalidRequest';
  }
}

const KINDS = {
  'not-in-step': 'NotInStep',
  denied: 'Denied',
  'invalid-request': 'InvalidRequest',
  timeout: 'Timeout',
  failed: 'Failed',
};

function bodyBytes(body) {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof URLSearchParams) return encoder.encode(body.toString());
  throw new TypeError('fetch: the body must be a string, bytes or URLSearchParams');
}

/**
 * `fetch(url, init)` from a step body. `init.timeout` (weft) gives up after
 * a duration (default 30 s).
 */
export async function fetch(input, init = {}) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input?.url;
  if (typeof url !== 'string') throw new TypeError('fetch: expected a URL');
  const headers = new Headers(init.headers ?? input?.headers);
  const request = {
    method: (init.method ?? input?.method ?? 'GET').toUpperCase(),
    url,
    headers: [...headers.entries()],
    body: bodyBytes(init.body),
    timeoutMs: init.timeout === undefined ? undefined : BigInt(toMs(init.timeout, 'fetch timeout')),
  };
  const r = await op(durable.fetch(request));
  if (r.tag === 'err') {
    const kind = KINDS[r.val.tag] ?? 'Failed';
    throw new FetchError(kind, r.val.val);
  }
  const res = r.val;
  return new Response(res.body, { status: res.status, headers: res.headers, url });
}
