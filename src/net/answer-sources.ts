// Where a remote close hears the peers' answers. They come to the dead address on the link it is
// taken over on: once the backup announces it (gratuitous ARP / unsolicited NA), a switch sends
// the peers' frames to the backup's own port. A tracker that followed the dead node's traffic on
// a port mirror (a SPAN copy arriving on an interface of its own, e.g. mir0) never sees them
// there: the mirror copies the dead node's port, which the answers no longer reach.
import type { ParsedSegment } from '../native.js';
import type { SegmentSource } from './close-remote.js';

/**
 * Whether a capture on `captured` (an interface name, or 'any' for every interface of the
 * namespace) receives the frames arriving on `link`. Pure.
 */
export function captureHears(captured: string, link: string): boolean {
  return captured === 'any' || captured === link;
}

/**
 * Which capture hears the answers on `link` (the address's interface; undefined: none named,
 * the caller's tracker is all there is): 'tracker' when the caller's tracker captures there,
 * else 'answers' when the caller's answer capture does, else 'own' (one set up for the close),
 * or 'none' without a link. Interfaces are given as the captures were opened on. Pure.
 */
export function answerCapture(link: string | undefined, tracker: string | undefined, answers: string | undefined): 'tracker' | 'answers' | 'own' | 'none' {
  if (link === undefined) return 'none';
  if (tracker !== undefined && captureHears(tracker, link)) return 'tracker';
  if (answers !== undefined && captureHears(answers, link)) return 'answers';
  return 'own';
}

/**
 * One source delivering every batch of each of `sources`, in the order each arrives. The
 * returned unsubscribe removes the listener from all of them. A segment two sources both see is
 * delivered twice, so merge captures of different links only (closePeers does: see captureHears).
 */
export function mergedSource(...sources: SegmentSource[]): SegmentSource {
  return {
    onSegments(listener: (segments: ParsedSegment[]) => void): () => void {
      const offs = sources.map((s) => s.onSegments(listener));
      return () => {
        for (const off of offs) off();
      };
    },
  };
}
