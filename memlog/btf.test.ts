import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Btf, BtfError, BTF_KIND, BTF_MAGIC, VMLINUX_BTF } from './btf.js';

/** One type for buildBtf: its btf_type words and the kind-specific words after them. */
interface T {
  name: string;
  kind: number;
  vlen?: number;
  kflag?: boolean;
  sizeOrType: number;
  /** u32 words after the btf_type; a string in a member/param name slot is replaced by its offset. */
  extra?: (number | string)[];
}

/** A BTF blob as the kernel lays it out (header, types, strings), in either byte order. */
function buildBtf(types: T[], le = true): Uint8Array {
  const strs: number[] = [0];
  const strOff = new Map<string, number>([['', 0]]);
  const str = (s: string): number => {
    let o = strOff.get(s);
    if (o === undefined) {
      o = strs.length;
      strOff.set(s, o);
      for (const c of Buffer.from(s, 'latin1')) strs.push(c);
      strs.push(0);
    }
    return o;
  };
  const words: number[] = [];
  for (const t of types) {
    words.push(str(t.name), ((t.kflag ? 1 : 0) << 31) | (t.kind << 24) | (t.vlen ?? 0), t.sizeOrType);
    for (const w of t.extra ?? []) words.push(typeof w === 'string' ? str(w) : w);
  }
  const typeLen = words.length * 4;
  const out = new Uint8Array(24 + typeLen + strs.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, BTF_MAGIC, le);
  v.setUint8(2, 1);
  v.setUint32(4, 24, le);
  v.setUint32(8, 0, le);
  v.setUint32(12, typeLen, le);
  v.setUint32(16, typeLen, le);
  v.setUint32(20, strs.length, le);
  words.forEach((w, i) => v.setUint32(24 + 4 * i, w >>> 0, le));
  out.set(strs, 24 + typeLen);
  return out;
}

const K = BTF_KIND;
// A miniature of the kernel's shapes: sock_common's port hides in an anonymous struct inside an anonymous union,
// behind a typedef; the state is `volatile unsigned char`; a holder struct has a bitfield and a pointer.
const TYPES: T[] = [
  /* 1 */ { name: 'unsigned char', kind: K.INT, sizeOrType: 1, extra: [8] },
  /* 2 */ { name: 'unsigned short', kind: K.INT, sizeOrType: 2, extra: [16] },
  /* 3 */ { name: 'unsigned int', kind: K.INT, sizeOrType: 4, extra: [32] },
  /* 4 */ { name: '', kind: K.VOLATILE, sizeOrType: 1 },
  /* 5 */ { name: '__u16', kind: K.TYPEDEF, sizeOrType: 2 },
  /* 6 */ { name: '', kind: K.STRUCT, vlen: 2, sizeOrType: 4, extra: ['skc_dport', 5, 0, 'skc_num', 5, 16] },
  /* 7 */ { name: '', kind: K.UNION, vlen: 2, sizeOrType: 4, extra: ['skc_portpair', 3, 0, '', 6, 0] },
  /* 8 */ { name: 'sock_common', kind: K.STRUCT, vlen: 3, sizeOrType: 12, extra: ['skc_hash', 3, 0, '', 7, 32, 'skc_state', 4, 64] },
  /* 9 */ { name: '', kind: K.PTR, sizeOrType: 8 },
  /* 10 */ { name: 'holder', kind: K.STRUCT, vlen: 3, kflag: true, sizeOrType: 24, extra: ['flags', 3, (3 << 24) | 0, 'sk', 9, 64, 'arr', 14, 128] },
  /* 11 */ { name: '', kind: K.FUNC_PROTO, vlen: 1, sizeOrType: 3, extra: ['ctx', 9] },
  /* 12 */ { name: 'bpf_iter_tcp', kind: K.FUNC, sizeOrType: 11 },
  /* 13 */ { name: 'sock_common', kind: K.FWD, sizeOrType: 0 },
  /* 14 */ { name: '', kind: K.ARRAY, sizeOrType: 0, extra: [2, 3, 4] },
  /* 15 */ { name: 'odd', kind: K.STRUCT, vlen: 1, sizeOrType: 2, extra: ['half', 1, 4] },
  /* 16 */ { name: 'e', kind: K.ENUM, vlen: 2, sizeOrType: 4, extra: ['A', 0, 'B', 1] },
  /* 17 */ { name: 'loop', kind: K.TYPEDEF, sizeOrType: 17 },
];

test('BTF: finds types by name and kind, decodes members', () => {
  const btf = new Btf(buildBtf(TYPES));
  assert.equal(btf.count, TYPES.length);
  assert.equal(btf.find('sock_common', K.STRUCT), 8);
  assert.equal(btf.find('sock_common', K.FWD), 13); // same name, another kind
  assert.deepEqual(btf.findAll('sock_common', K.UNION), []);
  assert.equal(btf.find('bpf_iter_tcp', K.FUNC), 12);
  assert.equal(btf.type(12).type, 11);
  assert.equal(btf.find('e', K.ENUM), 16); // enum's 8-byte entries were skipped correctly to reach it
  assert.deepEqual(btf.type(10).members, [
    { name: 'flags', type: 3, bitOffset: 0, bitSize: 3 },
    { name: 'sk', type: 9, bitOffset: 64, bitSize: 0 },
    { name: 'arr', type: 14, bitOffset: 128, bitSize: 0 },
  ]);
  assert.throws(() => btf.find('sock', K.STRUCT), { code: 'C1M_MEMLOG_BTF_NOT_FOUND', message: "BTF: no struct named 'sock'" });
  assert.throws(() => btf.type(0), { code: 'C1M_MEMLOG_BTF_NOT_FOUND' });
  assert.throws(() => btf.type(TYPES.length + 1), BtfError);
});

test('BTF: member paths resolve through anonymous unions and structs, typedefs and qualifiers', () => {
  const btf = new Btf(buildBtf(TYPES));
  // skc_num: union at byte 4, anonymous struct at 0 in it, skc_num 2 bytes in: byte 6, a __u16 → unsigned short.
  assert.deepEqual(btf.memberOffset(8, 'skc_num'), { offset: 6, size: 2, type: 2, kind: K.INT });
  assert.deepEqual(btf.memberOffset(8, 'skc_dport'), { offset: 4, size: 2, type: 2, kind: K.INT });
  assert.deepEqual(btf.memberOffset(8, 'skc_portpair'), { offset: 4, size: 4, type: 3, kind: K.INT });
  assert.deepEqual(btf.memberOffset(8, 'skc_state'), { offset: 8, size: 1, type: 1, kind: K.INT }); // volatile peeled
  assert.deepEqual(btf.memberOffset(10, 'sk'), { offset: 8, size: 8, type: 9, kind: K.PTR });
  assert.deepEqual(btf.memberOffset(10, 'arr'), { offset: 16, size: 8, type: 14, kind: K.ARRAY }); // 4 × u16
  assert.equal(btf.sizeOf(8), 12);
  assert.equal(btf.resolve(5), 2);
  // Errors: a missing member, a path through a non-struct, a bitfield, an offset inside a byte, a typedef loop.
  assert.throws(() => btf.memberOffset(8, 'skc_family'), { code: 'C1M_MEMLOG_BTF_NOT_FOUND', message: /struct sock_common has no member skc_family/ });
  assert.throws(() => btf.memberOffset(8, 'skc_hash.x'), { code: 'C1M_MEMLOG_BTF_NOT_FOUND', message: /is a int, not a struct or union/ });
  assert.throws(() => btf.memberOffset(10, 'flags'), { code: 'C1M_MEMLOG_BTF_FORMAT', message: /3-bit bitfield/ });
  assert.throws(() => btf.memberOffset(15, 'half'), { code: 'C1M_MEMLOG_BTF_FORMAT', message: /starts at bit 4/ });
  assert.throws(() => btf.resolve(17), { code: 'C1M_MEMLOG_BTF_FORMAT', message: /loop/ });
});

test('BTF: a big-endian blob reads the same', () => {
  const btf = new Btf(buildBtf(TYPES, false));
  assert.deepEqual(btf.memberOffset(btf.find('sock_common', K.STRUCT), 'skc_num'), { offset: 6, size: 2, type: 2, kind: K.INT });
});

test('BTF: malformed blobs are refused with C1M_MEMLOG_BTF_FORMAT', () => {
  const good = buildBtf(TYPES);
  const bad = (bytes: Uint8Array, why: RegExp): void => assert.throws(() => new Btf(bytes), { code: 'C1M_MEMLOG_BTF_FORMAT', message: why });
  bad(good.subarray(0, 10), /shorter than the header/);
  const magic = good.slice();
  magic[0] = 0;
  bad(magic, /bad magic/);
  const version = good.slice();
  version[2] = 2;
  bad(version, /version 2/);
  // Cut the type section in the middle of a struct's members (the header still claims the full length).
  const cut = good.slice();
  new DataView(cut.buffer).setUint32(12, 24 + 12 * 5 + 8 * 4, true);
  bad(cut, /runs past the type section|cut off/);
  const unknownKind = buildBtf([{ name: 'x', kind: 25, sizeOrType: 0 }]);
  bad(unknownKind, /unknown kind 25/);
  const past = good.slice();
  new DataView(past.buffer).setUint32(20, 1 << 20, true);
  bad(past, /past the end/);
  // A name offset past the string section is caught when the type is decoded.
  const name = buildBtf([{ name: '', kind: K.INT, sizeOrType: 4, extra: [32] }]);
  new DataView(name.buffer).setUint32(24, 999, true);
  assert.throws(() => new Btf(name).type(1), { code: 'C1M_MEMLOG_BTF_FORMAT', message: /name offset 999/ });
});

test('BTF of the running kernel: the iterator target and the fields memlog loads', () => {
  // CI runs on the same kind of machine (Linux with CONFIG_DEBUG_INFO_BTF); anywhere else the file must be absent.
  if (!existsSync(VMLINUX_BTF)) {
    assert.throws(() => Btf.load(), { code: 'ENOENT' });
    return;
  }
  const btf = Btf.load();
  assert.ok(btf.count > 10_000, `${btf.count} types`);
  const fn = btf.type(btf.find('bpf_iter_tcp', K.FUNC));
  assert.equal(btf.type(fn.type).kind, K.FUNC_PROTO);
  const ctx = btf.find('bpf_iter__tcp', K.STRUCT);
  // __bpf_md_ptr() puts each pointer in an anonymous union padded to 8 bytes: meta at 0, sk_common at 8.
  assert.deepEqual([btf.memberOffset(ctx, 'meta').offset, btf.memberOffset(ctx, 'sk_common').offset], [0, 8]);
  assert.equal(btf.memberOffset(ctx, 'sk_common').kind, K.PTR);
  const skc = btf.find('sock_common', K.STRUCT);
  // struct sock_common's start has not moved in years: addrpair (8), hash (4), dport/num (2+2), family (2), state.
  assert.deepEqual([btf.memberOffset(skc, 'skc_num').offset, btf.memberOffset(skc, 'skc_num').size], [14, 2]);
  assert.deepEqual([btf.memberOffset(skc, 'skc_family').offset, btf.memberOffset(skc, 'skc_state').offset], [16, 18]);
  assert.equal(btf.memberOffset(skc, 'skc_state').size, 1);
  // tcp_sock starts with inet_connection_sock, which starts with inet_sock, which starts with sock.
  const tcp = btf.find('tcp_sock', K.STRUCT);
  const sock = btf.find('sock', K.STRUCT);
  assert.equal(btf.memberOffset(tcp, 'inet_conn.icsk_inet.sk.sk_socket').offset, btf.memberOffset(sock, 'sk_socket').offset);
  assert.equal(btf.memberOffset(tcp, 'inet_conn.icsk_inet.sk.__sk_common.skc_num').offset, 14);
});
