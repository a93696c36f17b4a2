// Which addresses found on an interface can serve a takeover (pure: entries as RTM_GETADDR gives them).
import { describe, expect, it } from 'vitest';
import { entryFor, IFA_F, unusableReason } from '../../src/net/address-state.js';
import type { AddressEntry } from '../../src/native.js';

const usable: AddressEntry = { prefixLength: 64, flags: 0x02 /* NODAD */ | 0x80 /* PERMANENT */, scope: 0, preferredLifetime: -1, validLifetime: -1 };

describe('unusableReason', () => {
  it('a permanent address of the takeover prefix serves', () => {
    expect(unusableReason(usable, 64)).toBeUndefined();
    expect(unusableReason({ ...usable, flags: 0x01 /* SECONDARY */ }, 64)).toBeUndefined();
  });

  it('names each state that keeps an address from serving', () => {
    expect(unusableReason({ ...usable, flags: IFA_F.DADFAILED | IFA_F.TENTATIVE }, 64)).toBe('dadfailed tentative');
    expect(unusableReason({ ...usable, flags: IFA_F.TENTATIVE }, 64)).toBe('tentative');
    expect(unusableReason({ ...usable, flags: IFA_F.DEPRECATED, preferredLifetime: 0, validLifetime: 30 }, 64)).toBe('deprecated, expires in 30 s');
    expect(unusableReason({ ...usable, preferredLifetime: 0 }, 64)).toBe('deprecated');
    expect(unusableReason({ ...usable, validLifetime: 0 }, 64)).toBe('expires in 0 s');
    expect(unusableReason({ ...usable, prefixLength: 80 }, 64)).toBe('prefix /80, not /64');
    expect(unusableReason({ ...usable, flags: IFA_F.TENTATIVE, prefixLength: 128 }, 64)).toBe('tentative, prefix /128, not /64');
  });
});

describe('entryFor', () => {
  it('takes the entry of the takeover prefix, else the first, else none', () => {
    const a = { ...usable, prefixLength: 32 };
    const b = { ...usable, prefixLength: 24 };
    expect(entryFor([a, b], 24)).toBe(b);
    expect(entryFor([a, b], 16)).toBe(a);
    expect(entryFor([], 24)).toBeUndefined();
  });
});
