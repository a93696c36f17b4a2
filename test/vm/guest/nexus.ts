// Which I_T nexus an sg node is, inside the test guest: the target port's name from VPD 0x83
// (tells tcm_loop's naa. ports from iSCSI iqn. ones) and, for iSCSI, the session's initiator.
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import type { Designator } from '../../../src/scsi/inquiry.js';

/** The SCSI target port name (association 2, SCSI name string), or ''. */
export const targetName = (designators: Designator[]) => designators.find((d) => d.association === 2 && d.type === 8)?.value ?? '';

/** The iSCSI initiator name of the session behind /dev/sgN, or '' for other transports. */
export function initiatorOf(sgPath: string): string {
  const session = /session\d+/.exec(realpathSync(`/sys/class/scsi_generic/${sgPath.slice(5)}/device`))?.[0];
  return session ? readFileSync(`/sys/class/iscsi_session/${session}/initiatorname`, 'utf8').trim() : '';
}

/** Every /dev/sgN of the guest, in name order. */
export const sgNodes = () => readdirSync('/dev').filter((d) => /^sg\d+$/.test(d)).map((d) => `/dev/${d}`).sort();

/** The iSCSI ones among `paths`, in initiator-name order (…:a before …:b). */
export const iscsiByInitiator = (paths: string[]) => paths.filter((p) => initiatorOf(p) !== '').sort((x, y) => initiatorOf(x).localeCompare(initiatorOf(y)));
