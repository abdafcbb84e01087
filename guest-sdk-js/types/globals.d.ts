// The globals a weft JavaScript workflow has (a subset of the Workers
// runtime's): `fetch` for step bodies, timers, and the encoders.
declare function fetch(
  input: string | URL | { url: string; method?: string; headers?: HeadersInit },
  init?: { method?: string; headers?: HeadersInit; body?: string | Uint8Array | ArrayBuffer; timeout?: number | string },
): Promise<Response>;
type HeadersInit = Headers | Record<string, string> | [string, string][];
declare class Headers {
  constructor(init?: HeadersInit);
  append(name: string, value: string): void;
  set(name: string, value: string): void;
  get(name: string): string | null;
  has(name: string): boolean;
  delete(name: string): void;
  forEach(fn: (value: string, key: string, parent: Headers) => void): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}
declare class Response {
  constructor(body?: string | Uint8Array | null, init?: { status?: number; statusText?: string; headers?: HeadersInit });
  readonly status: number;
  readonly statusText: string;
  readonly ok: boolean;
  readonly headers: Headers;
  readonly url: string;
  readonly bodyUsed: boolean;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json<T = unknown>(): Promise<T>;
}
declare class URL {
  constructor(url: string, base?: string | URL);
  href: string;
  host: string;
  hostname: string;
  pathname: string;
  search: string;
  searchParams: URLSearchParams;
  toString(): string;
}
declare class URLSearchParams {
  constructor(init?: string | Record<string, string>);
  get(name: string): string | null;
  set(name: string, value: string): void;
  toString(): string;
}
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  decode(input?: Uint8Array | ArrayBuffer): string;
}
declare function setTimeout(fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): number;
declare function clearTimeout(id?: number): void;
declare function setInterval(fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): number;
declare function clearInterval(id?: number): void;
declare const console: { log(...a: unknown[]): void; error(...a: unknown[]): void; warn(...a: unknown[]): void; info(...a: unknown[]): void };
declare const performance: { now(): number };
declare const crypto: { getRandomValues<T extends ArrayBufferView>(a: T): T; randomUUID(): string };
