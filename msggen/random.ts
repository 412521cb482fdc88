// Seeded randomness for message ids: a small PRNG (xoshiro128**) with one independent stream per worker, and the
// two id distributions (uniform, zipf) over 1..max.
//
// The seed's msggen used Erlang's `random:uniform`, whose state is per process and seeded identically, so every
// worker sent to the same id sequence. Here each worker's stream is derived from (seed, worker index): the same
// seed replays the same ids, and two workers never share a sequence.

/** Largest id count a distribution accepts (ids are drawn from 1..max). */
export const MAX_IDS = 2 ** 31 - 1;

/** The id distributions msggen knows. */
export const DISTRIBUTIONS = ['uniform', 'zipf'] as const;
export type Distribution = (typeof DISTRIBUTIONS)[number];

/** murmur3's 32-bit finalizer: a bijection on 32-bit words with good avalanche (and fmix32(0) = 0). */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A seeded xoshiro128** generator: 32-bit outputs, period 2^128 - 1. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * The stream of worker `stream` for `seed` (a whole number 0..2^53-1). Each state word is a bijection of one input,
   * so distinct (seed, stream) pairs give distinct states; 16 warm-up rounds spread the difference over all words.
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a whole number 0..2^53-1, got ${seed}`);
    if (!Number.isSafeInteger(stream) || stream < 0 || stream > 0xffffffff) throw new RangeError(`stream must be 0..2^32-1, got ${stream}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    this.s0 = fmix32(lo ^ 0x243f6a88);
    this.s1 = fmix32(hi ^ 0x85a308d3);
    this.s2 = fmix32(stream ^ 0x13198a2e);
    this.s3 = fmix32(lo ^ hi ^ stream ^ 0x03707344) | 1; // never the all-zero state
    for (let i = 0; i < 16; i++) this.nextUint32();
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const s1 = this.s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Draws ids in 1..max. */
export interface IdSampler {
  readonly max: number;
  next(rng: Rng): number;
}

/** Every id in 1..max equally likely. */
export class UniformIds implements IdSampler {
  constructor(readonly max: number) {
    checkMax(max);
  }

  next(rng: Rng): number {
    // 53-bit doubles make the bias of floor(u * max) below 2^-22 for max < 2^31.
    return 1 + Math.floor(rng.nextDouble() * this.max);
  }
}

/**
 * Zipf over 1..max: P(k) ∝ 1 / k^exponent, so id 1 is the most active user and the tail is long.
 *
 * Rejection-inversion (Hörmann & Derflinger 1996, in the form Apache Commons RNG uses: the hat integral
 * H(x) = (x^(1-s) - 1) / (1-s), which has a limit at s = 1): O(1) expected time per draw, O(1) memory, exact for
 * any max. A precomputed CDF would need 8 bytes per id (8 MB for a million ids, per thread) for O(log n) draws.
 */
export class ZipfIds implements IdSampler {
  private readonly hIntegralX1: number;
  private readonly hIntegralMax: number;
  private readonly cut: number;

  constructor(readonly max: number, readonly exponent = 1) {
    checkMax(max);
    if (!(exponent > 0 && exponent <= 10)) throw new RangeError(`zipf exponent must be in (0, 10], got ${exponent}`);
    this.hIntegralX1 = this.hIntegral(1.5) - 1;
    this.hIntegralMax = this.hIntegral(max + 0.5);
    this.cut = 2 - this.hIntegralInverse(this.hIntegral(2.5) - this.h(2));
  }

  next(rng: Rng): number {
    for (;;) {
      // u is uniform in (hIntegralX1, hIntegralMax]: inverting the hat integral lands near k with the hat's mass.
      const u = this.hIntegralMax + rng.nextDouble() * (this.hIntegralX1 - this.hIntegralMax);
      const x = this.hIntegralInverse(u);
      let k = Math.floor(x + 0.5);
      if (k < 1) k = 1;
      else if (k > this.max) k = this.max;
      // Accept at once when x is close enough to k (the common case), else compare with the exact mass of k.
      if (k - x <= this.cut || u >= this.hIntegral(k + 0.5) - this.h(k)) return k;
    }
  }

  /** The hat function h(x) = x^-s. */
  private h(x: number): number {
    return Math.exp(-this.exponent * Math.log(x));
  }

  /** H(x) = (x^(1-s) - 1) / (1-s), or log(x) when s = 1; written with expm1 to stay exact near s = 1. */
  private hIntegral(x: number): number {
    const logX = Math.log(x);
    return helper2((1 - this.exponent) * logX) * logX;
  }

  /** The inverse of H. */
  private hIntegralInverse(x: number): number {
    let t = x * (1 - this.exponent);
    if (t < -1) t = -1; // rounding could push t just below -1, where log1p is undefined
    return Math.exp(helper1(t) * x);
  }
}

/** log1p(x) / x, with its Taylor series near 0. */
function helper1(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.log1p(x) / x : 1 - x * (0.5 - x * (1 / 3 - 0.25 * x));
}

/** expm1(x) / x, with its Taylor series near 0. */
function helper2(x: number): number {
  return Math.abs(x) > 1e-8 ? Math.expm1(x) / x : 1 + x * 0.5 * (1 + (x / 3) * (1 + 0.25 * x));
}

function checkMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 1 || max > MAX_IDS) throw new RangeError(`max must be a whole number 1..${MAX_IDS}, got ${max}`);
}

/** The sampler for a distribution name. */
export function idSampler(dist: Distribution, max: number, zipfExponent = 1): IdSampler {
  return dist === 'zipf' ? new ZipfIds(max, zipfExponent) : new UniformIds(max);
}

/** A fresh random seed (for runs without --seed; the summary reports it so the run can be replayed). */
export function randomSeed(): number {
  const a = new Uint32Array(2);
  globalThis.crypto.getRandomValues(a);
  return (a[0]! & 0x1fffff) * 2 ** 32 + a[1]!;
}
