// A model of one LUN's SPC-3 persistent reservations, seen through several I_T nexuses (one per
// node), for testing the fencing sequence without a disk. It follows SPC-4 §5.13 for what the
// fencing code uses: registrations per nexus, one reservation, PREEMPT AND ABORT removing the
// victim's registrations (and moving the reservation when the victim held it), and the write
// access each reservation type leaves to registered and unregistered nexuses.
import type { ReservationDevice } from '../../src/fence/fencer.js';

export class ReservationConflict extends Error {
  readonly status = 0x18;
  constructor(what: string) {
    super(`RESERVATION CONFLICT: ${what}`);
  }
}

export class ModelLun {
  generation = 0;
  readonly registrations = new Map<string, bigint>();
  reservation: { nexus: string; key: bigint; type: number } | undefined;
  /** Inject a failure: the next call of `op` through `nexus` throws this. */
  failNext: { nexus: string; op: string; error: Error } | undefined;

  nexus(id: string, name = `lun0 via ${id}`): ReservationDevice & { write(): void; read(): void } {
    const lun = this;
    const check = (op: string) => {
      const f = lun.failNext;
      if (f && f.nexus === id && f.op === op) {
        lun.failNext = undefined;
        throw f.error;
      }
    };
    const preemptFrom = (key: bigint, victim: bigint, type: number) => {
      if (lun.registrations.get(id) !== key) throw new ReservationConflict('not registered with that key');
      lun.generation++;
      for (const [n, k] of [...lun.registrations]) if (k === victim && n !== id) lun.registrations.delete(n);
      if (lun.reservation && lun.reservation.key === victim) lun.reservation = { nexus: id, key, type };
    };
    return {
      name,
      async readKeys() {
        check('readKeys');
        return { generation: lun.generation, keys: [...lun.registrations.values()] };
      },
      async readReservation() {
        check('readReservation');
        const r = lun.reservation;
        return { generation: lun.generation, ...(r ? { reservation: { key: r.type >= 7 ? 0n : r.key, type: r.type } } : {}) };
      },
      async registerAndIgnore(key) {
        check('registerAndIgnore');
        lun.generation++;
        if (key === 0n) {
          lun.registrations.delete(id);
          if (lun.reservation?.nexus === id && lun.reservation.type < 7) lun.reservation = undefined;
          if (lun.reservation && lun.reservation.type >= 7 && lun.registrations.size === 0) lun.reservation = undefined;
        } else lun.registrations.set(id, key);
      },
      async reserve(key, type) {
        check('reserve');
        if (lun.registrations.get(id) !== key) throw new ReservationConflict('not registered with that key');
        const r = lun.reservation;
        if (r && !(r.nexus === id && r.type === type) && !(r.type >= 7 && r.type === type)) throw new ReservationConflict('reserved by another');
        lun.reservation ??= { nexus: id, key, type };
      },
      async preempt(key, victim, type) {
        check('preempt');
        preemptFrom(key, victim, type);
      },
      // The model has no queued commands to abort: the same as PREEMPT.
      async preemptAndAbort(key, victim, type) {
        check('preemptAndAbort');
        preemptFrom(key, victim, type);
      },
      write() {
        const r = lun.reservation;
        if (!r) return;
        const registered = lun.registrations.has(id);
        const allowed = r.nexus === id || ((r.type === 5 || r.type === 7) && registered) || ((r.type === 6 || r.type === 8) && registered);
        if (!allowed) throw new ReservationConflict('write');
      },
      read() {
        const r = lun.reservation;
        if (!r || r.nexus === id) return;
        if ((r.type === 3 || r.type === 6 || r.type === 8) && !(r.type !== 3 && lun.registrations.has(id))) throw new ReservationConflict('read');
      },
    };
  }
}
