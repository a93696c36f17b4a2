// A price-time-priority matching engine for one instrument (seed 004's example application: a
// trading system's order processing, [0042] "a request to buy or sell a particular item").
// Limit orders in, trades out. Deterministic and pure: the same orders in the same order give
// the same trades, order IDs and book, which is what lets the reliable layer rebuild it from the
// log after a takeover and the tests compare it with a single-server replay.
//
// Rules: prices and quantities are positive integers (ticks, lots). An incoming order matches
// the best opposite price first (the lowest ask for a buy, the highest bid for a sell) while
// it crosses (buy price >= ask, sell price <= bid); within a price, the oldest resting order
// first. Each fill trades at the resting order's price. What is left rests in the book.
import type { ReliableApp } from '../../../src/reliable/reliable-state.js';

export type Side = 'buy' | 'sell';

export interface LimitOrder {
  side: Side;
  /** Ticks, a positive integer. */
  price: number;
  /** Lots, a positive integer. */
  qty: number;
}

export interface Trade {
  /** The incoming order's ID and the resting one's. */
  taker: number;
  maker: number;
  /** The resting order's price, ticks. */
  price: number;
  qty: number;
}

export interface Submitted {
  /** The ID given to the order (consecutive from 1, in submission order). */
  order: number;
  trades: Trade[];
  /** Lots left resting in the book (0: filled). */
  rest: number;
}

interface Resting {
  id: number;
  qty: number;
}

interface Level {
  price: number;
  orders: Resting[];
  head: number;
}

/** The book: bids (highest first) and asks (lowest first), each a sorted array of price levels. */
export class OrderBook {
  private readonly bids: Level[] = [];
  private readonly asks: Level[] = [];
  private nextId = 1;
  tradeCount = 0;

  /** Submits a limit order. Throws RangeError on a price or quantity that is not a positive safe integer (nothing changes). */
  submit(o: LimitOrder): Submitted {
    if (o.side !== 'buy' && o.side !== 'sell') throw new RangeError(`side ${String(o.side)}`);
    if (!Number.isSafeInteger(o.price) || o.price <= 0) throw new RangeError(`price ${o.price} must be a positive integer`);
    if (!Number.isSafeInteger(o.qty) || o.qty <= 0) throw new RangeError(`quantity ${o.qty} must be a positive integer`);
    const id = this.nextId++;
    const opposite = o.side === 'buy' ? this.asks : this.bids;
    const crosses = (p: number) => (o.side === 'buy' ? o.price >= p : o.price <= p);
    const trades: Trade[] = [];
    let left = o.qty;
    while (left > 0 && opposite.length > 0 && crosses(opposite[0]!.price)) {
      const level = opposite[0]!;
      const maker = level.orders[level.head]!;
      const qty = Math.min(left, maker.qty);
      trades.push({ taker: id, maker: maker.id, price: level.price, qty });
      left -= qty;
      maker.qty -= qty;
      if (maker.qty === 0) level.head++;
      if (level.head === level.orders.length) opposite.shift();
    }
    this.tradeCount += trades.length;
    if (left > 0) this.rest(o.side, o.price, { id, qty: left });
    return { order: id, trades, rest: left };
  }

  private rest(side: Side, price: number, r: Resting): void {
    const levels = side === 'buy' ? this.bids : this.asks;
    // Binary search for the level (bids descending, asks ascending).
    const before = (a: number, b: number) => (side === 'buy' ? a > b : a < b);
    let lo = 0;
    let hi = levels.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(levels[mid]!.price, price)) lo = mid + 1;
      else hi = mid;
    }
    const at = levels[lo];
    if (at && at.price === price) at.orders.push(r);
    else levels.splice(lo, 0, { price, orders: [r], head: 0 });
  }

  /** The best bid and ask prices, or null. */
  top(): { bid: number | null; ask: number | null } {
    return { bid: this.bids[0]?.price ?? null, ask: this.asks[0]?.price ?? null };
  }

  /** The whole book as plain data, for comparison: levels best first, orders oldest first as [id, qty]. */
  snapshot(): { bids: Array<[number, Array<[number, number]>]>; asks: Array<[number, Array<[number, number]>]>; nextOrder: number; trades: number } {
    const side = (levels: Level[]) => levels.map((l): [number, Array<[number, number]>] => [l.price, l.orders.slice(l.head).map((r): [number, number] => [r.id, r.qty])]);
    return { bids: side(this.bids), asks: side(this.asks), nextOrder: this.nextId, trades: this.tradeCount };
  }
}

/** A request's bytes: the order as JSON. */
export function encodeOrder(o: LimitOrder): Buffer {
  return Buffer.from(JSON.stringify({ side: o.side, price: o.price, qty: o.qty }));
}

/**
 * The engine as a reliable-server application: a request is an order as JSON; the reply is
 * the Submitted as JSON, or {"error": "..."} for a request that is not a valid order (applied
 * as nothing, deterministically: the same bytes always give the same error).
 */
export const orderMatchingApp: ReliableApp<OrderBook> = {
  init: () => new OrderBook(),
  apply(book, request) {
    let reply: unknown;
    try {
      const o = JSON.parse(request.toString('utf8')) as LimitOrder;
      reply = book.submit({ side: o.side, price: o.price, qty: o.qty });
    } catch (err) {
      reply = { error: (err as Error).message };
    }
    return { state: book, reply: Buffer.from(JSON.stringify(reply)) };
  },
};
