// Runs inside the test guest: the project's addon over SG_IO on both tcm_loop nexuses.
import { identify } from '../../../src/scsi/inquiry.js';
import { ScsiDevice, DeviceTransport } from '../../../src/scsi/transport.js';

for (const path of ['/dev/sg0', '/dev/sg1', '/dev/sda']) {
  const t = new DeviceTransport(path);
  try {
    const id = await identify(new ScsiDevice(t));
    console.log(`TKO ${JSON.stringify({ check: 'identify', path, vendor: id.vendor, product: id.product, naa: id.designators.find((d) => d.type === 3)?.value })}`);
  } finally {
    t.close();
  }
}
