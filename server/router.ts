// The message router of the seed (`login/logout/send`), behind one small interface so that the
// cross-process and cross-host buses of a later issue can replace the local one and pass the same test suite.

/**
 * Hands one message to the local connections logged in as its id; returns how many it reached.
 * The router calls it once per send with the whole set, so the server can frame the message once.
 */
export type Deliver<C> = (msg: string, conns: ReadonlySet<C>) => number;

/** A message router: who is logged in as which id, and delivery of `send(id, msg)` to them. */
export interface Router<C> {
  /** Logs `conn` in as `id`; a connection may hold several ids and an id several connections. Idempotent. */
  login(id: number, conn: C): void;
  /** Logs `conn` out of every id it holds (call it when the connection closes, for any reason). */
  logout(conn: C): void;
  /** Delivers `msg` to every connection logged in as `id`; resolves to the number of connections reached (0 is not an error). */
  send(id: number, msg: string): number | Promise<number>;
  /** The ids `conn` is logged in as (empty when none). */
  idsOf(conn: C): readonly number[];
  /** Number of distinct ids with at least one local connection. */
  readonly idCount: number;
  /** Number of local connections logged in as at least one id. */
  readonly connCount: number;
  /** Releases the router's resources (bus connections, timers); local routers just clear their maps. */
  close(): Promise<void>;
}

/** Builds a router around a delivery function; the shared test suite takes one of these. */
export type RouterFactory<C> = (deliver: Deliver<C>) => Router<C> | Promise<Router<C>>;

// Both maps store a bare value when there is exactly one (the common case: one id per connection, one connection
// per id) and switch to a Set/array only when a second one arrives. A Set costs ~200 bytes; at 10,000+ connections
// that would be more than the rest of the router.
type Conns<C> = C | Set<C>;
type Ids = number | number[];

/**
 * Told when an id gets its first local connection (`present` true) or loses its last one (false), after the maps
 * changed; buses subscribe or unsubscribe the id there. Not called by `close()`.
 */
export type IdChange = (id: number, present: boolean) => void;

/** The in-process router: bidirectional maps id → connections and connection → ids. */
export class LocalRouter<C extends object> implements Router<C> {
  private readonly byId = new Map<number, Conns<C>>();
  private readonly byConn = new Map<C, Ids>();
  // A reusable one-element set so single-receiver sends allocate nothing.
  private readonly one = new Set<C>();

  // One hook per router, called only when an id appears or disappears: nothing per connection.
  constructor(private readonly deliver: Deliver<C>, private readonly onIdChange?: IdChange) {}

  login(id: number, conn: C): void {
    const ids = this.byConn.get(conn);
    if (ids === undefined) {
      this.byConn.set(conn, id);
    } else if (typeof ids === 'number') {
      if (ids === id) return;
      this.byConn.set(conn, [ids, id]);
    } else {
      if (ids.includes(id)) return;
      ids.push(id);
    }
    const conns = this.byId.get(id);
    if (conns === undefined) {
      this.byId.set(id, conn);
      this.onIdChange?.(id, true);
    } else if (conns instanceof Set) conns.add(conn);
    else if (conns !== conn) this.byId.set(id, new Set([conns, conn]));
  }

  logout(conn: C): void {
    const ids = this.byConn.get(conn);
    if (ids === undefined) return;
    this.byConn.delete(conn);
    if (typeof ids === 'number') this.dropFromId(ids, conn);
    else for (const id of ids) this.dropFromId(id, conn);
  }

  private dropFromId(id: number, conn: C): void {
    const conns = this.byId.get(id);
    if (conns === undefined) return;
    if (conns instanceof Set) {
      conns.delete(conn);
      if (conns.size === 1) this.byId.set(id, conns.values().next().value as C);
      else if (conns.size === 0) this.dropId(id);
    } else if (conns === conn) {
      this.dropId(id);
    }
  }

  private dropId(id: number): void {
    this.byId.delete(id);
    this.onIdChange?.(id, false);
  }

  send(id: number, msg: string): number {
    const conns = this.byId.get(id);
    if (conns === undefined) return 0;
    if (conns instanceof Set) return this.deliver(msg, conns);
    this.one.add(conns);
    try {
      return this.deliver(msg, this.one);
    } finally {
      // delete, not clear: clear() allocates a fresh hash table on every send; delete only marks the entry, and the
      // table is rebuilt (same small size) once every few sends.
      this.one.delete(conns);
    }
  }

  idsOf(conn: C): readonly number[] {
    const ids = this.byConn.get(conn);
    if (ids === undefined) return [];
    return typeof ids === 'number' ? [ids] : ids.slice();
  }

  /** True when at least one local connection is logged in as `id`. */
  has(id: number): boolean {
    return this.byId.has(id);
  }

  /** Number of local connections logged in as `id`. */
  countOf(id: number): number {
    const conns = this.byId.get(id);
    return conns === undefined ? 0 : conns instanceof Set ? conns.size : 1;
  }

  /** The ids with at least one local connection (a live view: do not log in or out while iterating). */
  ids(): IterableIterator<number> {
    return this.byId.keys();
  }

  get idCount(): number {
    return this.byId.size;
  }

  get connCount(): number {
    return this.byConn.size;
  }

  async close(): Promise<void> {
    this.byId.clear();
    this.byConn.clear();
  }
}

/** The default factory: an in-process router. */
export const localRouterFactory = <C extends object>(deliver: Deliver<C>): Router<C> => new LocalRouter<C>(deliver);
