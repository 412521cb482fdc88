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
// Sockets are SLAB_TYPESAFE_BY_RCU, so a socket freed meanwhile is still a socket; every read goes through
// bpf_probe_read_kernel, so even a wrong pointer reads as an error, never a fault. The program is a raw tracepoint
// program run on demand (BPF_PROG_TEST_RUN), which runs it under rcu_read_lock with preemption off: so one run does
// at most WALK_BUDGET steps (a step opens a bucket or reads one socket, ~0.1-0.2 µs) and the addon runs it again
// until the table is done, the cursor (bucket, sockets of it already done) kept in the map between runs. A
// socket's state, local port, namespace and chain link are read in one probe (sock_common's first two cache
// lines), and for a match its inode (sk->sk_ino) in a second.
//
// What a lockless walk can get wrong, and what it does about it: a socket freed and reused while the walk stands on
// it can lead into another chain; the chain's end marker then names another bucket, and the bucket is walked again
// (once; the repeats are deduplicated by memlog's inode set). A run that ends in the middle of a bucket resumes at
// the same position in it, so a socket added or removed at the head of that bucket between two runs can shift the
// walk by one (a repeat, or one socket missed for this sample) — /proc/net/tcp resumes the same way.

/** Steps (bucket openings + sockets read) per run of the walk: ~2-3 ms with preemption off at most. */
export const WALK_BUDGET = 16384;
/** Inodes one run can write: a run writes at most one per step. */
export const WALK_CAP = WALK_BUDGET;
/** The longest resume position in one bucket the walk can skip to (BPF_MAX_LOOPS is 8M steps per run). */
export const WALK_MAX_SKIP = (1 << 23) - WALK_BUDGET;

/**
 * The walk's map value: a header the addon and the program share, then the inodes of one run. u32 fields unless
 * said. The addon (sockdiag.c) uses the same offsets; a test compares them.
 */
export const WALK_HDR = {
  /** in/out: the next bucket to open. */
  bucket: 0,
  /** in/out: sockets of `bucket` already done by earlier runs. */
  skip: 4,
  /** out: inodes written to the value at `out` by this run. */
  count: 8,
  /** out: 1 when the last bucket is done, 2 when the table could not be found (the run did nothing). */
  done: 12,
  /** scratch (u64): the chain node being walked, 0 before the bucket is opened. */
  cur: 16,
  /** scratch: sockets of the open bucket read so far. */
  pos: 24,
  /** out, cumulative: buckets walked again because the walk ended on another chain's marker. */
  restarts: 28,
  /** out: buckets in the table (ehash_mask + 1). */
  buckets: 32,
  /** out, cumulative: kernel reads that failed (a chain given up). */
  faults: 36,
  /** scratch: the open bucket has been walked again once already. */
  retried: 40,
  /** the inodes, u32 each. */
  out: 64,
} as const;

/** Bytes of the walk's map value. */
export const WALK_VALUE_SIZE = WALK_HDR.out + 4 * WALK_CAP;

/** Offsets the walk reads, from BTF, and the kfuncs it calls. */
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
  /** BTF ids of the open-coded loop's kfuncs, and sizeof(struct bpf_iter_num). */
  iterNew: number;
  iterNext: number;
  iterDestroy: number;
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
  const iterSize = btf.sizeOf(struct('bpf_iter_num'));
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
    iterNew: btf.find('bpf_iter_num_new', BTF_KIND.FUNC),
    iterNext: btf.find('bpf_iter_num_next', BTF_KIND.FUNC),
    iterDestroy: btf.find('bpf_iter_num_destroy', BTF_KIND.FUNC),
    iterSize,
  };
}

/**
 * The walk's program for `layout` and `ports` (see above). Registers: r9 = the map value (header + inodes), r8 =
 * the table's bucket array, r7 = this network namespace (struct net *), r6 = ehash_mask; everything carried from
 * one step to the next lives in the map value, so the verifier's states converge at the loop head.
 */
export function tcpWalkInsns(l: TcpWalkLayout, ports: readonly number[]): Insn[] {
  const ranges = portRanges(ports);
  if (ranges.length === 0) throw new RangeError('no ports to watch');
  if (l.iterSize !== 8) throw new RangeError(`struct bpf_iter_num is ${l.iterSize} bytes; the walk's stack layout assumes 8`);
  const H = WALK_HDR;
  // Stack: the loop iterator at fp-8, one 8-byte scratch at fp-16, the socket's address at fp-24, the inode at
  // fp-32, and the sock_common window below that.
  // The window starts on 8 bytes so its pointer-sized fields are aligned on the stack (the verifier insists).
  const lo = Math.floor(Math.min(l.skcNum, l.skcState, l.skcNet, l.skcNode) / 8) * 8;
  const hi = Math.max(l.skcNum + 2, l.skcState + 1, l.skcNet + 8, l.skcNode + 8);
  const win = hi - lo;
  const buf = -32 - (Math.ceil(win / 8) * 8);
  if (buf < -512) throw new RangeError(`sock_common window of ${win} bytes does not fit the stack`);
  const a = new Asm();
  /** r0 = probe_read_kernel(fp + dst, size, r3) */
  const probe = (dst: number, size: number): void => a.emit(movReg(R1, R10), addImm(R1, dst), movImm(R2, size), call(BPF_FUNC_probe_read_kernel));
  const inc = (field: number): void => a.emit(ldx(4, R1, R9, field), addImm(R1, 1), stx(4, R9, R1, field));

  a.emit(...ldMapValue(R9, 0, 0));
  // This process's namespace and its established table: current->nsproxy->net_ns->ipv4.tcp_death_row.hashinfo.
  a.emit(call(BPF_FUNC_get_current_task), movReg(R3, R0), addImm(R3, l.taskNsproxy));
  probe(-16, 8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R3, R10, -16), addImm(R3, l.nsproxyNetNs));
  probe(-16, 8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R7, R10, -16), movReg(R3, R7), addImm(R3, l.netHashinfo));
  probe(-16, 8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R3, R10, -16), stx(8, R10, R3, -24), addImm(R3, l.hashinfoEhash));
  probe(-16, 8);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(8, R8, R10, -16), ldx(8, R3, R10, -24), addImm(R3, l.hashinfoMask), stImm(8, R10, -16, 0));
  probe(-16, 4);
  a.jump(BPF.JNE, R0, 0, 'no_table');
  a.emit(ldx(4, R6, R10, -16), movReg(R1, R6), addImm(R1, 1), stx(4, R9, R1, H.buckets));
  a.emit(stImm(4, R9, H.count, 0), stImm(4, R9, H.done, 0), stImm(8, R9, H.cur, 0), stImm(4, R9, H.pos, 0), stImm(4, R9, H.retried, 0));
  // Steps this run: the resume position's skips, then WALK_BUDGET more.
  a.emit(ldx(4, R3, R9, H.skip));
  a.jump(BPF.JLE, R3, WALK_MAX_SKIP, 'skip_ok');
  a.emit(movImm(R3, WALK_MAX_SKIP));
  a.label('skip_ok');
  a.emit(addImm(R3, WALK_BUDGET), movReg(R1, R10), addImm(R1, -8), movImm(R2, 0), kfuncCall(l.iterNew));

  a.label('loop');
  a.emit(movReg(R1, R10), addImm(R1, -8), kfuncCall(l.iterNext));
  a.jump(BPF.JEQ, R0, 0, 'budget_out');
  a.emit(ldx(8, R1, R9, H.cur));
  a.jump(BPF.JNE, R1, 0, 'have');
  // Open the next bucket: read its chain's first node.
  a.emit(ldx(4, R2, R9, H.bucket));
  a.jumpReg(BPF.JGT, R2, R6, 'done');
  a.emit(movReg(R3, R2), aluImm(BPF.MUL, R3, l.bucketSize), addReg(R3, R8), addImm(R3, l.bucketFirst));
  probe(-16, 8);
  a.jump(BPF.JNE, R0, 0, 'fault');
  a.emit(ldx(8, R1, R10, -16), stx(8, R9, R1, H.cur), stImm(4, R9, H.pos, 0));
  a.label('have');
  // A node with bit 0 set is the chain's end marker: (bucket << 1) | 1.
  a.jump(BPF.JSET, R1, 1, 'chain_end');
  a.emit(addImm(R1, -l.skcNode), stx(8, R10, R1, -24), movReg(R3, R1), addImm(R3, lo));
  probe(buf, win);
  a.jump(BPF.JNE, R0, 0, 'fault');
  a.emit(ldx(8, R1, R10, buf + l.skcNode - lo), stx(8, R9, R1, H.cur));
  a.emit(ldx(4, R2, R9, H.pos), addImm(R2, 1), stx(4, R9, R2, H.pos), ldx(4, R3, R9, H.skip));
  a.jumpReg(BPF.JLE, R2, R3, 'loop'); // done by an earlier run
  a.emit(ldx(8, R2, R10, buf + l.skcNet - lo));
  a.jumpReg(BPF.JNE, R2, R7, 'loop'); // another namespace's socket (the host's table is shared)
  a.emit(ldx(1, R2, R10, buf + l.skcState - lo));
  a.jump(BPF.JNE, R2, TCP_ESTABLISHED, 'loop');
  a.emit(ldx(2, R2, R10, buf + l.skcNum - lo));
  emitPortTree(a, R2, ranges, 'match', 'loop');
  a.label('match');
  a.emit(stImm(8, R10, -32, 0), ldx(8, R3, R10, -24), addImm(R3, l.skIno));
  probe(-32, l.skInoSize);
  a.jump(BPF.JNE, R0, 0, 'loop');
  a.emit(ldx(4, R1, R10, -32));
  a.jump(BPF.JEQ, R1, 0, 'loop');
  a.emit(ldx(4, R2, R9, H.count));
  a.jump(BPF.JGE, R2, WALK_CAP, 'loop');
  a.emit(movReg(R3, R2), aluImm(BPF.LSH, R3, 2), movReg(R4, R9), addReg(R4, R3), stx(4, R4, R1, H.out), addImm(R2, 1), stx(4, R9, R2, H.count));
  a.jump(BPF.JA, 0, 0, 'loop');

  a.label('chain_end');
  // The marker names the bucket the walk ended in; another one means it was led astray: walk this bucket again.
  a.emit(aluImm(BPF.RSH, R1, 1), ldx(4, R2, R9, H.bucket));
  a.jumpReg(BPF.JEQ, R1, R2, 'next_bucket');
  a.emit(ldx(4, R3, R9, H.retried));
  a.jump(BPF.JNE, R3, 0, 'next_bucket');
  a.emit(stImm(4, R9, H.retried, 1), stImm(8, R9, H.cur, 0), stImm(4, R9, H.skip, 0));
  inc(H.restarts);
  a.jump(BPF.JA, 0, 0, 'loop');
  a.label('fault');
  inc(H.faults);
  a.label('next_bucket');
  inc(H.bucket);
  a.emit(stImm(4, R9, H.skip, 0), stImm(8, R9, H.cur, 0), stImm(4, R9, H.retried, 0));
  a.jump(BPF.JA, 0, 0, 'loop');

  a.label('done');
  a.emit(stImm(4, R9, H.done, 1));
  a.jump(BPF.JA, 0, 0, 'out');
  a.label('budget_out');
  // Out of steps in the middle of a bucket: the next run reopens it and skips what this one did.
  a.emit(ldx(8, R1, R9, H.cur));
  a.jump(BPF.JEQ, R1, 0, 'out');
  a.emit(ldx(4, R2, R9, H.pos), stx(4, R9, R2, H.skip));
  a.label('out');
  a.emit(movReg(R1, R10), addImm(R1, -8), kfuncCall(l.iterDestroy), movImm(R0, 0), exit());
  a.label('no_table');
  a.emit(stImm(4, R9, H.done, 2), movImm(R0, 0), exit());
  return a.finish();
}

/** tcpWalkInsns, encoded for BPF_PROG_LOAD. */
export function tcpWalkProgram(layout: TcpWalkLayout, ports: readonly number[]): Uint8Array {
  return encode(tcpWalkInsns(layout, ports));
}
