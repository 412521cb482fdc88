// Flag values shared by every CLI: durations, sizes, integers in a range, address and port ranges.
// Each parser throws FlagError naming the flag and what it accepts, so a CLI can print one clear line and exit 2.

/** A bad command-line value; `message` names the flag and the allowed form or range. */
export class FlagError extends Error {
  readonly code = 'C1M_BAD_FLAG';
  constructor(readonly flag: string, message: string) {
    super(`${flag}: ${message}`);
    this.name = 'FlagError';
  }
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `500ms`, `25s`, `10m`, `1h`, `1h30m` or a bare number of seconds into milliseconds. */
export function parseDuration(flag: string, raw: string, min = 0, max = 365 * 24 * 3_600_000): number {
  const text = raw.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(text)) {
    ms = Number(text) * 1000;
  } else {
    const parts = text.match(/(\d+(?:\.\d+)?)(ms|s|m|h)/g);
    if (!parts || parts.join('') !== text) {
      throw new FlagError(flag, `'${raw}' is not a duration (use e.g. 500ms, 25s, 10m, 1h)`);
    }
    ms = 0;
    for (const p of parts) {
      const [, n, unit] = p.match(/(\d+(?:\.\d+)?)(ms|s|m|h)/)!;
      ms += Number(n) * DURATION_UNITS[unit!]!;
    }
  }
  ms = Math.round(ms);
  if (ms < min || ms > max) {
    throw new FlagError(flag, `${raw} is out of range (${formatDuration(min)} to ${formatDuration(max)})`);
  }
  return ms;
}

/** Formats milliseconds compactly: `500ms`, `25s`, `10m`, `1h`. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
};

/** Parses `65536`, `64KiB`, `64k`, `1MiB`, `1MB` into bytes. */
export function parseSize(flag: string, raw: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const m = raw.trim().match(/^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new FlagError(flag, `'${raw}' is not a size (use e.g. 65536, 64KiB, 1MiB)`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (bytes < min || bytes > max) throw new FlagError(flag, `${raw} is out of range (${min} to ${max} bytes)`);
  return bytes;
}

/** Parses a whole number in [min, max]. */
export function parseIntFlag(flag: string, raw: string, min: number, max: number): number {
  const text = raw.trim().replace(/_/g, '');
  if (!/^-?\d+$/.test(text)) throw new FlagError(flag, `'${raw}' is not a whole number (allowed: ${min} to ${max})`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new FlagError(flag, `${raw} is out of range (allowed: ${min} to ${max})`);
  return n;
}

/** Parses a number (fractions allowed) in [min, max]. */
export function parseNumberFlag(flag: string, raw: string, min: number, max: number): number {
  const n = Number(raw.trim());
  if (raw.trim() === '' || !Number.isFinite(n)) throw new FlagError(flag, `'${raw}' is not a number (allowed: ${min} to ${max})`);
  if (n < min || n > max) throw new FlagError(flag, `${raw} is out of range (allowed: ${min} to ${max})`);
  return n;
}

/** Parses one of a fixed set of words. */
export function parseChoice<T extends string>(flag: string, raw: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(raw)) return raw as T;
  throw new FlagError(flag, `'${raw}' is not one of ${choices.join(', ')}`);
}

/** Parses a TCP port 1..65535, or 0 (any free port) when `allowZero`. */
export function parsePort(flag: string, raw: string, allowZero = true): number {
  return parseIntFlag(flag, raw, allowZero ? 0 : 1, 65535);
}

/** Parses `8000`, `8000-8003` or `8000,8002` into a list of ports (at most 4096). */
export function parsePortList(flag: string, raw: string): number[] {
  const out: number[] = [];
  for (const part of raw.split(',')) {
    const [a, b] = part.split('-');
    const lo = parsePort(flag, a ?? '', false);
    const hi = b === undefined ? lo : parsePort(flag, b, false);
    if (hi < lo) throw new FlagError(flag, `range ${part} runs backwards`);
    for (let p = lo; p <= hi; p++) out.push(p);
    if (out.length > 4096) throw new FlagError(flag, 'more than 4096 ports');
  }
  return out;
}

function ipv4ToInt(flag: string, ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new FlagError(flag, `'${ip}' is not an IPv4 address`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * Parses hosts: `127.0.0.1-127.0.0.8` (an IPv4 range), a comma list, or plain names (`localhost`).
 * At most 4096 addresses.
 */
export function parseHostList(flag: string, raw: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const dash = part.indexOf('-');
    if (dash > 0 && /^\d/.test(part)) {
      const lo = ipv4ToInt(flag, part.slice(0, dash));
      const hi = ipv4ToInt(flag, part.slice(dash + 1));
      if (hi < lo) throw new FlagError(flag, `range ${part} runs backwards`);
      if (hi - lo >= 4096) throw new FlagError(flag, 'more than 4096 addresses');
      for (let n = lo; n <= hi; n++) out.push(intToIpv4(n));
    } else {
      out.push(part);
    }
    if (out.length > 4096) throw new FlagError(flag, 'more than 4096 addresses');
  }
  if (out.length === 0) throw new FlagError(flag, 'no host given');
  return out;
}
