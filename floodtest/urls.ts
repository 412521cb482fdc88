// URL lists: reading the seed's URL file, parsing it into a compact target table, and generating it.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

/** A URL that floodtest cannot use; `line` is 1-based when it came from a file. */
export class UrlError extends Error {
  readonly code = 'C1M_BAD_URL';
  constructor(message: string, readonly line?: number) {
    super(line === undefined ? message : `line ${line}: ${message}`);
    this.name = 'UrlError';
  }
}

/** One destination (scheme + host + port); many URLs share one. */
export interface Endpoint {
  tls: boolean;
  /** Host as written in the URL (a name or an address, without IPv6 brackets). */
  host: string;
  port: number;
  /** Value of the Host header. */
  hostHeader: string;
  /** Address to connect to, filled by `resolveEndpoints` (null until then, or when the name did not resolve). */
  address: string | null;
  /** Why the name did not resolve (an err.code such as ENOTFOUND), counted for each connect to it. */
  resolveError: string | null;
}

/**
 * URLs parsed once into a table: endpoints deduplicated, per URL only an endpoint index and a path string,
 * so 100k URLs cost a few MB and the request line is built when a connection starts.
 */
export interface TargetTable {
  endpoints: Endpoint[];
  endpointOf: Uint32Array;
  paths: string[];
}

/** Parses http:// and https:// URLs into a TargetTable; `firstLine` numbers errors (1-based file lines). */
export function parseTargets(urls: readonly string[], lines?: readonly number[]): TargetTable {
  if (urls.length === 0) throw new UrlError('no URLs given');
  const endpoints: Endpoint[] = [];
  const byKey = new Map<string, number>();
  const endpointOf = new Uint32Array(urls.length);
  const paths = new Array<string>(urls.length);
  for (let i = 0; i < urls.length; i++) {
    const raw = urls[i]!;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new UrlError(`not a URL: ${JSON.stringify(raw.slice(0, 80))}`, lines?.[i]);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new UrlError(`only http:// and https:// URLs are supported: ${JSON.stringify(raw.slice(0, 80))}`, lines?.[i]);
    }
    if (u.username || u.password) throw new UrlError(`credentials in URLs are not supported: ${JSON.stringify(raw.slice(0, 80))}`, lines?.[i]);
    const tls = u.protocol === 'https:';
    const port = u.port === '' ? (tls ? 443 : 80) : Number(u.port);
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const key = `${u.protocol}//${u.host}:${port}`;
    let idx = byKey.get(key);
    if (idx === undefined) {
      idx = endpoints.length;
      byKey.set(key, idx);
      endpoints.push({ tls, host, port, hostHeader: u.host, address: isIP(host) ? host : null, resolveError: null });
    }
    endpointOf[i] = idx;
    paths[i] = u.pathname + u.search;
  }
  return { endpoints, endpointOf, paths };
}

/** Resolves endpoint host names once (never per connection); failures are kept as the endpoint's error code. */
export async function resolveEndpoints(table: TargetTable): Promise<void> {
  await Promise.all(
    table.endpoints.map(async (ep) => {
      if (ep.address !== null) return;
      try {
        ep.address = (await lookup(ep.host)).address;
      } catch (err) {
        ep.resolveError = (err as NodeJS.ErrnoException).code ?? 'ENOTFOUND';
      }
    }),
  );
}

/** URLs read from a file, with the 1-based line number of each (for error messages). */
export interface UrlList {
  urls: string[];
  lines: number[];
}

/** Splits URL-file text: one URL per line; blank lines and lines starting with `#` are skipped. */
export function parseUrlText(text: string): UrlList {
  const urls: string[] = [];
  const lines: number[] = [];
  const all = text.split(/\r?\n/);
  for (let i = 0; i < all.length; i++) {
    const line = all[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    urls.push(line);
    lines.push(i + 1);
  }
  return { urls, lines };
}

/** Reads a URL file (`-` = stdin) line by line. */
export async function readUrlFile(path: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<UrlList> {
  const input = path === '-' ? stdin : createReadStream(path, { encoding: 'utf8' });
  const rl = createInterface({ input, crlfDelay: Infinity });
  const urls: string[] = [];
  const lines: number[] = [];
  let n = 0;
  for await (const raw of rl) {
    n++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    urls.push(line);
    lines.push(n);
  }
  return { urls, lines };
}

/** Options of the URL generator (`floodtest urls`). */
export interface GenerateOptions {
  /** Base URL; the id is appended to it, e.g. `http://127.0.0.1:8000/test/`. */
  base: string;
  /** How many URLs (ids start..start+count-1). */
  count: number;
  /** First id (default 1, as the seed). */
  start?: number;
  /** Hosts to spread ids over, replacing the base URL's host (default: the base URL's host). */
  hosts?: readonly string[];
  /** Ports to spread ids over, replacing the base URL's port (default: the base URL's port). */
  ports?: readonly number[];
}

/**
 * Yields the URLs `base + id`. With several hosts and/or ports, id number k (0-based) goes to combination
 * k mod (hosts × ports), host-major, so every destination gets an equal, interleaved share: that is what keeps one
 * source/destination pair below the ~14k ephemeral-port stall on one machine.
 */
export function* generateUrls(opts: GenerateOptions): Generator<string> {
  let base: URL;
  try {
    base = new URL(opts.base);
  } catch {
    throw new UrlError(`--base: not a URL: ${JSON.stringify(opts.base)}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new UrlError('--base: only http:// and https:// URLs');
  const start = opts.start ?? 1;
  const hosts = opts.hosts && opts.hosts.length > 0 ? opts.hosts : [base.hostname];
  const ports = opts.ports && opts.ports.length > 0 ? opts.ports.map(String) : [base.port];
  const prefixes: string[] = [];
  for (const h of hosts) {
    const host = h.includes(':') && !h.startsWith('[') ? `[${h}]` : h;
    for (const p of ports) prefixes.push(`${base.protocol}//${host}${p === '' ? '' : `:${p}`}`);
  }
  const rest = base.pathname + base.search; // the id is appended after the path (and query, if the base has one)
  for (let k = 0; k < opts.count; k++) yield `${prefixes[k % prefixes.length]!}${rest}${start + k}`;
}
