// A small reader of BTF, the kernel's own description of its types (/sys/kernel/btf/vmlinux), for the eBPF socket
// iterator (bpf.ts): every field offset its program loads comes from the running kernel, never from a constant.
//
// The format (include/uapi/linux/btf.h): a header, a type section and a string section. Types are numbered from 1
// in the order they appear (0 is void); each is a 12-byte btf_type {name_off, info, size|type} followed by data that
// depends on its kind (members of a struct, params of a function prototype, ...). Nothing in the section says where
// type N starts, so the reader walks it once and keeps an index of offsets (~150,000 types in a vmlinux, 0.6 MB of
// Uint32Array), then decodes only the types it is asked about. Names are compared as bytes against the string
// section, so looking a name up makes no string per type.

import { readFileSync } from 'node:fs';

/** BTF_KIND_* numbers (include/uapi/linux/btf.h). */
export const BTF_KIND = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

/** BTF_MAGIC: the first two bytes of a blob, in the writer's byte order. */
export const BTF_MAGIC = 0xeb9f;

/** Where the running kernel publishes its BTF. */
export const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';

const KIND_NAMES = Object.fromEntries(Object.entries(BTF_KIND).map(([k, v]) => [v, k.toLowerCase()])) as Record<number, string>;

/** A BTF problem; `code` is stable: a malformed blob, or a type or member that is not there. */
export class BtfError extends Error {
  constructor(readonly code: 'C1M_MEMLOG_BTF_FORMAT' | 'C1M_MEMLOG_BTF_NOT_FOUND', message: string) {
    super(message);
    this.name = 'BtfError';
  }
}

/** One struct or union member. `bitOffset` is from the start of the enclosing type; `bitSize` is 0 unless a bitfield. */
export interface BtfMember {
  name: string;
  type: number;
  bitOffset: number;
  bitSize: number;
}

/** One decoded type. `size` is meaningful for int/struct/union/enum/float/datasec, `type` for the referring kinds. */
export interface BtfType {
  id: number;
  kind: number;
  name: string;
  vlen: number;
  kindFlag: boolean;
  size: number;
  type: number;
  members: BtfMember[];
  /** For arrays: element type and count. */
  array?: { type: number; nelems: number };
}

/** A member path resolved to bytes: where it starts in the outer type, how big it is, and its type without modifiers. */
export interface ResolvedMember {
  offset: number;
  size: number;
  /** The member's type id with typedefs and const/volatile/restrict/type tags peeled off. */
  type: number;
  kind: number;
}

/** Bytes of kind-specific data after a btf_type's 12 bytes. */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case BTF_KIND.INT:
    case BTF_KIND.VAR:
    case BTF_KIND.DECL_TAG:
      return 4;
    case BTF_KIND.ARRAY:
      return 12;
    case BTF_KIND.STRUCT:
    case BTF_KIND.UNION:
    case BTF_KIND.DATASEC:
    case BTF_KIND.ENUM64:
      return 12 * vlen;
    case BTF_KIND.ENUM:
    case BTF_KIND.FUNC_PROTO:
      return 8 * vlen;
    case BTF_KIND.PTR:
    case BTF_KIND.FWD:
    case BTF_KIND.TYPEDEF:
    case BTF_KIND.VOLATILE:
    case BTF_KIND.CONST:
    case BTF_KIND.RESTRICT:
    case BTF_KIND.FUNC:
    case BTF_KIND.FLOAT:
    case BTF_KIND.TYPE_TAG:
      return 0;
    default:
      return -1;
  }
}

/** Kinds that only qualify another type (resolved through for offsets and sizes). */
const MODIFIERS = new Set<number>([BTF_KIND.TYPEDEF, BTF_KIND.VOLATILE, BTF_KIND.CONST, BTF_KIND.RESTRICT, BTF_KIND.TYPE_TAG]);

/** A parsed BTF blob: find types by name and kind, resolve member paths to byte offsets. */
export class Btf {
  private readonly view: DataView;
  private readonly le: boolean;
  private readonly typesAt: number;
  private readonly strsAt: number;
  private readonly strsLen: number;
  /** Byte offset in the blob of type id i (index 0 unused: void). */
  private readonly offsets: Uint32Array;

  /** Parses a blob; throws BtfError C1M_MEMLOG_BTF_FORMAT when it is not well-formed BTF. */
  constructor(private readonly bytes: Uint8Array) {
    const bad = (why: string): never => {
      throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: ${why}`);
    };
    if (bytes.length < 24) bad(`${bytes.length} bytes is shorter than the header`);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const magicLe = this.view.getUint16(0, true);
    if (magicLe === BTF_MAGIC) this.le = true;
    else if (this.view.getUint16(0, false) === BTF_MAGIC) this.le = false;
    else this.le = bad(`bad magic 0x${magicLe.toString(16)} (want 0x${BTF_MAGIC.toString(16)})`);
    const v = this.view;
    if (v.getUint8(2) !== 1) bad(`version ${v.getUint8(2)} (this reader knows 1)`);
    const hdrLen = v.getUint32(4, this.le);
    const typeOff = v.getUint32(8, this.le);
    const typeLen = v.getUint32(12, this.le);
    const strOff = v.getUint32(16, this.le);
    const strLen = v.getUint32(20, this.le);
    if (hdrLen < 24 || hdrLen > bytes.length) bad(`header length ${hdrLen}`);
    this.typesAt = hdrLen + typeOff;
    this.strsAt = hdrLen + strOff;
    this.strsLen = strLen;
    if (this.typesAt + typeLen > bytes.length || this.strsAt + strLen > bytes.length) bad('a section runs past the end of the blob');
    if (typeOff % 4 !== 0) bad(`type section at ${typeOff} is not 4-byte aligned`);

    const offsets: number[] = [0];
    const end = this.typesAt + typeLen;
    for (let at = this.typesAt; at < end;) {
      if (at + 12 > end) bad(`type ${offsets.length} is cut off at byte ${at - this.typesAt} of the type section`);
      const info = v.getUint32(at + 4, this.le);
      const kind = (info >>> 24) & 0x1f;
      const extra = extraBytes(kind, info & 0xffff);
      if (extra < 0) bad(`type ${offsets.length} has unknown kind ${kind}`);
      offsets.push(at);
      at += 12 + extra;
      if (at > end) bad(`type ${offsets.length - 1} runs past the type section`);
    }
    this.offsets = Uint32Array.from(offsets);
  }

  /** Reads and parses a BTF file (default: the running kernel's). */
  static load(path = VMLINUX_BTF): Btf {
    return new Btf(readFileSync(path));
  }

  /** Number of types (the largest id). */
  get count(): number {
    return this.offsets.length - 1;
  }

  /** The NUL-terminated string at `off` of the string section. */
  str(off: number): string {
    if (off >= this.strsLen) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: name offset ${off} is past the string section (${this.strsLen} bytes)`);
    const start = this.strsAt + off;
    let end = start;
    while (end < this.strsAt + this.strsLen && this.bytes[end] !== 0) end++;
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + start, end - start).toString('latin1');
  }

  /** Whether the string at `off` equals `name` (as bytes). */
  private nameIs(off: number, name: Uint8Array): boolean {
    const start = this.strsAt + off;
    if (off + name.length >= this.strsLen) return false;
    for (let i = 0; i < name.length; i++) if (this.bytes[start + i] !== name[i]) return false;
    return this.bytes[start + name.length] === 0;
  }

  /** Decodes type `id` (1..count). */
  type(id: number): BtfType {
    if (!Number.isInteger(id) || id < 1 || id > this.count) throw new BtfError('C1M_MEMLOG_BTF_NOT_FOUND', `BTF: no type id ${id} (1-${this.count})`);
    const v = this.view;
    const le = this.le;
    const at = this.offsets[id]!;
    const info = v.getUint32(at + 4, le);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const kindFlag = info >>> 31 === 1;
    const sizeOrType = v.getUint32(at + 8, le);
    const t: BtfType = { id, kind, name: this.str(v.getUint32(at, le)), vlen, kindFlag, size: sizeOrType, type: sizeOrType, members: [] };
    if (kind === BTF_KIND.STRUCT || kind === BTF_KIND.UNION) {
      for (let i = 0; i < vlen; i++) {
        const m = at + 12 + 12 * i;
        const off = v.getUint32(m + 8, le);
        t.members.push({
          name: this.str(v.getUint32(m, le)),
          type: v.getUint32(m + 4, le),
          bitOffset: kindFlag ? off & 0xffffff : off,
          bitSize: kindFlag ? off >>> 24 : 0,
        });
      }
    } else if (kind === BTF_KIND.ARRAY) {
      t.array = { type: v.getUint32(at + 12, le), nelems: v.getUint32(at + 20, le) };
    }
    return t;
  }

  /** Ids of every type of `kind` named `name`, in id order. */
  findAll(name: string, kind: number): number[] {
    const want = Buffer.from(name, 'latin1');
    const out: number[] = [];
    for (let id = 1; id <= this.count; id++) {
      const at = this.offsets[id]!;
      if (((this.view.getUint32(at + 4, this.le) >>> 24) & 0x1f) !== kind) continue;
      if (this.nameIs(this.view.getUint32(at, this.le), want)) out.push(id);
    }
    return out;
  }

  /** The id of the type of `kind` named `name` (the first, if several); throws C1M_MEMLOG_BTF_NOT_FOUND. */
  find(name: string, kind: number): number {
    const ids = this.findAll(name, kind);
    if (ids.length === 0) throw new BtfError('C1M_MEMLOG_BTF_NOT_FOUND', `BTF: no ${KIND_NAMES[kind] ?? `kind ${kind}`} named '${name}'`);
    return ids[0]!;
  }

  /** `id` with typedefs and qualifiers peeled off (0 stays void). */
  resolve(id: number): number {
    for (let hops = 0; id !== 0; hops++) {
      if (hops > 64) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: type ${id}: a loop of typedefs or qualifiers`);
      const t = this.type(id);
      if (!MODIFIERS.has(t.kind)) return id;
      id = t.type;
    }
    return 0;
  }

  /** Size in bytes of a type (pointers: 8). */
  sizeOf(id: number): number {
    const r = this.resolve(id);
    if (r === 0) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', 'BTF: void has no size');
    const t = this.type(r);
    switch (t.kind) {
      case BTF_KIND.PTR:
        return 8;
      case BTF_KIND.ARRAY:
        return t.array!.nelems * this.sizeOf(t.array!.type);
      case BTF_KIND.INT:
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION:
      case BTF_KIND.ENUM:
      case BTF_KIND.ENUM64:
      case BTF_KIND.FLOAT:
        return t.size;
      default:
        throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: type ${r} (${KIND_NAMES[t.kind]} '${t.name}') has no size`);
    }
  }

  /**
   * The bit offset and type of member `name` of struct/union `id`, looking inside anonymous struct and union
   * members too (C's `sk->skc_num` reaches through `union { struct { __be16 skc_dport; __u16 skc_num; }; }`).
   */
  private member(id: number, name: string): { bitOffset: number; bitSize: number; type: number } | null {
    const t = this.type(this.resolve(id));
    if (t.kind !== BTF_KIND.STRUCT && t.kind !== BTF_KIND.UNION) return null;
    for (const m of t.members) {
      if (m.name === name) return m;
      if (m.name === '') {
        const inner = this.member(m.type, name);
        if (inner) return { bitOffset: m.bitOffset + inner.bitOffset, bitSize: inner.bitSize, type: inner.type };
      }
    }
    return null;
  }

  /**
   * Resolves a dotted member path ('__sk_common.skc_num') in struct/union `id` to its byte offset and size.
   * Throws C1M_MEMLOG_BTF_NOT_FOUND for a missing member, C1M_MEMLOG_BTF_FORMAT for a bitfield or an offset that
   * is not a whole byte.
   */
  memberOffset(id: number, path: string): ResolvedMember {
    let cur = id;
    let bits = 0;
    const outer = this.type(this.resolve(id));
    for (const name of path.split('.')) {
      const t = this.type(this.resolve(cur));
      if (t.kind !== BTF_KIND.STRUCT && t.kind !== BTF_KIND.UNION) {
        throw new BtfError('C1M_MEMLOG_BTF_NOT_FOUND', `BTF: '${name}' of ${outer.name || `type ${id}`}.${path}: type ${t.id} is a ${KIND_NAMES[t.kind]}, not a struct or union`);
      }
      const m = this.member(t.id, name);
      if (!m) throw new BtfError('C1M_MEMLOG_BTF_NOT_FOUND', `BTF: struct ${outer.name || `type ${id}`} has no member ${path} ('${name}' is not in ${KIND_NAMES[t.kind]} ${t.name || `type ${t.id}`})`);
      if (m.bitSize !== 0) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: ${outer.name}.${path} is a ${m.bitSize}-bit bitfield`);
      bits += m.bitOffset;
      cur = m.type;
    }
    if (bits % 8 !== 0) throw new BtfError('C1M_MEMLOG_BTF_FORMAT', `BTF: ${outer.name}.${path} starts at bit ${bits}, not on a byte`);
    const type = this.resolve(cur);
    return { offset: bits / 8, size: this.sizeOf(type), type, kind: type === 0 ? 0 : this.type(type).kind };
  }
}
