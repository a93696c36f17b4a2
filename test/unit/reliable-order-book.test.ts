// The order-matching example's engine: price-time priority, fills at the resting price, partial
// fills, what rests, bad orders refused without a change, and determinism (two books fed the
// same seeded orders end equal, trade for trade).
import { describe, expect, it } from 'vitest';
import { OrderBook, encodeOrder, orderMatchingApp, type LimitOrder } from '../../docs/examples/order-matching/order-book.js';
import { seededRandom } from './mirror-helpers.js';

describe('order book', () => {
  it('matches the best price first, then the oldest order, at the resting price', () => {
    const b = new OrderBook();
    expect(b.submit({ side: 'sell', price: 101, qty: 5 })).toEqual({ order: 1, trades: [], rest: 5 });
    b.submit({ side: 'sell', price: 100, qty: 3 }); // 2
    b.submit({ side: 'sell', price: 100, qty: 4 }); // 3, behind 2 at the same price
    b.submit({ side: 'buy', price: 98, qty: 2 }); // 4, does not cross
    expect(b.top()).toEqual({ bid: 98, ask: 100 });
    const r = b.submit({ side: 'buy', price: 101, qty: 10 }); // 5
    expect(r).toEqual({
      order: 5,
      trades: [
        { taker: 5, maker: 2, price: 100, qty: 3 },
        { taker: 5, maker: 3, price: 100, qty: 4 },
        { taker: 5, maker: 1, price: 101, qty: 3 },
      ],
      rest: 0,
    });
    expect(b.snapshot()).toEqual({ bids: [[98, [[4, 2]]]], asks: [[101, [[1, 2]]]], nextOrder: 6, trades: 3 });
    // A sell that sweeps the bid and rests the remainder.
    expect(b.submit({ side: 'sell', price: 97, qty: 5 })).toEqual({ order: 6, trades: [{ taker: 6, maker: 4, price: 98, qty: 2 }], rest: 3 });
    expect(b.top()).toEqual({ bid: null, ask: 97 });
  });

  it('refuses a bad order without changing the book, and the app answers it with an error reply', () => {
    const b = new OrderBook();
    for (const o of [{ side: 'buy', price: 0, qty: 1 }, { side: 'buy', price: 1.5, qty: 1 }, { side: 'sell', price: 10, qty: -1 }, { side: 'hold', price: 10, qty: 1 }]) {
      expect(() => b.submit(o as LimitOrder)).toThrow(RangeError);
    }
    expect(b.snapshot()).toEqual({ bids: [], asks: [], nextOrder: 1, trades: 0 });
    const { reply } = orderMatchingApp.apply(b, Buffer.from('{not json'), { clientId: 'c', msgId: 1 });
    expect(JSON.parse(reply.toString())).toHaveProperty('error');
    expect(b.snapshot().nextOrder).toBe(1);
  });

  it('is deterministic: 20,000 seeded orders into two books give the same replies and books; quantities are conserved', () => {
    const { int } = seededRandom(4);
    const orders: LimitOrder[] = Array.from({ length: 20_000 }, () => ({ side: int(2) ? 'buy' : 'sell', price: 95 + int(11), qty: 1 + int(20) }));
    const a = orderMatchingApp.init();
    const b = orderMatchingApp.init();
    let traded = 0;
    for (const o of orders) {
      const ra = orderMatchingApp.apply(a, encodeOrder(o), { clientId: 'x', msgId: 1 }).reply;
      const rb = orderMatchingApp.apply(b, encodeOrder(o), { clientId: 'y', msgId: 2 }).reply;
      expect(ra.equals(rb)).toBe(true);
      for (const t of (JSON.parse(ra.toString()) as { trades: { qty: number }[] }).trades) traded += t.qty;
    }
    expect(a.snapshot()).toEqual(b.snapshot());
    const s = a.snapshot();
    const resting = [...s.bids, ...s.asks].flatMap(([, os]) => os).reduce((n, [, q]) => n + q, 0);
    // Every lot submitted either rests or was traded (each trade takes a lot from both sides).
    expect(resting + 2 * traded).toBe(orders.reduce((n, o) => n + o.qty, 0));
    expect(s.bids.length === 0 || s.asks.length === 0 || s.bids[0]![0] < s.asks[0]![0]).toBe(true);
  });
});
