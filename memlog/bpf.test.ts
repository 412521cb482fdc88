import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import {
  BPF, BPF_FUNC_seq_write, BPF_FUNC_skc_to_tcp_sock, R0, R1, R2, R6, R7, R10, Asm, addImm, call, decode, emitPortTree, encode, exit, ja, jmpImm,
  ldx, movImm, movReg, stx, tcpIterInsns, tcpIterProgram, type Insn, type TcpIterLayout,
} from './bpf.js';
import { TCP_ESTABLISHED, portRanges } from './tcptable.js';
import { kernelLayout, loadSockDiag } from './netlink.js';

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

test('the assembler resolves forward labels and refuses backward or undefined ones', () => {
  const a = new Asm();
  a.jump(BPF.JEQ, R2, 1, 'end');
  a.emit(movImm(R0, 1));
  a.jump(BPF.JA, 0, 0, 'end');
  a.label('end');
  a.emit(exit());
  assert.deepEqual(a.finish().map((i) => i.off), [2, 0, 0, 0]);
  const back = new Asm();
  back.label('top');
  back.jump(BPF.JA, 0, 0, 'top');
  assert.throws(() => back.finish(), /not forward/);
  const none = new Asm();
  none.jump(BPF.JA, 0, 0, 'nowhere');
  assert.throws(() => none.finish(), /undefined label/);
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
