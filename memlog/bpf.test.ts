import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import {
  BPF, BPF_FUNC_get_current_task, BPF_FUNC_probe_read_kernel, BPF_FUNC_seq_write, BPF_FUNC_skc_to_tcp_sock, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_IDX_VALUE,
  R0, R1, R2, R3, R6, R7, R10, WALK_BUDGET, WALK_HDR, WALK_VALUE_SIZE, Asm, addImm, call, decode, emitPortTree, encode, exit, ja, jmpImm, ldx, movImm, movReg, stx,
  tcpIterInsns, tcpIterProgram, tcpWalkInsns, tcpWalkProgram, walkValue, type Insn, type TcpIterLayout, type TcpWalkLayout,
} from './bpf.js';
import { TCP_ESTABLISHED, portRanges } from './tcptable.js';
import { kernelLayout, kernelWalkLayout, loadSockDiag } from './netlink.js';

/** Each instruction as "code regs off imm" in memory order (little-endian hosts), e.g. "79 16 0800 00000000". */
function hex(bytes: Uint8Array): string[] {
  const h = (a: Uint8Array): string => Buffer.from(a).toString('hex');
  const out: string[] = [];
  for (let at = 0; at < bytes.length; at += 8) out.push(`${h(bytes.subarray(at, at + 1))} ${h(bytes.subarray(at + 1, at + 2))} ${h(bytes.subarray(at + 2, at + 4))} ${h(bytes.subarray(at + 4, at + 8))}`);
  return out;
}

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

test('encoders: the opcodes and byte layout of struct bpf_insn', { skip: !LE && 'byte strings below are little-endian' }, () => {
  assert.deepEqual(hex(encode([
    ldx(8, R6, R1, 8), // 0x79 = LDX|MEM|DW; regs: dst in the low nibble, src in the high one
    ldx(1, R2, R7, 18), // 0x71 = LDX|MEM|B
    ldx(2, R2, R7, 14), // 0x69 = LDX|MEM|H
    stx(4, R10, R2, -4), // 0x63 = STX|MEM|W, offset -4 as s16
    movImm(R0, 0), // 0xb7 = ALU64|MOV|K
    movReg(R2, R10), // 0xbf = ALU64|MOV|X
    addImm(R2, -4), // 0x07 = ALU64|ADD|K, imm -4 as s32
    jmpImm(BPF.JEQ, R7, 0, 5), // 0x15
    jmpImm(BPF.JNE, R2, 1, 1), // 0x55
    jmpImm(BPF.JLT, R2, 8000, 2), // 0xa5
    jmpImm(BPF.JLE, R2, 8003, 3), // 0xb5
    ja(7), // 0x05
    call(127), // 0x85
    exit(), // 0x95
  ])), [
    '79 16 0800 00000000',
    '71 72 1200 00000000',
    '69 72 0e00 00000000',
    '63 2a fcff 00000000',
    'b7 00 0000 00000000',
    'bf a2 0000 00000000',
    '07 02 0000 fcffffff',
    '15 07 0500 00000000',
    '55 02 0100 01000000',
    'a5 02 0200 401f0000',
    'b5 02 0300 431f0000',
    '05 00 0700 00000000',
    '85 00 0000 7f000000',
    '95 00 0000 00000000',
  ]);
});

test('encode/decode round-trip; out-of-range fields are refused', () => {
  const insns = [ldx(8, R6, R1, -32768), jmpImm(BPF.JLE, R2, 2 ** 31 - 1, 32767), addImm(R2, -(2 ** 31)), exit()];
  assert.deepEqual(decode(encode(insns)), insns);
  assert.throws(() => encode([ldx(8, 11, R1, 0)]), /register out of r0-r10/);
  assert.throws(() => encode([ldx(8, R1, R1, 32768)]), /not a signed 16-bit/);
  assert.throws(() => encode([movImm(R0, 2 ** 31)]), /not a signed 32-bit/);
  assert.throws(() => ldx(3, R1, R1, 0), /no BPF load of 3 bytes/);
  assert.throws(() => decode(new Uint8Array(12)), /not a whole number/);
});

test('the assembler resolves labels forward and backward, and refuses undefined ones', () => {
  const a = new Asm();
  a.label('top');
  a.jump(BPF.JEQ, R2, 1, 'end');
  a.emit(movImm(R0, 1));
  a.jumpReg(BPF.JNE, R2, R3, 'top');
  a.jump(BPF.JA, 0, 0, 'end');
  a.label('end');
  a.emit(exit());
  assert.deepEqual(a.finish().map((i) => [i.code, i.off]), [[0x15, 3], [0xb7, 0], [0x5d, -3], [0x05, 0], [0x95, 0]]);
  const none = new Asm();
  none.jump(BPF.JA, 0, 0, 'nowhere');
  assert.throws(() => none.finish(), /undefined label/);
  const twice = new Asm();
  twice.label('x');
  assert.throws(() => twice.label('x'), /defined twice/);
});

// A layout with made-up offsets (the real one comes from BTF; see the kernel tests below).
const SK_INO: TcpIterLayout = { attachBtfId: 4242, ctxMeta: 0, ctxSkCommon: 8, metaSeq: 0, skcState: 18, skcNum: 14, inode: { via: 'sk_ino', skIno: 608, size: 8 } };
const VIA_SOCKET: TcpIterLayout = { ...SK_INO, inode: { via: 'socket', skSocket: 288, socketFile: 16, fileInode: 32, inodeIno: 64, size: 8 } };

test('tcpIterProgram: exact instructions for one port (sk_ino layout)', { skip: !LE && 'byte strings below are little-endian' }, () => {
  assert.deepEqual(hex(tcpIterProgram(SK_INO, [8000])), [
    '79 16 0000 00000000', //  0 r6 = ctx->meta
    '79 17 0800 00000000', //  1 r7 = ctx->sk_common
    '15 07 1000 00000000', //  2 if r7 == 0 goto 19 (out)
    '71 72 1200 00000000', //  3 r2 = skc_state (u8 at 18)
    '55 02 0e00 01000000', //  4 if r2 != TCP_ESTABLISHED goto 19
    '69 72 0e00 00000000', //  5 r2 = skc_num (u16 at 14)
    '15 02 0100 401f0000', //  6 if r2 == 8000 goto 8 (match)
    '05 00 0b00 00000000', //  7 goto 19
    'bf 71 0000 00000000', //  8 r1 = r7
    '85 00 0000 89000000', //  9 r0 = bpf_skc_to_tcp_sock(r1)  (137)
    '15 00 0800 00000000', // 10 if r0 == 0 goto 19
    '79 02 6002 00000000', // 11 r2 = tp->sk_ino (u64 at 608)
    '15 02 0600 00000000', // 12 if r2 == 0 goto 19
    '63 2a fcff 00000000', // 13 *(u32 *)(r10 - 4) = r2
    '79 61 0000 00000000', // 14 r1 = meta->seq
    'bf a2 0000 00000000', // 15 r2 = r10
    '07 02 0000 fcffffff', // 16 r2 += -4
    'b7 03 0000 04000000', // 17 r3 = 4
    '85 00 0000 7f000000', // 18 bpf_seq_write(r1, r2, r3)  (127)
    'b7 00 0000 00000000', // 19 out: r0 = 0
    '95 00 0000 00000000', // 20 exit
  ]);
});

test('tcpIterProgram: the socket → file → inode layout checks each pointer', () => {
  const insns = tcpIterInsns(VIA_SOCKET, [8000]);
  const out = insns.length - 2;
  // After the cast: three pointer loads, each followed by a NULL test that leaves, then the 8-byte i_ino load.
  const at = insns.findIndex((i) => i.code === (BPF.JMP | BPF.CALL) && i.imm === BPF_FUNC_skc_to_tcp_sock);
  const tail = insns.slice(at + 2, at + 9);
  assert.deepEqual(tail.map((i) => [i.code, i.dst, i.src, i.off]), [
    [0x79, R0, R0, 288], [0x15, R0, 0, out - (at + 3) - 1],
    [0x79, R0, R0, 16], [0x15, R0, 0, out - (at + 5) - 1],
    [0x79, R0, R0, 32], [0x15, R0, 0, out - (at + 7) - 1],
    [0x79, R2, R0, 64],
  ]);
});

// --- A model of the program running in the kernel: objects with typed fields, the two helpers, the stack. ---

interface Obj { name: string; fields: Map<number, { size: number; value: number | Obj | null }>; full?: boolean }
type Val = number | { obj: Obj; off: number } | undefined;

const obj = (name: string, fields: [number, number, number | Obj | null][], full?: boolean): Obj =>
  ({ name, fields: new Map(fields.map(([off, size, value]) => [off, { size, value }])), ...(full === undefined ? {} : { full }) });

/** Runs `insns` on `ctx` like the kernel would (within what memlog's program uses); returns what bpf_seq_write got. */
function run(insns: readonly Insn[], ctx: Obj, seq: Obj): { written: number[]; steps: number } {
  const r: Val[] = new Array(11).fill(undefined);
  const stack = obj('stack', []);
  r[R1] = { obj: ctx, off: 0 };
  r[R10] = { obj: stack, off: 0 };
  const written: number[] = [];
  const num = (v: Val, what: string): number => {
    if (typeof v === 'number') return v;
    throw new Error(`${what}: not a number`);
  };
  for (let pc = 0, steps = 1; steps < 10_000; steps++, pc++) {
    const i = insns[pc];
    if (!i) throw new Error(`fell off the end at ${pc}`);
    const cls = i.code & 7;
    if (cls === BPF.LDX) {
      const p = r[i.src];
      if (typeof p !== 'object') throw new Error(`pc ${pc}: load through a non-pointer r${i.src}`);
      const f = p.obj.fields.get(p.off + i.off);
      const size = { [BPF.B]: 1, [BPF.H]: 2, [BPF.W]: 4, [BPF.DW]: 8 }[i.code & 0x18]!;
      if (!f) throw new Error(`pc ${pc}: ${p.obj.name} has no field at ${p.off + i.off}`);
      if (f.size !== size) throw new Error(`pc ${pc}: ${size}-byte load of the ${f.size}-byte field at ${p.obj.name}+${p.off + i.off}`);
      r[i.dst] = f.value === null ? 0 : typeof f.value === 'number' ? f.value : { obj: f.value, off: 0 };
    } else if (cls === BPF.STX) {
      const p = r[i.dst];
      if (typeof p !== 'object' || p.obj !== stack) throw new Error(`pc ${pc}: store outside the stack`);
      stack.fields.set(p.off + i.off, { size: 4, value: num(r[i.src], `pc ${pc}`) % 2 ** 32 });
    } else if (cls === BPF.ALU64) {
      const op = i.code & 0xf0;
      if (op === BPF.MOV) r[i.dst] = i.code & BPF.X ? r[i.src] : i.imm;
      else if (op === BPF.ADD) {
        const d = r[i.dst];
        r[i.dst] = typeof d === 'object' ? { obj: d.obj, off: d.off + i.imm } : num(d, `pc ${pc}`) + i.imm;
      } else throw new Error(`pc ${pc}: alu op ${op}`);
    } else if (cls === BPF.JMP) {
      const op = i.code & 0xf0;
      if (op === BPF.EXIT) return { written, steps };
      if (op === BPF.CALL) {
        if (i.imm === BPF_FUNC_skc_to_tcp_sock) {
          const p = r[R1];
          r[R0] = typeof p === 'object' && p.obj.full ? { obj: p.obj, off: 0 } : 0;
        } else if (i.imm === BPF_FUNC_seq_write) {
          const p = r[R1];
          const data = r[R2];
          if (typeof p !== 'object' || p.obj !== seq) throw new Error(`pc ${pc}: seq_write without the seq_file`);
          if (typeof data !== 'object' || data.obj !== stack || r[3] !== 4) throw new Error(`pc ${pc}: seq_write of something else than 4 stack bytes`);
          written.push(num(stack.fields.get(data.off)?.value as Val, `pc ${pc}: stack`));
          r[R0] = 0;
        } else throw new Error(`pc ${pc}: helper ${i.imm}`);
        for (let k = 1; k <= 5; k++) r[k] = undefined; // clobbered by the call
        continue;
      }
      if (op === BPF.JA) {
        pc += i.off;
        continue;
      }
      const d = r[i.dst];
      // Pointers are only ever compared with 0 (a NULL test).
      const v = typeof d === 'object' ? (i.imm === 0 ? 1 : NaN) : num(d, `pc ${pc}`);
      const k = i.imm;
      const taken = op === BPF.JEQ ? v === k : op === BPF.JNE ? v !== k : op === BPF.JLT ? v < k : op === BPF.JLE ? v <= k : (() => {
        throw new Error(`pc ${pc}: jump op ${op}`);
      })();
      if (taken) pc += i.off;
    } else throw new Error(`pc ${pc}: class ${cls}`);
  }
  throw new Error('did not exit');
}

interface Sock { state: number; port: number; ino: number; full?: boolean; noSocket?: boolean }

/** The objects the kernel would hand the program for `s` under `layout`, and what it must write for it. */
function world(layout: TcpIterLayout, s: Sock | null): { ctx: Obj; seq: Obj } {
  const seq = obj('seq_file', []);
  const meta = obj('bpf_iter_meta', [[layout.metaSeq, 8, seq]]);
  let sk: Obj | null = null;
  if (s) {
    const fields: [number, number, number | Obj | null][] = [[layout.skcState, 1, s.state], [layout.skcNum, 2, s.port]];
    const ino = layout.inode;
    if (ino.via === 'sk_ino') fields.push([ino.skIno, ino.size, s.noSocket ? 0 : s.ino]);
    else {
      const inode = obj('inode', [[ino.inodeIno, ino.size, s.ino]]);
      const file = obj('file', [[ino.fileInode, 8, inode]]);
      const socket = obj('socket', [[ino.socketFile, 8, file]]);
      fields.push([ino.skSocket, 8, s.noSocket ? null : socket]);
    }
    sk = obj('sock', fields, s.full ?? true);
  }
  return { ctx: obj('bpf_iter__tcp', [[layout.ctxMeta, 8, meta], [layout.ctxSkCommon, 8, sk]]), seq };
}

test('the program (in the model) writes the inode of established sockets on the watched ports only', () => {
  const TCP_LISTEN = 10;
  const TCP_TIME_WAIT = 6;
  const cases: [string, Sock | null, boolean][] = [
    ['the end-of-walk call: no socket', null, false],
    ['established on the port', { state: TCP_ESTABLISHED, port: 8000, ino: 123456 }, true],
    ['another port', { state: TCP_ESTABLISHED, port: 8001, ino: 5 }, false],
    ['listening on the port', { state: TCP_LISTEN, port: 8000, ino: 6 }, false],
    ['time-wait on the port (not a full socket)', { state: TCP_TIME_WAIT, port: 8000, ino: 7, full: false }, false],
    ['established but the cast fails (not a full tcp socket)', { state: TCP_ESTABLISHED, port: 8000, ino: 8, full: false }, false],
    ['established, orphaned (no inode / no struct socket)', { state: TCP_ESTABLISHED, port: 8000, ino: 9, noSocket: true }, false],
    ['established, inode 0', { state: TCP_ESTABLISHED, port: 8000, ino: 0 }, false],
    ['an inode past 32 bits keeps its low 32', { state: TCP_ESTABLISHED, port: 8000, ino: 2 ** 32 + 77 }, true],
  ];
  for (const layout of [SK_INO, VIA_SOCKET]) {
    const insns = tcpIterInsns(layout, [8000]);
    for (const [name, s, writes] of cases) {
      const { ctx, seq } = world(layout, s);
      assert.deepEqual(run(insns, ctx, seq).written, writes ? [s!.ino % 2 ** 32] : [], `${layout.inode.via}: ${name}`);
    }
  }
});

test('the port tree (in the model) accepts exactly the listed ports, in O(log ranges) compares', () => {
  const cases: [string, number[]][] = [
    ['one port', [8000]],
    ['a range', [8000, 8001, 8002, 8003]],
    ['the ends of the port space', [1, 65535]],
    ['ranges and singles mixed', [5000, 8000, 8001, 8002, 9000, 9002, 9003]],
    ['40 singles', Array.from({ length: 40 }, (_, i) => 10_000 + 2 * i)],
    ['2,048 ranges: 4,096 ports, every other one', Array.from({ length: 4096 }, (_, i) => 20_001 + 2 * i)],
  ];
  for (const [name, ports] of cases) {
    const insns = tcpIterInsns(SK_INO, ports);
    const want = new Set(ports);
    const probe = new Set([1, 2, 4999, 5000, 5001, 7999, 8000, 8001, 8002, 8003, 8004, 8999, 9000, 9001, 9002, 9003, 9004, 65534, 65535]);
    for (const p of ports) for (const d of [-1, 0, 1]) probe.add(p + d);
    const ranges = portRanges(ports).length;
    let most = 0;
    for (const port of probe) {
      if (port < 1 || port > 65535) continue;
      const { ctx, seq } = world(SK_INO, { state: TCP_ESTABLISHED, port, ino: port + 100_000 });
      const { written, steps } = run(insns, ctx, seq);
      assert.deepEqual(written, want.has(port) ? [port + 100_000] : [], `${name}: port ${port}`);
      most = Math.max(most, steps);
    }
    // 6 instructions before the tree, at most 2 compares per level, 14 after a match.
    const depth = Math.ceil(Math.log2(ranges + 1));
    assert.ok(most <= 6 + 2 * depth + 1 + 14, `${name}: ${most} steps for ${ranges} ranges`);
  }
});

test('emitPortTree: every jump lands inside the program, and a tree of n ranges is at most 3n instructions', () => {
  for (const n of [1, 2, 3, 7, 8, 100, 2048]) {
    const ranges = Array.from({ length: n }, (_, i): [number, number] => (i % 3 === 0 ? [10 * i + 1, 10 * i + 1] : [10 * i + 1, 10 * i + 5]));
    const a = new Asm();
    emitPortTree(a, R2, ranges, 'match', 'miss');
    a.label('match');
    a.emit(exit());
    a.label('miss');
    a.emit(exit());
    const insns = a.finish();
    // Per range at most two compares, plus a jump to `miss` where a right subtree is empty.
    assert.ok(insns.length - 2 <= 3 * n, `n=${n}: ${insns.length - 2} instructions`);
    insns.forEach((i, pc) => {
      if ((i.code & 7) === BPF.JMP && (i.code & 0xf0) !== BPF.EXIT) assert.ok(pc + 1 + i.off < insns.length && i.off >= 0, `n=${n}: jump at ${pc}`);
    });
  }
  assert.throws(() => tcpIterInsns(SK_INO, []), /no ports/);
  assert.throws(() => tcpIterInsns(SK_INO, [0]), /port 0 is not in 1-65535/);
});

// --- The real kernel: BTF layout, the addon's headers, and the verifier. ---

const { addon, reason } = loadSockDiag();
const root = process.getuid?.() === 0;

test('the addon is built with the same helper ids and opcodes bpf.ts uses', () => {
  if (!addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1', reason);
    return;
  }
  assert.deepEqual(addon.bpfConstants, {
    BPF_FUNC_seq_write, BPF_FUNC_skc_to_tcp_sock, TCP_ESTABLISHED, BPF_JLT: BPF.JLT, BPF_JLE: BPF.JLE, BPF_MOV: BPF.MOV, BPF_ALU64: BPF.ALU64, BPF_DW: BPF.DW,
    BPF_FUNC_get_current_task, BPF_FUNC_probe_read_kernel, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_IDX_VALUE,
    WALK_BUCKET: WALK_HDR.bucket, WALK_COUNT: WALK_HDR.count, WALK_STEPS: WALK_HDR.steps, WALK_DONE: WALK_HDR.done, WALK_RESTARTS: WALK_HDR.restarts,
    WALK_BUCKETS: WALK_HDR.buckets, WALK_FAULTS: WALK_HDR.faults, WALK_PORTS: WALK_HDR.ports, WALK_OUT: WALK_HDR.out,
  });
});

test('the kernel verifier accepts the program for one port, ranges and 4,096 ports, both ways to the inode', { timeout: 60_000 }, () => {
  if (!addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1', reason);
    return;
  }
  const portSets = [[8000], [8000, 8001, 8002, 9000], Array.from({ length: 4096 }, (_, i) => 1 + 2 * i)];
  for (const via of ['sk_ino', 'socket'] as const) {
    const layout = kernelLayout(via);
    assert.equal(layout.inode.via, via);
    for (const ports of portSets) {
      if (!root) {
        // Not root: the kernel refuses to load any tracing program (that is what `auto` falls back on).
        assert.throws(() => addon.iterLoad(tcpIterProgram(layout, ports), layout.attachBtfId), { code: 'SOCKDIAG_ERRNO_1' });
        continue;
      }
      const fd = addon.iterLoad(tcpIterProgram(layout, ports), layout.attachBtfId);
      assert.ok(fd > 2);
      // One walk works (what it returns is checked against netlink in netlink.test.ts).
      assert.ok(addon.iterRead(fd) instanceof Uint32Array);
      closeSync(fd);
    }
  }
});

test('a malformed program is refused with the verifier log in the error; bad arguments are refused by the addon', () => {
  if (!addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1', reason);
    return;
  }
  const layout = kernelLayout();
  const load = (insns: Insn[]): number => addon.iterLoad(encode(insns), layout.attachBtfId);
  if (root) {
    // Exit without setting r0.
    assert.throws(() => load([exit()]), { code: 'SOCKDIAG_ERRNO_13', message: /BPF_PROG_LOAD \(tracing, iter\/tcp\): Permission denied; verifier log: .*R0 !read_ok/s });
    // A 4-byte context read at offset 4: the verifier names the target function and the offset.
    assert.throws(() => load([ldx(4, R2, R1, 4), movImm(R0, 0), exit()]), { message: /func 'bpf_iter_tcp' offset 4 is not multiple of 8/ });
    // Dereferencing sk_common without the NULL test.
    assert.throws(() => load([ldx(8, R2, R1, layout.ctxSkCommon), ldx(1, R2, R2, layout.skcState), movImm(R0, 0), exit()]), { message: /invalid mem access 'trusted_ptr_or_null_'/ });
    // A type id that is not a function.
    assert.throws(() => addon.iterLoad(encode([movImm(R0, 0), exit()]), 1), { code: 'SOCKDIAG_ERRNO_22', message: /attach_btf_id 1 is not a function/ });
  }
  const iterLoad = addon.iterLoad as (...a: unknown[]) => number;
  assert.throws(() => iterLoad(new Uint8Array(12), layout.attachBtfId), { code: 'SOCKDIAG_BAD_ARGS', name: 'TypeError', message: /whole 8-byte instructions/ });
  assert.throws(() => iterLoad(new Uint8Array(0), layout.attachBtfId), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => iterLoad(new Uint8Array(8 * 65537), layout.attachBtfId), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => iterLoad(new Uint16Array(8), layout.attachBtfId), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => iterLoad(encode([exit()])), { code: 'SOCKDIAG_BAD_ARGS', message: /attachBtfId must be a BTF type id/ });
  assert.throws(() => iterLoad(encode([exit()]), 0), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => iterLoad(encode([exit()]), 1.5), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => iterLoad(encode([exit()]), '7'), { code: 'SOCKDIAG_BAD_ARGS' });
  const iterRead = addon.iterRead as (...a: unknown[]) => Uint32Array;
  assert.throws(() => iterRead(-1), { code: 'SOCKDIAG_BAD_ARGS', message: /linkFd must be a file descriptor/ });
  assert.throws(() => iterRead(), { code: 'SOCKDIAG_BAD_ARGS' });
  // An fd that is not a bpf link: the kernel says EBADF (closed) or EINVAL (another kind of file).
  assert.throws(() => iterRead(2 ** 30), { code: 'SOCKDIAG_ERRNO_9' });
  assert.throws(() => iterRead(0), { code: /^SOCKDIAG_ERRNO_(22|9)$/ });
});

// --- The table walk in a model: a kernel heap with a task, a namespace and an established hash table. ---

const WALK_LAYOUT: TcpWalkLayout = {
  taskNsproxy: 1840, nsproxyNetNs: 40, netHashinfo: 960, hashinfoEhash: 0, hashinfoMask: 16, bucketSize: 8, bucketFirst: 0,
  skcNode: 104, skcNet: 48, skcState: 18, skcNum: 14, skIno: 608, skInoSize: 8,
  idBucket: 501, idSockCommon: 502, idSock: 503, cast: 9000, iterNew: 9001, iterNext: 9002, iterDestroy: 9003, iterSize: 8,
};
const HEAP_BASE = 0x100000;
const SOCK_BYTES = 640; // past sk_ino at 608

interface ModelSock { state: number; port: number; ino: number; net?: 'ours' | 'other'; timeWait?: boolean }

/** A kernel heap the walk can read: the task's chain to the table, buckets whose chains hold `chains[b]`. */
class Kernel {
  readonly heap: DataView;
  readonly task: number;
  private top = HEAP_BASE;
  /** Every direct load: address, size, and the BTF type it went through. */
  readonly loads: { addr: number; size: number; type: number }[] = [];
  /** Socket address → its description and size, for checking what the walk read. */
  readonly socks = new Map<number, ModelSock & { bytes: number }>();

  constructor(chains: ModelSock[][], { badMarker = new Set<number>(), badChain = new Set<number>(), bytes = 1 << 22 } = {}) {
    this.heap = new DataView(new ArrayBuffer(bytes));
    const L = WALK_LAYOUT;
    const alloc = (n: number): number => {
      const at = this.top;
      this.top += Math.ceil(n / 64) * 64;
      if (this.top > HEAP_BASE + bytes) throw new Error('model heap too small');
      return at;
    };
    const net = alloc(2048);
    const otherNet = alloc(64);
    const hashinfo = alloc(64);
    const nsproxy = alloc(64);
    this.task = alloc(2048);
    this.put64(this.task + L.taskNsproxy, nsproxy);
    this.put64(nsproxy + L.nsproxyNetNs, net);
    this.put64(net + L.netHashinfo, hashinfo);
    const ehash = alloc(8 * chains.length);
    this.put64(hashinfo + L.hashinfoEhash, ehash);
    this.heap.setUint32(hashinfo + L.hashinfoMask - HEAP_BASE, chains.length - 1, true);
    chains.forEach((chain, b) => {
      // Each node's next is the following socket's node; the last points at the marker (b << 1) | 1.
      const marker = badMarker.has(b) ? (((b + 1) % chains.length) << 1) | 1 : (b << 1) | 1;
      let next = marker;
      for (let i = chain.length - 1; i >= 0; i--) {
        const s = chain[i]!;
        const size = s.timeWait ? 128 : SOCK_BYTES;
        const sk = alloc(size);
        this.socks.set(sk, { ...s, bytes: size });
        this.heap.setUint16(sk + L.skcNum - HEAP_BASE, s.port, true);
        this.heap.setUint8(sk + L.skcState - HEAP_BASE, s.state);
        this.put64(sk + L.skcNet, s.net === 'other' ? otherNet : net);
        this.put64(sk + L.skcNode, next);
        if (!s.timeWait) this.put64(sk + L.skIno, s.ino);
        next = sk + L.skcNode;
      }
      this.put64(ehash + 8 * b, badChain.has(b) ? 0x10 : next); // 0x10: an address outside the heap
    });
  }

  put64(addr: number, v: number): void {
    this.heap.setBigUint64(addr - HEAP_BASE, BigInt(v), true);
  }

  private inHeap(addr: number, size: number): boolean {
    return addr >= HEAP_BASE && addr + size <= HEAP_BASE + this.heap.byteLength;
  }

  /** bpf_probe_read_kernel: 0, or -EFAULT outside the heap. */
  read(dst: Uint8Array, size: number, src: number): number {
    if (!this.inHeap(src, size)) {
      dst.fill(0, 0, size);
      return -14;
    }
    dst.set(new Uint8Array(this.heap.buffer, src - HEAP_BASE, size));
    return 0;
  }

  /** A direct load through a cast pointer (BPF_PROBE_MEM): a bad address reads 0. */
  load(addr: number, size: number, type: number): number {
    this.loads.push({ addr, size, type });
    if (!this.inHeap(addr, size)) return 0;
    const v = new DataView(this.heap.buffer, addr - HEAP_BASE, size);
    return size === 1 ? v.getUint8(0) : size === 2 ? v.getUint16(0, true) : size === 4 ? v.getUint32(0, true) : Number(v.getBigUint64(0, true));
  }
}

/** A register: a number, a pointer into the stack or the map value, or a kernel address cast to a BTF type. */
type WReg = number | { region: 'stack' | 'map'; off: number } | { region: 'heap'; addr: number; type: number } | undefined;

/** Runs the walk program once against `k` and the map value `value`, like BPF_PROG_TEST_RUN. */
function walkOnce(insns: readonly Insn[], k: Kernel, value: Uint8Array): void {
  const stack = new Uint8Array(512);
  const spilled = new Map<number, WReg>(); // cast pointers spilled to the stack come back as pointers, as in the verifier
  const r: WReg[] = new Array(11).fill(undefined);
  r[R10] = { region: 'stack', off: 512 };
  const iters = new Map<number, { cur: number; end: number }>();
  const mem = (p: WReg, off: number, size: number, pc: number): DataView => {
    if (typeof p !== 'object' || p.region === 'heap') throw new Error(`pc ${pc}: stack/map access through something else`);
    const buf = p.region === 'stack' ? stack : value;
    const at = p.off + off;
    if (at < 0 || at + size > buf.length) throw new Error(`pc ${pc}: ${p.region} access at ${at} size ${size} out of bounds`);
    return new DataView(buf.buffer, buf.byteOffset + at, size);
  };
  const get = (v: DataView, size: number): number => (size === 1 ? v.getUint8(0) : size === 2 ? v.getUint16(0, true) : size === 4 ? v.getUint32(0, true) : Number(v.getBigUint64(0, true)));
  const put = (v: DataView, size: number, x: number): void => {
    if (size === 1) v.setUint8(0, x & 0xff);
    else if (size === 2) v.setUint16(0, x & 0xffff, true);
    else if (size === 4) v.setUint32(0, x >>> 0, true);
    else v.setBigUint64(0, BigInt.asUintN(64, BigInt(x)), true);
  };
  /** A value as a number: a cast pointer is its address (stored or compared as such by a privileged program). */
  const num = (v: WReg, pc: number): number => {
    if (typeof v === 'number') return v;
    if (typeof v === 'object' && v.region === 'heap') return v.addr;
    throw new Error(`pc ${pc}: not a number`);
  };
  const sizeOf = (code: number): number => ({ [BPF.B]: 1, [BPF.H]: 2, [BPF.W]: 4, [BPF.DW]: 8 })[code & 0x18]!;
  for (let pc = 0, steps = 0; ; pc++) {
    if (++steps > 1000 * (WALK_BUDGET + 100)) throw new Error('runaway');
    const i = insns[pc];
    if (!i) throw new Error(`fell off the end at ${pc}`);
    const cls = i.code & 7;
    if (i.code === (BPF.LD | BPF.DW | BPF.IMM)) {
      assert.equal(i.src, BPF_PSEUDO_MAP_IDX_VALUE);
      r[i.dst] = { region: 'map', off: insns[pc + 1]!.imm };
      pc++;
    } else if (cls === BPF.LDX) {
      const size = sizeOf(i.code);
      const p = r[i.src];
      if (typeof p === 'object' && p.region === 'heap') r[i.dst] = k.load(p.addr + i.off, size, p.type);
      else {
        const v = mem(p, i.off, size, pc);
        const back = size === 8 && typeof p === 'object' && p.region === 'stack' ? spilled.get(p.off + i.off) : undefined;
        r[i.dst] = back ?? get(v, size);
      }
    } else if (cls === BPF.STX || cls === BPF.ST) {
      const size = sizeOf(i.code);
      const p = r[i.dst];
      const x = cls === BPF.ST ? i.imm : r[i.src];
      put(mem(p, i.off, size, pc), size, num(x, pc));
      if (typeof p === 'object' && p.region === 'stack') {
        if (size === 8 && typeof x === 'object') spilled.set(p.off + i.off, x);
        else spilled.delete(p.off + i.off);
      }
    } else if (cls === BPF.ALU64) {
      const op = i.code & 0xf0;
      const src = i.code & BPF.X ? r[i.src] : i.imm;
      const d = r[i.dst];
      if (op === BPF.MOV) r[i.dst] = src;
      else if (op === BPF.ADD && typeof d === 'object' && d.region !== 'heap') r[i.dst] = { region: d.region, off: d.off + num(src, pc) };
      else if (op === BPF.ADD && typeof src === 'object' && src.region !== 'heap') r[i.dst] = { region: src.region, off: src.off + num(d, pc) };
      else {
        const x = num(d, pc);
        const y = num(src, pc);
        r[i.dst] = op === BPF.ADD ? x + y : op === BPF.MUL ? x * y : op === BPF.LSH ? x * 2 ** y : op === BPF.RSH ? Math.floor(x / 2 ** y)
          : op === BPF.OR ? Number(BigInt(x) | BigInt(y)) : op === BPF.AND ? Number(BigInt(x) & BigInt(y)) : (() => {
            throw new Error(`pc ${pc}: alu op ${op}`);
          })();
      }
    } else if (cls === BPF.JMP) {
      const op = i.code & 0xf0;
      if (op === BPF.EXIT) {
        assert.equal(iters.size, 0, 'an iterator was left undestroyed');
        return;
      }
      if (op === BPF.CALL) {
        if (i.src === BPF_PSEUDO_KFUNC_CALL) {
          if (i.imm === WALK_LAYOUT.cast) r[R0] = { region: 'heap', addr: num(r[R1], pc), type: num(r[R2], pc) };
          else {
            const it = mem(r[R1], 0, 8, pc).byteOffset;
            if (i.imm === WALK_LAYOUT.iterNew) iters.set(it, { cur: num(r[R2], pc), end: num(r[R3], pc) });
            else if (i.imm === WALK_LAYOUT.iterNext) {
              const st = iters.get(it)!;
              r[R0] = st.cur < st.end ? (st.cur++, 1) : 0;
            } else if (i.imm === WALK_LAYOUT.iterDestroy) iters.delete(it);
            else throw new Error(`pc ${pc}: kfunc ${i.imm}`);
          }
        } else if (i.imm === BPF_FUNC_get_current_task) r[R0] = k.task;
        else if (i.imm === BPF_FUNC_probe_read_kernel) {
          const size = num(r[R2], pc);
          const dst = mem(r[R1], 0, size, pc);
          r[R0] = k.read(new Uint8Array(dst.buffer, dst.byteOffset, size), size, num(r[R3], pc));
        } else throw new Error(`pc ${pc}: helper ${i.imm}`);
        for (let n = 1; n <= 5; n++) r[n] = undefined;
        continue;
      }
      if (op === BPF.JA) {
        pc += i.off;
        continue;
      }
      const a = num(r[i.dst], pc);
      const b = i.code & BPF.X ? num(r[i.src], pc) : i.imm;
      const taken = { [BPF.JEQ]: a === b, [BPF.JNE]: a !== b, [BPF.JGT]: a > b, [BPF.JGE]: a >= b, [BPF.JLT]: a < b, [BPF.JLE]: a <= b, [BPF.JSET]: (BigInt(a) & BigInt(b)) !== 0n }[op];
      if (taken === undefined) throw new Error(`pc ${pc}: jump op ${op}`);
      if (taken) pc += i.off;
    } else throw new Error(`pc ${pc}: class ${cls}`);
  }
}

/** The addon's driver (sockdiag.c walk_run), over the model: runs until done; the inodes and the header's counters. */
function walkAll(insns: readonly Insn[], k: Kernel, ports: readonly number[]): { inodes: number[]; runs: number; restarts: number; faults: number; buckets: number; done: number } {
  const value = new Uint8Array(WALK_VALUE_SIZE);
  value.set(walkValue(ports));
  value.fill(0, 0, WALK_HDR.ports);
  const v = new DataView(value.buffer);
  const inodes: number[] = [];
  for (let runs = 1; runs < 10_000; runs++) {
    walkOnce(insns, k, value);
    const done = v.getUint32(WALK_HDR.done, true);
    const count = v.getUint32(WALK_HDR.count, true);
    for (let i = 0; i < count; i++) inodes.push(v.getUint32(WALK_HDR.out + 4 * i, true));
    const result = { inodes, runs, restarts: v.getUint32(WALK_HDR.restarts, true), faults: v.getUint32(WALK_HDR.faults, true), buckets: v.getUint32(WALK_HDR.buckets, true), done };
    if (done !== 0) return result;
    assert.ok(v.getUint32(WALK_HDR.steps, true) > 0, `run ${runs} made no progress`);
  }
  throw new Error('too many runs');
}

const EST = TCP_ESTABLISHED;
const WALK = tcpWalkInsns(WALK_LAYOUT);

test('table walk (in the model): established sockets of this namespace on the watched ports, and nothing else is read past sock_common', () => {
  const chains: ModelSock[][] = [
    [{ state: EST, port: 8000, ino: 101 }, { state: EST, port: 8001, ino: 102 }, { state: 10, port: 8000, ino: 103 }],
    [],
    [{ state: 6, port: 8000, ino: 0, timeWait: true }, { state: EST, port: 8000, ino: 104, net: 'other' }, { state: EST, port: 9000, ino: 105 }],
    [{ state: EST, port: 8000, ino: 0 }, { state: EST, port: 8000, ino: 2 ** 32 + 106 }, { state: EST, port: 7999, ino: 107 }],
  ];
  const k = new Kernel(chains);
  const got = walkAll(WALK, k, [8000, 9000]);
  // 101 (port 8000), 105 (9000), the low 32 bits of the last; not: 8001, listening, time-wait, another netns, inode 0, 7999.
  assert.deepEqual(got.inodes.sort((a, b) => a - b), [101, 105, 106]);
  assert.deepEqual([got.done, got.runs, got.buckets, got.restarts, got.faults], [1, 1, 4, 0, 0]);
  // Loads go through the type they were cast to and stay inside it; sk_ino is read (as struct sock) only for the
  // matches, and the time-wait socket (128 bytes here) is never read past its sock_common.
  for (const { addr, size, type } of k.loads) {
    const end = (base: number): number => addr + size - base;
    const sock = [...k.socks].find(([sk, s]) => addr >= sk && addr < sk + s.bytes);
    if (!sock) {
      assert.equal(type, WALK_LAYOUT.idBucket);
      continue;
    }
    const [sk, s] = sock;
    if (end(sk) > 112) {
      assert.equal(type, WALK_LAYOUT.idSock);
      assert.ok(s.state === EST && [8000, 9000].includes(s.port) && s.net !== 'other', `read up to ${end(sk)} of ${JSON.stringify(s)}`);
    } else assert.equal(type, WALK_LAYOUT.idSockCommon);
  }
});

test('table walk (in the model): a chain whose end marker names another bucket is walked again once; an unreadable chain is given up', () => {
  const chains: ModelSock[][] = Array.from({ length: 16 }, (_, b) => [{ state: EST, port: 8000, ino: b + 1 }]);
  const k = new Kernel(chains, { badMarker: new Set([1, 9]), badChain: new Set([2]) });
  const got = walkAll(WALK, k, [8000]);
  // Buckets 1 and 9 twice (their markers always name the next bucket), bucket 2 not at all (its head is outside the heap).
  assert.deepEqual(got.inodes.sort((a, b) => a - b), [1, 2, 2, 4, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13, 14, 15, 16]);
  assert.deepEqual([got.restarts, got.faults, got.done], [2, 1, 1]);
});

test('table walk (in the model): runs of WALK_BUDGET steps resume each lane where it stopped, inside long buckets too, each socket once', () => {
  const long = (n: number, base: number): ModelSock[] => Array.from({ length: n }, (_, i): ModelSock => ({ state: EST, port: 8000 + (i % 3), ino: base + i }));
  // More lanes' worth of buckets than one group, two of them much longer than a run's budget, one empty.
  const chains: ModelSock[][] = Array.from({ length: 16 }, (_, b) => (b === 3 ? long(Math.floor(WALK_BUDGET * 1.5), 10_000) : b === 12 ? long(WALK_BUDGET, 100_000) : b === 5 ? [] : long(3, 1000 * (b + 1))));
  const k = new Kernel(chains, { bytes: (chains.flat().length + 64) * SOCK_BYTES + (1 << 16) });
  const got = walkAll(WALK, k, [8000, 8001]);
  const want = chains.flat().filter((s) => s.port !== 8002).map((s) => s.ino).sort((a, b) => a - b);
  assert.deepEqual([...got.inodes].sort((a, b) => a - b), want);
  assert.ok(got.runs >= 3, `${got.runs} runs`);
  assert.deepEqual([got.restarts, got.faults], [0, 0]);
});

test('table walk (in the model): fewer buckets than lanes; a namespace without a readable table says so (done = 2)', () => {
  const small = walkAll(WALK, new Kernel([[{ state: EST, port: 8000, ino: 1 }], [{ state: EST, port: 8000, ino: 2 }]]), [8000]);
  assert.deepEqual([small.inodes.sort(), small.buckets, small.done], [[1, 2], 2, 1]);
  const k = new Kernel([[{ state: EST, port: 8000, ino: 1 }]]);
  k.put64(k.task + WALK_LAYOUT.taskNsproxy, 0x20); // outside the heap
  const got = walkAll(WALK, k, [8000]);
  assert.deepEqual([got.done, got.inodes], [2, []]);
});

test('walkValue: the port map, one bit a port', () => {
  const v = walkValue([8000, 8001, 8002, 65535, 1]);
  const bits = [];
  for (let p = 0; p < 65536; p++) if (v[WALK_HDR.ports + (p >> 3)]! & (1 << (p & 7))) bits.push(p);
  assert.deepEqual(bits, [1, 8000, 8001, 8002, 65535]);
  assert.equal(v.length, WALK_HDR.out);
  assert.ok(v.subarray(0, WALK_HDR.ports).every((b) => b === 0));
  assert.throws(() => walkValue([]), /no ports/);
  assert.throws(() => walkValue([70000]), /not in 1-65535/);
});

test('the kernel verifier accepts the table walk, and a walk runs for one port, a range and 4,096 ports', { timeout: 60_000 }, () => {
  if (!addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1', reason);
    return;
  }
  const layout = kernelWalkLayout();
  assert.equal(layout.iterSize, 8);
  for (const ports of [[8000], Array.from({ length: 4096 }, (_, i) => 1000 + i), Array.from({ length: 4096 }, (_, i) => 1 + 2 * i)]) {
    if (!root) {
      // Not root: the kernel refuses to create the map (and would refuse the program).
      assert.throws(() => addon.walkOpen(tcpWalkProgram(layout), WALK_VALUE_SIZE, walkValue(ports)), { code: 'SOCKDIAG_ERRNO_1' });
      continue;
    }
    const walk = addon.walkOpen(tcpWalkProgram(layout), WALK_VALUE_SIZE, walkValue(ports));
    assert.ok(addon.walkRun(walk) instanceof Uint32Array);
    const stats = addon.walkStats(walk);
    assert.ok(stats.buckets >= 128 && (stats.buckets & (stats.buckets - 1)) === 0, JSON.stringify(stats)); // a power of two
    assert.ok(stats.runs >= Math.ceil(stats.buckets / WALK_BUDGET), JSON.stringify(stats));
    addon.walkClose(walk);
    assert.throws(() => addon.walkRun(walk), { code: 'SOCKDIAG_BAD_ARGS', message: /closed/ });
    addon.walkClose(walk); // again: nothing left to free
  }
});

test('the table walk: a malformed program is refused with the verifier log; bad arguments are refused', () => {
  if (!addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1', reason);
    return;
  }
  if (root) {
    // A loop that never ends (no iterator bounds it): the verifier finds the state repeating.
    const loop = [movImm(R0, 0), jmpImm(BPF.JEQ, R0, 1, 1), ja(-2), exit()];
    assert.throws(() => addon.walkOpen(encode(loop), WALK_VALUE_SIZE, new Uint8Array(0)), { code: 'SOCKDIAG_ERRNO_22', message: /BPF_PROG_LOAD \(raw_tracepoint, table walk\): Invalid argument; verifier log: .*infinite loop detected/s });
  }
  const walkOpen = addon.walkOpen as (...a: unknown[]) => unknown;
  const init = new Uint8Array(0);
  assert.throws(() => walkOpen(new Uint8Array(7), WALK_VALUE_SIZE, init), { code: 'SOCKDIAG_BAD_ARGS', message: /whole 8-byte instructions/ });
  assert.throws(() => walkOpen(encode([exit()]), WALK_HDR.out, init), { code: 'SOCKDIAG_BAD_ARGS', message: /valueSize/ });
  assert.throws(() => walkOpen(encode([exit()]), WALK_HDR.out + 6, init), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => walkOpen(encode([exit()]), 17 << 20, init), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => walkOpen(encode([exit()])), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => walkOpen(encode([exit()]), WALK_VALUE_SIZE), { code: 'SOCKDIAG_BAD_ARGS', message: /init must be a Uint8Array/ });
  assert.throws(() => walkOpen(encode([exit()]), WALK_VALUE_SIZE, new Uint8Array(WALK_VALUE_SIZE + 1)), { code: 'SOCKDIAG_BAD_ARGS', message: /init/ });
  for (const fn of ['walkRun', 'walkStats', 'walkClose'] as const) {
    assert.throws(() => (addon[fn] as (...a: unknown[]) => unknown)({}), { code: 'SOCKDIAG_BAD_ARGS', message: /handle walkOpen returned/ });
    assert.throws(() => (addon[fn] as (...a: unknown[]) => unknown)(7), { code: 'SOCKDIAG_BAD_ARGS' });
  }
});
