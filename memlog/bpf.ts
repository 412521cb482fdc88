// memlog's two eBPF programs, assembled here as raw instructions (no clang, no libbpf): the bpf_iter "tcp" program
// below, and the table walk further down (the default where the kernel allows it; see "The table walk").
//
// Why: a NETLINK_SOCK_DIAG dump fills a ~100-byte inet_diag record per matching socket (its addresses, timers,
// queues, uid, inode, cgroup...), ~0.68 µs each; at a million connections that alone is ~0.8 s of a sample. A
// bpf_iter "tcp" program runs inside the kernel's own walk of the TCP hash tables (listening and established, IPv4
// and IPv6 in one pass, the netns of the process that opens the iterator), sees each socket as a `struct
// sock_common *`, and writes only what memlog needs: the 4-byte inode of each ESTABLISHED socket on a watched port.
// (Measured, the kernel's own work per socket before the program runs cost as much as the records it saves.)
//
// The iterator's program, per socket (ctx is `struct bpf_iter__tcp { meta; sk_common; uid }`):
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
  LD: 0x00,
  LDX: 0x01,
  ST: 0x02,
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
  IMM: 0x00,
  ADD: 0x00,
  MUL: 0x20,
  OR: 0x40,
  AND: 0x50,
  LSH: 0x60,
  RSH: 0x70,
  MOV: 0xb0,
  JA: 0x00,
  JEQ: 0x10,
  JGT: 0x20,
  JGE: 0x30,
  JSET: 0x40,
  JNE: 0x50,
  JLT: 0xa0,
  JLE: 0xb0,
  CALL: 0x80,
  EXIT: 0x90,
} as const;

/** Helper ids (enum bpf_func_id: the position in __BPF_FUNC_MAPPER); the addon reports the header's values. */
export const BPF_FUNC_get_current_task = 35;
export const BPF_FUNC_probe_read_kernel = 113;
export const BPF_FUNC_seq_write = 127;
export const BPF_FUNC_skc_to_tcp_sock = 137;
/** src_reg of a call to a kernel function (kfunc) named by its vmlinux BTF id. */
export const BPF_PSEUDO_KFUNC_CALL = 2;
/** src_reg of a 64-bit immediate load: the address of a map's value, the map given by index into fd_array. */
export const BPF_PSEUDO_MAP_IDX_VALUE = 6;

/** Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 callee-saved, r10 frame pointer. */
export const R0 = 0;
export const R1 = 1;
export const R2 = 2;
export const R3 = 3;
export const R4 = 4;
export const R6 = 6;
export const R7 = 7;
export const R8 = 8;
export const R9 = 9;
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
/** dst += src (64-bit) */
export const addReg = (dst: number, src: number): Insn => ({ code: BPF.ALU64 | BPF.ADD | BPF.X, dst, src, off: 0, imm: 0 });
/** dst <op>= imm (64-bit ALU: MUL, LSH, RSH, ...) */
export const aluImm = (op: number, dst: number, imm: number): Insn => ({ code: BPF.ALU64 | op | BPF.K, dst, src: 0, off: 0, imm });
/** dst <op>= src (64-bit ALU) */
export const aluReg = (op: number, dst: number, src: number): Insn => ({ code: BPF.ALU64 | op | BPF.X, dst, src, off: 0, imm: 0 });
/** dst = the address of byte `off` of the value of map fd_array[idx] (two instructions) */
export const ldMapValue = (dst: number, idx: number, off: number): Insn[] => [
  { code: BPF.LD | BPF.DW | BPF.IMM, dst, src: BPF_PSEUDO_MAP_IDX_VALUE, off: 0, imm: idx },
  { code: 0, dst: 0, src: 0, off: 0, imm: off },
];
/** *(size *)(dst + off) = imm */
export const stImm = (bytes: number, dst: number, off: number, imm: number): Insn => ({ code: BPF.ST | BPF.MEM | sizeCode(bytes), dst, src: 0, off, imm });
/** if (dst <op> imm) goto pc + 1 + off (64-bit, unsigned for JLT/JLE) */
export const jmpImm = (op: number, dst: number, imm: number, off: number): Insn => ({ code: BPF.JMP | op | BPF.K, dst, src: 0, off, imm });
/** if (dst <op> src) goto pc + 1 + off */
export const jmpReg = (op: number, dst: number, src: number, off: number): Insn => ({ code: BPF.JMP | op | BPF.X, dst, src, off, imm: 0 });
/** goto pc + 1 + off */
export const ja = (off: number): Insn => ({ code: BPF.JMP | BPF.JA, dst: 0, src: 0, off, imm: 0 });
/** r0 = helper(r1, ..., r5) */
export const call = (helper: number): Insn => ({ code: BPF.JMP | BPF.CALL, dst: 0, src: 0, off: 0, imm: helper });
/** r0 = kfunc(r1, ..., r5), the kernel function with vmlinux BTF id `btfId` */
export const kfuncCall = (btfId: number): Insn => ({ code: BPF.JMP | BPF.CALL, dst: 0, src: BPF_PSEUDO_KFUNC_CALL, off: 0, imm: btfId });
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

/**
 * A small assembler with labels: jumps are resolved to pc-relative offsets by finish(). Backward jumps are for the
 * table walk's loop (the verifier accepts a back-edge only to a loop around an iterator's next call); the socket
 * iterator's program has none.
 */
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

  /** A conditional jump comparing two registers. */
  jumpReg(op: number, dst: number, src: number, label: string): void {
    this.fixups.push({ at: this.insns.length, label });
    this.insns.push(jmpReg(op, dst, src, 0));
  }

  label(name: string): void {
    if (this.labels.has(name)) throw new Error(`label ${name} defined twice`);
    this.labels.set(name, this.insns.length);
  }

  finish(): Insn[] {
    for (const { at, label } of this.fixups) {
      const to = this.labels.get(label);
      if (to === undefined) throw new Error(`jump to undefined label ${label}`);
      const off = to - at - 1;
      if (off > 32767 || off < -32768) throw new RangeError(`jump from ${at} to ${label} is too far (${off} instructions)`);
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

// --- The table walk: the same answer without the iterator's per-socket work ---
//
// The bpf_iter "tcp" target does more per socket than memlog needs: it takes a reference on every socket of a
// bucket, then locks each full socket (lock_sock/release_sock) and looks up its uid before it runs the program, so
// even a program that returns at once costs ~0.6 µs a socket, as much as netlink's record fill (memlog/README.md,
// "Measured"). The walk below reads the established hash table itself, as the kernel's own lookups do
// (__inet_lookup_established): under RCU, without bucket locks, following each chain to its "nulls" end marker.
// Sockets are SLAB_TYPESAFE_BY_RCU, so a socket freed meanwhile is still a socket.
//
// The program is a raw tracepoint program run on demand (BPF_PROG_TEST_RUN, which runs it under rcu_read_lock with
// preemption off), so one run takes at most WALK_BUDGET steps (a bucket opened or a socket read) and the addon runs
// it again until the table is done; the cursor stays in the map between runs. Kernel memory is read with direct
// loads through bpf_rdonly_cast (the verifier turns each into a load that cannot fault: a bad address reads 0),
// not with a helper call per read: a load is one instruction, so the loads of several chains can be in flight at
// once. That is the point of the lanes: the walk opens WALK_LANES consecutive buckets together and takes one
// socket from each open chain per round, so the cache misses of eight chains overlap instead of queueing (at 100k
// connections on loopback: 79 ms a walk with a probe-read helper per socket, 41 ms with direct loads, 23 ms with
// eight lanes; netlink's dump took 153 ms).
//
// Per socket: its chain link, namespace, state and local port (sock_common), and for a match its inode (sk_ino,
// what sock_i_ino() returns since 6.16). The port test is one bit of a 65,536-bit map in the map value (set by the
// addon from walkValue()): a few instructions per lane, where eight copies of the iterator's port tree took the
// verifier 8 s to check for 4,096 ports.
//
// What a lockless walk can get wrong, and what it does about it: a socket freed and reused while the walk stands on
// it can lead into another chain; the chain's end marker then names another bucket, and that lane's bucket is
// walked again (once; repeats are deduplicated by memlog's inode set). A run that ends in the middle of a group
// resumes each lane at the same position in its bucket, so a socket added or removed at the head of a bucket
// between two runs can shift that lane by one (a repeat, or one socket missed for this sample); /proc/net/tcp
// resumes the same way. A load that fails reads 0: a chain link of 0 ends the lane (counted as a fault).

/** Steps (buckets opened + sockets read) per run of the walk: ~1-2 ms with preemption off. */
export const WALK_BUDGET = 16384;
/** Buckets walked side by side. */
export const WALK_LANES = 8;
/** Inodes one run can write: one per socket step, and a round may pass the budget by a lane or so. */
export const WALK_CAP = WALK_BUDGET + 4 * WALK_LANES;
/** A lane's resume position meaning "this lane's bucket is done". */
export const WALK_LANE_DONE = 0x7fffffff;

/**
 * The walk's map value: a header the addon and the program share, the lanes, then the inodes of one run. u32
 * fields unless said. The addon (sockdiag.c) uses the same offsets; a test compares them.
 */
export const WALK_HDR = {
  /** in/out: the first bucket of the group of lanes to open. */
  bucket: 0,
  /** out: inodes written at `out` by this run. */
  count: 8,
  /** out: 1 when the last bucket is done, 2 when the table could not be found (the run did nothing). */
  done: 12,
  /** out: steps this run took (0 would mean no progress). */
  steps: 16,
  /** out, cumulative: buckets walked again because a chain ended on another bucket's marker. */
  restarts: 20,
  /** out: buckets in the table (ehash_mask + 1). */
  buckets: 24,
  /** out, cumulative: chains cut short by a failed read (a link that read as 0). */
  faults: 28,
  /** scratch: 1 when a round found a lane still walking. */
  active: 32,
  /** The lanes, WALK_LANE_BYTES each: chain node (u64), sockets read (u32), sockets to skip (u32), walked again (u32). */
  lanes: 64,
  /** The watched ports: bit (port & 7) of byte (port >> 3), 8 KiB; written once, when the walk is opened. */
  ports: 64 + 24 * WALK_LANES,
  /** the inodes, u32 each. */
  out: 64 + 24 * WALK_LANES + 8192,
} as const;

/** Bytes per lane in the map value, and the fields' offsets in it. */
export const WALK_LANE_BYTES = 24;
const LANE = { cur: 0, pos: 8, skip: 12, retried: 16 } as const;

/** Bytes of the walk's map value. */
export const WALK_VALUE_SIZE = WALK_HDR.out + 4 * WALK_CAP;

/** Offsets the walk reads and the BTF ids it casts to and calls, all from the running kernel's BTF. */
export interface TcpWalkLayout {
  /** task_struct.nsproxy, nsproxy.net_ns, net.ipv4.tcp_death_row.hashinfo, inet_hashinfo.ehash and .ehash_mask. */
  taskNsproxy: number;
  nsproxyNetNs: number;
  netHashinfo: number;
  hashinfoEhash: number;
  hashinfoMask: number;
  /** sizeof(struct inet_ehash_bucket) and the offset of its chain's first node. */
  bucketSize: number;
  bucketFirst: number;
  /** struct sock_common: the chain node (skc_nulls_node: its `next` comes first), skc_net, skc_state, skc_num. */
  skcNode: number;
  skcNet: number;
  skcState: number;
  skcNum: number;
  /** struct sock: sk_ino and its size. */
  skIno: number;
  skInoSize: number;
  /** BTF type ids the loads go through: struct inet_ehash_bucket, sock_common, sock. */
  idBucket: number;
  idSockCommon: number;
  idSock: number;
  /** BTF ids of the kfuncs: bpf_rdonly_cast, the open-coded loop's bpf_iter_num_{new,next,destroy}. */
  cast: number;
  iterNew: number;
  iterNext: number;
  iterDestroy: number;
  /** sizeof(struct bpf_iter_num). */
  iterSize: number;
}

/** Reads the walk's layout from `btf`; throws BtfError when the kernel lacks a piece (e.g. sk_ino before 6.16). */
export function tcpWalkLayout(btf: Btf): TcpWalkLayout {
  const struct = (name: string): number => btf.find(name, BTF_KIND.STRUCT);
  const at = (type: string, path: string, kind: number, sizes: readonly number[]): number => {
    const m = btf.memberOffset(struct(type), path);
    if (m.kind !== kind || !sizes.includes(m.size)) {
      throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: ${type}.${path} is kind ${m.kind} of ${m.size} bytes; the walk needs kind ${kind} of ${sizes.join(' or ')}`);
    }
    return m.offset;
  };
  const P = BTF_KIND.PTR;
  const I = BTF_KIND.INT;
  const ino = btf.memberOffset(struct('sock'), 'sk_ino');
  if (ino.kind !== I || (ino.size !== 4 && ino.size !== 8)) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: sock.sk_ino is kind ${ino.kind} of ${ino.size} bytes`);
  const bucket = struct('inet_ehash_bucket');
  const node = btf.memberOffset(struct('sock_common'), 'skc_nulls_node');
  const next = btf.memberOffset(node.type, 'next');
  const net = btf.memberOffset(struct('sock_common'), 'skc_net');
  const netPtr = btf.memberOffset(net.type, 'net'); // possible_net_t { struct net *net; } (CONFIG_NET_NS)
  if (netPtr.kind !== P) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', 'BTF: sock_common.skc_net.net is not a pointer');
  return {
    taskNsproxy: at('task_struct', 'nsproxy', P, [8]),
    nsproxyNetNs: at('nsproxy', 'net_ns', P, [8]),
    netHashinfo: at('net', 'ipv4.tcp_death_row.hashinfo', P, [8]),
    hashinfoEhash: at('inet_hashinfo', 'ehash', P, [8]),
    hashinfoMask: at('inet_hashinfo', 'ehash_mask', I, [4]),
    bucketSize: btf.sizeOf(bucket),
    bucketFirst: btf.memberOffset(bucket, 'chain.first').offset,
    skcNode: node.offset + next.offset,
    skcNet: net.offset + netPtr.offset,
    skcState: at('sock_common', 'skc_state', I, [1]),
    skcNum: at('sock_common', 'skc_num', I, [2]),
    skIno: ino.offset,
    skInoSize: ino.size,
    idBucket: bucket,
    idSockCommon: struct('sock_common'),
    idSock: struct('sock'),
    cast: btf.find('bpf_rdonly_cast', BTF_KIND.FUNC),
    iterNew: btf.find('bpf_iter_num_new', BTF_KIND.FUNC),
    iterNext: btf.find('bpf_iter_num_next', BTF_KIND.FUNC),
    iterDestroy: btf.find('bpf_iter_num_destroy', BTF_KIND.FUNC),
    iterSize: btf.sizeOf(struct('bpf_iter_num')),
  };
}

/** The open-coded loop's bound: rounds per run (BPF_MAX_LOOPS); a run ends far sooner, on its step budget. */
const WALK_MAX_ROUNDS = 1 << 23;

/**
 * The walk's program for `layout` (see above; the ports are data: walkValue). Registers: r9 = the map value,
 * r8 = the table's bucket array, r7 = this network namespace (struct net *), r6 = ehash_mask. Everything carried
 * from one round to the next lives in the map value, so the verifier's states converge at the loop head.
 */
export function tcpWalkInsns(l: TcpWalkLayout): Insn[] {
  if (l.iterSize !== 8) throw new RangeError(`struct bpf_iter_num is ${l.iterSize} bytes; the walk's stack layout assumes 8`);
  const H = WALK_HDR;
  const K = WALK_LANES;
  const lane = (j: number, field: keyof typeof LANE): number => H.lanes + WALK_LANE_BYTES * j + LANE[field];
  const a = new Asm();
  // Stack: the loop iterator at fp-8, an 8-byte scratch at fp-16 and fp-24.
  /** r0 = probe_read_kernel(fp-16, size, r3) */
  const probe = (size: number): void => a.emit(movReg(R1, R10), addImm(R1, -16), movImm(R2, size), call(BPF_FUNC_probe_read_kernel));
  const inc = (off: number, size = 4): void => a.emit(ldx(size, R1, R9, off), addImm(R1, 1), stx(size, R9, R1, off));
  /** r0 = bpf_rdonly_cast(r1, type): r1 read as a pointer to `type` */
  const cast = (type: number): void => a.emit(movImm(R2, type), kfuncCall(l.cast));

  a.emit(...ldMapValue(R9, 0, 0));
  // This process's namespace and its established table: current->nsproxy->net_ns->ipv4.tcp_death_row.hashinfo
  // (probe reads once per run: the values become plain numbers).
  a.emit(call(BPF_FUNC_get_current_task), movReg(R3, R0), addImm(R3, l.taskNsproxy));
  probe(8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R3, R10, -16), addImm(R3, l.nsproxyNetNs));
  probe(8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R7, R10, -16), movReg(R3, R7), addImm(R3, l.netHashinfo));
  probe(8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R3, R10, -16), stx(8, R10, R3, -24), addImm(R3, l.hashinfoEhash));
  probe(8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R8, R10, -16), ldx(8, R3, R10, -24), addImm(R3, l.hashinfoMask), stImm(8, R10, -16, 0));
  probe(4);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(4, R6, R10, -16), movReg(R1, R6), addImm(R1, 1), stx(4, R9, R1, H.buckets));
  a.emit(stImm(4, R9, H.count, 0), stImm(4, R9, H.done, 0), stImm(4, R9, H.steps, 0));
  a.emit(movReg(R1, R10), addImm(R1, -8), movImm(R2, 0), movImm(R3, WALK_MAX_ROUNDS), kfuncCall(l.iterNew));

  // Open the group's buckets: each lane starts at its chain's first node, skipping what an earlier run did.
  a.label('open');
  a.emit(ldx(4, R2, R9, H.bucket));
  a.jumpReg(BPF.JGT, R2, R6, 'done');
  for (let j = 0; j < K; j++) {
    const opened = `opened_${j}`;
    const past = `past_${j}`;
    // Past the table (fewer buckets than lanes) or done by an earlier run: the lane's end, its own marker.
    a.emit(ldx(4, R1, R9, H.bucket), addImm(R1, j));
    a.jumpReg(BPF.JGT, R1, R6, past);
    a.emit(ldx(4, R2, R9, lane(j, 'skip')));
    a.jump(BPF.JEQ, R2, WALK_LANE_DONE, past);
    a.emit(aluImm(BPF.MUL, R1, l.bucketSize), addReg(R1, R8), addImm(R1, l.bucketFirst));
    cast(l.idBucket);
    a.emit(ldx(8, R1, R0, 0), stx(8, R9, R1, lane(j, 'cur')));
    inc(H.steps);
    a.jump(BPF.JA, 0, 0, opened);
    a.label(past);
    a.emit(ldx(4, R1, R9, H.bucket), addImm(R1, j), aluImm(BPF.LSH, R1, 1), aluImm(BPF.OR, R1, 1), stx(8, R9, R1, lane(j, 'cur')));
    a.label(opened);
    a.emit(stImm(4, R9, lane(j, 'pos'), 0));
  }

  // One round: a socket from every lane still walking.
  a.label('round');
  a.emit(movReg(R1, R10), addImm(R1, -8), kfuncCall(l.iterNext));
  a.jump(BPF.JEQ, R0, 0, 'out');
  a.emit(ldx(4, R1, R9, H.steps));
  a.jump(BPF.JGE, R1, WALK_BUDGET, 'budget_out');
  a.emit(stImm(4, R9, H.active, 0));
  for (let j = 0; j < K; j++) {
    const next = `lane_next_${j}`;
    const end = `lane_end_${j}`;
    a.emit(ldx(8, R1, R9, lane(j, 'cur')));
    a.jump(BPF.JSET, R1, 1, end);
    a.jump(BPF.JEQ, R1, 0, next); // a faulted lane (counted when it happened)
    a.emit(stImm(4, R9, H.active, 1), addImm(R1, -l.skcNode));
    cast(l.idSockCommon);
    a.emit(stx(8, R10, R0, -24), ldx(8, R1, R0, l.skcNode), stx(8, R9, R1, lane(j, 'cur')));
    a.jump(BPF.JNE, R1, 0, `linked_${j}`);
    inc(H.faults);
    a.label(`linked_${j}`);
    a.emit(ldx(4, R2, R9, lane(j, 'pos')), addImm(R2, 1), stx(4, R9, R2, lane(j, 'pos')), ldx(4, R3, R9, lane(j, 'skip')));
    a.jumpReg(BPF.JLE, R2, R3, next); // done by an earlier run
    inc(H.steps);
    a.emit(ldx(8, R1, R10, -24), ldx(8, R2, R1, l.skcNet));
    a.jumpReg(BPF.JNE, R2, R7, next); // another namespace's socket (the host's table is shared)
    a.emit(ldx(1, R2, R1, l.skcState));
    a.jump(BPF.JNE, R2, TCP_ESTABLISHED, next);
    // Bit (port & 7) of byte (port >> 3) of the port map.
    a.emit(ldx(2, R1, R1, l.skcNum), movReg(R2, R1), aluImm(BPF.RSH, R2, 3), addReg(R2, R9), ldx(1, R2, R2, H.ports));
    a.emit(aluImm(BPF.AND, R1, 7), movImm(R3, 1), aluReg(BPF.LSH, R3, R1), aluReg(BPF.AND, R2, R3));
    a.jump(BPF.JEQ, R2, 0, next);
    a.emit(ldx(8, R1, R10, -24));
    cast(l.idSock);
    a.emit(ldx(l.skInoSize, R1, R0, l.skIno));
    a.jump(BPF.JEQ, R1, 0, next);
    a.emit(ldx(4, R2, R9, H.count));
    a.jump(BPF.JGE, R2, WALK_CAP, next);
    // The low 32 bits, as sock_diag's idiag_inode carries it.
    a.emit(movReg(R3, R2), aluImm(BPF.LSH, R3, 2), movReg(R4, R9), addReg(R4, R3), stx(4, R4, R1, H.out), addImm(R2, 1), stx(4, R9, R2, H.count));
    a.jump(BPF.JA, 0, 0, next);
    // The chain's end marker, (bucket << 1) | 1: another bucket's means the walk was led astray: walk it again.
    a.label(end);
    a.emit(aluImm(BPF.RSH, R1, 1), ldx(4, R2, R9, H.bucket), addImm(R2, j));
    a.jumpReg(BPF.JEQ, R1, R2, next);
    a.emit(ldx(4, R3, R9, lane(j, 'retried')));
    a.jump(BPF.JNE, R3, 0, next);
    a.emit(stImm(4, R9, lane(j, 'retried'), 1), stImm(4, R9, lane(j, 'pos'), 0), stImm(4, R9, lane(j, 'skip'), 0), stImm(4, R9, H.active, 1));
    inc(H.restarts);
    a.emit(movReg(R1, R2), aluImm(BPF.MUL, R1, l.bucketSize), addReg(R1, R8), addImm(R1, l.bucketFirst));
    cast(l.idBucket);
    a.emit(ldx(8, R1, R0, 0), stx(8, R9, R1, lane(j, 'cur')));
    a.label(next);
  }
  a.emit(ldx(4, R1, R9, H.active));
  a.jump(BPF.JNE, R1, 0, 'round');
  // The group is done: the next one starts fresh.
  a.emit(ldx(4, R1, R9, H.bucket), addImm(R1, K), stx(4, R9, R1, H.bucket));
  for (let j = 0; j < K; j++) a.emit(stImm(4, R9, lane(j, 'skip'), 0), stImm(4, R9, lane(j, 'retried'), 0));
  a.jump(BPF.JA, 0, 0, 'open');

  a.label('done');
  a.emit(stImm(4, R9, H.done, 1));
  a.jump(BPF.JA, 0, 0, 'out');
  // Out of steps in the middle of the group: each lane resumes where it is (a finished lane stays finished).
  a.label('budget_out');
  for (let j = 0; j < K; j++) {
    const done = `saved_done_${j}`;
    const saved = `saved_${j}`;
    a.emit(ldx(8, R1, R9, lane(j, 'cur')), ldx(4, R2, R9, lane(j, 'pos')), stx(4, R9, R2, lane(j, 'skip')));
    a.jump(BPF.JEQ, R1, 0, done); // faulted: given up
    a.jump(BPF.JSET, R1, 1, `saved_end_${j}`);
    a.jump(BPF.JA, 0, 0, saved);
    // At its end marker: done if the marker is its own, else walked again from the start next run.
    a.label(`saved_end_${j}`);
    a.emit(aluImm(BPF.RSH, R1, 1), ldx(4, R2, R9, H.bucket), addImm(R2, j));
    a.jumpReg(BPF.JEQ, R1, R2, done);
    a.emit(stImm(4, R9, lane(j, 'skip'), 0));
    a.jump(BPF.JA, 0, 0, saved);
    a.label(done);
    a.emit(movImm(R2, WALK_LANE_DONE), stx(4, R9, R2, lane(j, 'skip')));
    a.label(saved);
  }
  a.label('out');
  a.emit(movReg(R1, R10), addImm(R1, -8), kfuncCall(l.iterDestroy), movImm(R0, 0), exit());
  a.label('no_table');
  a.emit(stImm(4, R9, H.done, 2), movImm(R0, 0), exit());
  return a.finish();
}

/** The walk's map value as it starts: zeros, with the port map of `ports` (the addon copies it in at walkOpen). */
export function walkValue(ports: readonly number[]): Uint8Array {
  if (ports.length === 0) throw new RangeError('no ports to watch');
  const v = new Uint8Array(WALK_HDR.out);
  for (const [lo, hi] of portRanges(ports)) for (let p = lo; p <= hi; p++) v[WALK_HDR.ports + (p >> 3)]! |= 1 << (p & 7);
  return v;
}

/** tcpWalkInsns, encoded for BPF_PROG_LOAD. */
export function tcpWalkProgram(layout: TcpWalkLayout): Uint8Array {
  return encode(tcpWalkInsns(layout));
}
