// The latency marker carried inside message text: `@t=<microseconds since the Unix epoch>`.
// msggen writes it, floodtest reads it back on arrival; this module is the only place that knows its shape.

/** Prefix that introduces the send-time stamp inside a message. */
export const MARKER_PREFIX = '@t=';

const PREFIX_BYTES = [0x40, 0x74, 0x3d]; // '@', 't', '='

/** Current wall-clock time in microseconds since the Unix epoch (sub-ms resolution from the monotonic clock). */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** Formats the marker for a scheduled send time given in microseconds since the epoch. */
export function formatMarker(micros: number): string {
  return MARKER_PREFIX + Math.round(micros).toString();
}

/** The standard message text: `<prefix> Num = <n> @t=<micros>` (the seed's "Fake message Num = N" plus the marker). */
export function formatMessage(prefix: string, n: number, micros: number): string {
  return `${prefix} Num = ${n} ${formatMarker(micros)}`;
}

/**
 * Finds the last marker in `buf[start, end)` and returns its microsecond value, or -1 when there is none.
 * Works on raw bytes so the receiver never has to decode a chunk into a string; the last marker wins
 * because message text before it is user data that could itself contain `@t=`.
 */
export function findMarker(buf: Uint8Array, start = 0, end = buf.length): number {
  for (let i = end - PREFIX_BYTES.length; i >= start; i--) {
    if (buf[i] !== 0x40 || buf[i + 1] !== 0x74 || buf[i + 2] !== 0x3d) continue;
    let j = i + 3;
    let value = 0;
    let digits = 0;
    while (j < end) {
      const c = buf[j]!;
      if (c < 0x30 || c > 0x39) break;
      value = value * 10 + (c - 0x30);
      digits++;
      j++;
    }
    // 16 digits cover microsecond epoch times until the year 2286 and stay below 2^53.
    if (digits > 0 && digits <= 16) return value;
  }
  return -1;
}

/** String form of findMarker, for tests and tools that already hold text. */
export function parseMarker(text: string): number {
  return findMarker(Buffer.from(text, 'utf8'));
}
