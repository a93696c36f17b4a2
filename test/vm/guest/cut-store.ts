// A store engine one node can be cut off from (its network to etcd lost, say), for tests: while
// cut, every call fails with StoreUnavailableError and the node's lease is gone from the store;
// the node learns it lost the lease once its TTL has run out since the cut, as it would.
import { StoreUnavailableError, type NodeLease, type RawRecord, type StoreBackend } from '../../../src/cluster/store-backend.js';

export class CuttableBackend implements StoreBackend {
  private isCut = false;
  private readonly leases = new Set<{ inner: NodeLease; ttlMs: number; lose: (why: string) => void }>();

  constructor(private readonly inner: StoreBackend) {}

  get engine(): StoreBackend['engine'] {
    return this.inner.engine;
  }

  get location(): string {
    return this.inner.location;
  }

  /** From now on the store cannot be reached from this node. */
  cut(): void {
    this.isCut = true;
    for (const l of this.leases) {
      void l.inner.close(); // the store no longer sees this node
      setTimeout(() => l.lose(`could not renew the lease of ${l.inner.node} before it ran out: cut off`), l.ttlMs).unref();
    }
  }

  private reach(): void {
    if (this.isCut) throw new StoreUnavailableError(this.inner.location, 'cut off from this node');
  }

  async readAll(): Promise<RawRecord[]> {
    this.reach();
    return this.inner.readAll();
  }

  async read(tag: string): Promise<RawRecord | undefined> {
    this.reach();
    return this.inner.read(tag);
  }

  async compareAndSwap(tag: string, expected: number, record: unknown): Promise<number> {
    this.reach();
    return this.inner.compareAndSwap(tag, expected, record);
  }

  async watch(onChange: (tag: string) => void): Promise<() => void> {
    this.reach();
    return this.inner.watch((tag) => !this.isCut && onChange(tag));
  }

  async keepAlive(node: string, ttlMs: number): Promise<NodeLease> {
    this.reach();
    const inner = await this.inner.keepAlive(node, ttlMs);
    let lose: (why: string) => void = () => {};
    const lost = Promise.race([inner.lost, new Promise<string>((r) => (lose = r))]);
    const entry = { inner, ttlMs, lose };
    this.leases.add(entry);
    return {
      node,
      lost,
      close: async () => {
        this.leases.delete(entry);
        await inner.close();
      },
    };
  }

  async liveNodes(): Promise<string[]> {
    this.reach();
    return this.inner.liveNodes();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
