// Helpers for the server's tests: a raw-socket client that records every byte, and event waits with timeouts.
import assert from 'node:assert/strict';
import net from 'node:net';

/** A raw TCP client that keeps everything it received as latin1 text. */
export class RawClient {
  readonly socket: net.Socket;
  text = '';
  closed = false;
  private readonly closedPromise: Promise<void>;
  private waiters: Array<() => void> = [];

  constructor(port: number, host = '127.0.0.1') {
    this.socket = net.connect({ port, host });
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => {
      this.text += d.toString('latin1');
      this.wake();
    });
    this.socket.on('error', () => {
      /* resets are part of several tests; 'close' follows */
    });
    this.closedPromise = new Promise((resolve) =>
      this.socket.on('close', () => {
        this.closed = true;
        this.wake();
        resolve();
      }),
    );
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once connected. */
  connected(): Promise<void> {
    if (!this.socket.connecting) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
  }

  send(data: string | Buffer): this {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    return this;
  }

  /** Waits until the received text satisfies `pred` (or contains the string). */
  async until(pred: string | ((text: string) => boolean), timeoutMs = 3000): Promise<string> {
    const test = typeof pred === 'string' ? (t: string) => t.includes(pred) : pred;
    const deadline = Date.now() + timeoutMs;
    while (!test(this.text)) {
      const left = deadline - Date.now();
      if (left <= 0 || (this.closed && !test(this.text))) {
        assert.fail(`waited ${timeoutMs} ms for ${typeof pred === 'string' ? JSON.stringify(pred) : 'a condition'}; closed=${this.closed}; got ${JSON.stringify(this.text.slice(-400))}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.text;
  }

  /** Waits until the server closed the connection. */
  async untilClosed(timeoutMs = 3000): Promise<string> {
    await withTimeout(this.closedPromise, timeoutMs, `the server to close the connection (got ${JSON.stringify(this.text.slice(-200))})`);
    return this.text;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Opens a stream: connects, sends `GET <path>` and waits for the response head. */
export async function openStream(port: number, path: string, host = '127.0.0.1'): Promise<RawClient> {
  const c = new RawClient(port, host);
  c.send(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`);
  await c.until('\r\n\r\n');
  return c;
}

/** Rejects with a message naming what was awaited when `p` takes longer than `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `pred` on the event loop until it holds; fails naming `what` after the timeout. */
export async function eventually(pred: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The body of one HTML chunk as the server frames it. */
export function htmlChunk(n: number, escaped: string): string {
  const data = Buffer.from(`Recvd msg #${n}: '${escaped}'<br/>`, 'utf8');
  return data.length.toString(16) + '\r\n' + data.toString('latin1') + '\r\n';
}
