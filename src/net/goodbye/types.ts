// A protocol goodbye: the bytes a dead server would have sent before closing, and a framer that
// follows both byte streams so the goodbye only goes where the client expects a new message.

/** Follows one connection's two byte streams in order; says whether a goodbye may be sent now. */
export interface BoundaryTracker {
  /** Bytes the server sent, in stream order, without gaps. */
  serverData(chunk: Uint8Array): void;
  /** Bytes the client sent, in stream order, without gaps. */
  clientData(chunk: Uint8Array): void;
  /** True when the server stream sits between two messages and the protocol is one we can follow. */
  atBoundary(): boolean;
  /** Why atBoundary() is false, for the report. */
  reason(): string;
}

export interface GoodbyePlugin {
  /** The name used in `--method goodbye:<name>`. */
  readonly name: string;
  /** What the client sees: the protocol's own way of saying "this server is going away". */
  message(): Buffer;
  createTracker(): BoundaryTracker;
}
