// The eBPF TCP socket iterator's program, assembled here as raw instructions (no clang, no libbpf).
//
// Why: a NETLINK_SOCK_DIAG dump fills a ~100-byte inet_diag record per matching socket (its addresses, timers,
// queues, uid, inode, cgroup...), ~0.68 µs each; at a million connections that alone is ~0.8 s of a sample. A
// bpf_iter "tcp" program runs inside the kernel's own walk of the TCP hash tables (listening and established, IPv4
// and IPv6 in one pass, the netns of the process that opens the iterator), sees each socket as a `struct
// sock_common *`, and writes only what memlog needs: the 4-byte inode of each ESTABLISHED socket on a watched port.
//
// The program, per socket (ctx is `struct bpf_iter__tcp { meta; sk_common; uid }`):
//
//   skc = ctx->sk_common;            NULL once, at the end of the walk
//   if (!skc || skc->skc_state != TCP_ESTABLISHED) return 0;
//   port = skc->skc_num;             local port, host order
//   if (port not in the watched ranges) return 0;      a binary search over the sorted ranges, unrolled
//   tp = bpf_skc_to_tcp_sock(skc);   the verifier allows loads only inside the pointer's BTF type: sock_common
//   if (!tp) return 0;               is too small, so cast to the full socket (NULL for time-wait/request socks)
//   ino = tp->sk_ino                 (kernels with a lockless sock_i_ino(), 6.16+: exactly what sock_diag reports)
//      or tp->sk_socket->file->f_inode->i_ino    (SOCK_INODE(sk->sk_socket)->i_ino, each pointer NULL-checked)
//   if (ino) bpf_seq_write(ctx->meta->seq, &(u32)ino, 4);
//   return 0;
//
// Every offset comes from the running kernel's BTF (btf.ts), never from a header or a constant: a kernel with
// another layout gets a program for its layout, or a clear error naming the member it lacks. The verifier is the
// judge of the rest (memory safety of each load, helper argument types); its log comes back in the load error.

import { Btf, BTF_KIND, BtfError } from './btf.js';
import { TCP_ESTABLISHED, portRanges } from './tcptable.js';

/** Instruction classes, sizes, modes, ops (include/uapi/linux/bpf_common.h, bpf.h). */
export const BPF = {
  LDX: 0x01,
  STX: 0x03,
  ALU64: 0x07,
  JMP: 0x05,
  W: 0x00,
  H: 0x08,
  B: 0x10,
  DW: 0x18,
  MEM: 0x60,
  K: 0x00,
  X: 0x08,
  ADD: 0x00,
  MOV: 0xb0,
  JA: 0x00,
  JEQ: 0x10,
  JNE: 0x50,
  JLT: 0xa0,
  JLE: 0xb0,
  CALL: 0x80,
  EXIT: 0x90,
} as const;

/** Helper ids (enum bpf_func_id: the position in __BPF_FUNC_MAPPER); the addon reports the header's values. */
export const BPF_FUNC_seq_write = 127;
export const BPF_FUNC_skc_to_tcp_sock = 137;

/** Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 callee-saved, r10 frame pointer. */
export const R0 = 0;
export const R1 = 1;
export const R2 = 2;
export const R3 = 3;
export const R6 = 6;
export const R7 = 7;
export const R10 = 10;

/** One `struct bpf_insn`. */
export interface Insn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

const SIZES: Record<number, number> = { 1: BPF.B, 2: BPF.H, 4: BPF.W, 8: BPF.DW };
function sizeCode(bytes: number): number {
  const c = SIZES[bytes];
  if (c === undefined) throw new RangeError(`no BPF load of ${bytes} bytes`);
  return c;
}

/** dst = *(size *)(src + off) */
export const ldx = (bytes: number, dst: number, src: number, off: number): Insn => ({ code: BPF.LDX | BPF.MEM | sizeCode(bytes), dst, src, off, imm: 0 });
/** *(size *)(dst + off) = src */
export const stx = (bytes: number, dst: number, src: number, off: number): Insn => ({ code: BPF.STX | BPF.MEM | sizeCode(bytes), dst, src, off, imm: 0 });
/** dst = imm (64-bit) */
export const movImm = (dst: number, imm: number): Insn => ({ code: BPF.ALU64 | BPF.MOV | BPF.K, dst, src: 0, off: 0, imm });
/** dst = src (64-bit) */
export const movReg = (dst: number, src: number): Insn => ({ code: BPF.ALU64 | BPF.MOV | BPF.X, dst, src, off: 0, imm: 0 });
/** dst += imm (64-bit) */
export const addImm = (dst: number, imm: number): Insn => ({ code: BPF.ALU64 | BPF.ADD | BPF.K, dst, src: 0, off: 0, imm });
/** if (dst <op> imm) goto pc + 1 + off (64-bit, unsigned for JLT/JLE) */
export const jmpImm = (op: number, dst: number, imm: number, off: number): Insn => ({ code: BPF.JMP | op | BPF.K, dst, src: 0, off, imm });
/** goto pc + 1 + off */
export const ja = (off: number): Insn => ({ code: BPF.JMP | BPF.JA, dst: 0, src: 0, off, imm: 0 });
/** r0 = helper(r1, ..., r5) */
export const call = (helper: number): Insn => ({ code: BPF.JMP | BPF.CALL, dst: 0, src: 0, off: 0, imm: helper });
/** return r0 */
export const exit = (): Insn => ({ code: BPF.JMP | BPF.EXIT, dst: 0, src: 0, off: 0, imm: 0 });

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The instructions as the kernel reads them: 8 bytes each, host byte order (dst_reg in the low nibble on LE). */
export function encode(insns: readonly Insn[]): Uint8Array {
  const out = new Uint8Array(insns.length * 8);
  const v = new DataView(out.buffer);
  insns.forEach((i, n) => {
    if (i.dst < 0 || i.dst > 10 || i.src < 0 || i.src > 10) throw new RangeError(`insn ${n}: register out of r0-r10`);
    if (i.off < -32768 || i.off > 32767 || !Number.isInteger(i.off)) throw new RangeError(`insn ${n}: offset ${i.off} is not a signed 16-bit number`);
    if (i.imm < -(2 ** 31) || i.imm > 2 ** 31 - 1 || !Number.isInteger(i.imm)) throw new RangeError(`insn ${n}: immediate ${i.imm} is not a signed 32-bit number`);
    v.setUint8(n * 8, i.code);
    v.setUint8(n * 8 + 1, HOST_LE ? i.dst | (i.src << 4) : (i.dst << 4) | i.src);
    v.setInt16(n * 8 + 2, i.off, HOST_LE);
    v.setInt32(n * 8 + 4, i.imm, HOST_LE);
  });
  return out;
}

/** The inverse of encode (for tests and error messages). */
export function decode(bytes: Uint8Array): Insn[] {
  if (bytes.length % 8 !== 0) throw new RangeError(`${bytes.length} bytes is not a whole number of instructions`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Insn[] = [];
  for (let at = 0; at < bytes.length; at += 8) {
    const regs = v.getUint8(at + 1);
    out.push({
      code: v.getUint8(at),
      dst: HOST_LE ? regs & 15 : regs >> 4,
      src: HOST_LE ? regs >> 4 : regs & 15,
      off: v.getInt16(at + 2, HOST_LE),
      imm: v.getInt32(at + 4, HOST_LE),
    });
  }
  return out;
}

/** A straight-line assembler with forward labels: jumps are resolved to pc-relative offsets by finish(). */
export class Asm {
  private readonly insns: Insn[] = [];
  private readonly fixups: { at: number; label: string }[] = [];
  private readonly labels = new Map<string, number>();

  emit(...insns: Insn[]): void {
    this.insns.push(...insns);
  }

  /** A conditional jump (op with an immediate), or JA when `op` is BPF.JA, to `label`. */
  jump(op: number, dst: number, imm: number, label: string): void {
    this.fixups.push({ at: this.insns.length, label });
    this.insns.push(op === BPF.JA ? ja(0) : jmpImm(op, dst, imm, 0));
  }

  label(name: string): void {
    if (this.labels.has(name)) throw new Error(`label ${name} defined twice`);
    this.labels.set(name, this.insns.length);
  }

  finish(): Insn[] {
    for (const { at, label } of this.fixups) {
      const to = this.labels.get(label);
      if (to === undefined) throw new Error(`jump to undefined label ${label}`);
      if (to <= at) throw new Error(`jump from ${at} to ${label} (${to}) is not forward`);
      const off = to - at - 1;
      if (off > 32767) throw new RangeError(`jump from ${at} to ${label} is too far (${off} instructions)`);
      this.insns[at] = { ...this.insns[at]!, off };
    }
    return this.insns;
  }
}

/**
 * Emits "goto `match` if `reg` is in one of `ranges` (sorted, disjoint), else goto `miss`" as a balanced binary
 * search: at most ~2·log2(ranges) compares per socket, where a chain would test every range (up to 2,048 for 4,096
 * ports). Each node tests its middle range and splits the rest: `reg < lo` goes left, `reg <= hi` matches, else
 * right. Every jump is forward, so the verifier sees a tree of paths; `reg` is dead after the match (the helper
 * call clobbers it), so the paths' states merge there and the verifier does not re-walk the tail per range.
 */
export function emitPortTree(asm: Asm, reg: number, ranges: readonly (readonly [number, number])[], match: string, miss: string): void {
  let n = 0;
  const node = (lo: number, hi: number): void => {
    if (lo > hi) {
      asm.jump(BPF.JA, 0, 0, miss);
      return;
    }
    const mid = (lo + hi) >> 1;
    const [a, b] = ranges[mid]!;
    const left = `port_left_${n++}`;
    const hasLeft = mid > lo;
    if (a === b && !hasLeft) {
      asm.jump(BPF.JEQ, reg, a, match);
    } else {
      asm.jump(BPF.JLT, reg, a, hasLeft ? left : miss);
      asm.jump(BPF.JLE, reg, b, match);
    }
    node(mid + 1, hi);
    if (hasLeft) {
      asm.label(left);
      node(lo, mid - 1);
    }
  };
  node(0, ranges.length - 1);
}

/** How the program reaches a socket's inode number. */
export type InodeVia = 'sk_ino' | 'socket';

/** Offsets (bytes) and sizes of every field the program loads, from BTF. */
export interface TcpIterLayout {
  /** BTF id of FUNC bpf_iter_tcp in vmlinux: the program's attach_btf_id. */
  attachBtfId: number;
  /** struct bpf_iter__tcp: meta, sk_common. */
  ctxMeta: number;
  ctxSkCommon: number;
  /** struct bpf_iter_meta: seq. */
  metaSeq: number;
  /** struct sock_common: skc_state (1 byte), skc_num (2 bytes). */
  skcState: number;
  skcNum: number;
  inode:
    | { via: 'sk_ino'; skIno: number; size: number }
    | { via: 'socket'; skSocket: number; socketFile: number; fileInode: number; inodeIno: number; size: number };
}

/**
 * Reads the program's layout from `btf`. `via`: 'auto' takes struct sock's sk_ino when the kernel has it (what its
 * sock_i_ino() returns since the lockless version, 6.16) and the socket → file → inode chain otherwise. Throws
 * BtfError when a type or member is missing or is not the kind and size the program loads.
 */
export function tcpIterLayout(btf: Btf, via: InodeVia | 'auto' = 'auto'): TcpIterLayout {
  const struct = (name: string): number => btf.find(name, BTF_KIND.STRUCT);
  const field = (type: number, typeName: string, path: string, kind: number, sizes: readonly number[]): { offset: number; size: number } => {
    const m = btf.memberOffset(type, path);
    if (m.kind !== kind || !sizes.includes(m.size)) {
      throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: ${typeName}.${path} is kind ${m.kind} of ${m.size} bytes; the iterator program needs kind ${kind} of ${sizes.join(' or ')}`);
    }
    return m;
  };
  const ptr = (type: number, typeName: string, path: string): number => field(type, typeName, path, BTF_KIND.PTR, [8]).offset;
  const attachBtfId = btf.find('bpf_iter_tcp', BTF_KIND.FUNC);
  const ctx = struct('bpf_iter__tcp');
  const skc = struct('sock_common');
  const tcp = struct('tcp_sock');
  const layout: Omit<TcpIterLayout, 'inode'> = {
    attachBtfId,
    ctxMeta: ptr(ctx, 'bpf_iter__tcp', 'meta'),
    ctxSkCommon: ptr(ctx, 'bpf_iter__tcp', 'sk_common'),
    metaSeq: ptr(struct('bpf_iter_meta'), 'bpf_iter_meta', 'seq'),
    skcState: field(skc, 'sock_common', 'skc_state', BTF_KIND.INT, [1]).offset,
    skcNum: field(skc, 'sock_common', 'skc_num', BTF_KIND.INT, [2]).offset,
  };
  // struct sock is tcp_sock's first member, nested three deep (inet_connection_sock → inet_sock → sock).
  const sk = 'inet_conn.icsk_inet.sk';
  let skIno: { offset: number; size: number } | null = null;
  if (via !== 'socket') {
    try {
      skIno = field(tcp, 'tcp_sock', `${sk}.sk_ino`, BTF_KIND.INT, [4, 8]);
    } catch (err) {
      if (via === 'sk_ino' || !(err instanceof BtfError && err.code === 'C1M_MEMLOG_BTF_NOT_FOUND')) throw err;
    }
  }
  if (skIno) return { ...layout, inode: { via: 'sk_ino', skIno: skIno.offset, size: skIno.size } };
  const ino = field(struct('inode'), 'inode', 'i_ino', BTF_KIND.INT, [4, 8]);
  return {
    ...layout,
    inode: {
      via: 'socket',
      skSocket: ptr(tcp, 'tcp_sock', `${sk}.sk_socket`),
      socketFile: ptr(struct('socket'), 'socket', 'file'),
      fileInode: ptr(struct('file'), 'file', 'f_inode'),
      inodeIno: ino.offset,
      size: ino.size,
    },
  };
}

/**
 * The iterator program's instructions for `layout` and the watched `ports` (see the top of this file).
 * Registers: r6 = ctx->meta, r7 = the sock_common, r2 = state, then port, then inode.
 */
export function tcpIterInsns(layout: TcpIterLayout, ports: readonly number[]): Insn[] {
  const ranges = portRanges(ports);
  if (ranges.length === 0) throw new RangeError('no ports to watch');
  const a = new Asm();
  a.emit(ldx(8, R6, R1, layout.ctxMeta), ldx(8, R7, R1, layout.ctxSkCommon));
  a.jump(BPF.JEQ, R7, 0, 'out');
  a.emit(ldx(1, R2, R7, layout.skcState));
  a.jump(BPF.JNE, R2, TCP_ESTABLISHED, 'out');
  a.emit(ldx(2, R2, R7, layout.skcNum));
  emitPortTree(a, R2, ranges, 'match', 'out');
  a.label('match');
  a.emit(movReg(R1, R7), call(BPF_FUNC_skc_to_tcp_sock));
  a.jump(BPF.JEQ, R0, 0, 'out');
  const ino = layout.inode;
  if (ino.via === 'sk_ino') {
    a.emit(ldx(ino.size, R2, R0, ino.skIno));
  } else {
    for (const off of [ino.skSocket, ino.socketFile, ino.fileInode]) {
      a.emit(ldx(8, R0, R0, off));
      a.jump(BPF.JEQ, R0, 0, 'out');
    }
    a.emit(ldx(ino.size, R2, R0, ino.inodeIno));
  }
  a.jump(BPF.JEQ, R2, 0, 'out');
  // The low 32 bits, as sock_diag's idiag_inode carries it (socket inode numbers come from get_next_ino(): 32-bit).
  a.emit(stx(4, R10, R2, -4), ldx(8, R1, R6, layout.metaSeq), movReg(R2, R10), addImm(R2, -4), movImm(R3, 4), call(BPF_FUNC_seq_write));
  a.label('out');
  a.emit(movImm(R0, 0), exit());
  return a.finish();
}

/** tcpIterInsns, encoded for BPF_PROG_LOAD. */
export function tcpIterProgram(layout: TcpIterLayout, ports: readonly number[]): Uint8Array {
  return encode(tcpIterInsns(layout, ports));
}
