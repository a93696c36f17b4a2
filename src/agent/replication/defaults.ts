// Defaults of connection replication (the agent config's `replication` section), in a module of
// their own so the config loader does not load the replication code (and the addon) with them.

/** Per subscribing peer: the cap on replication bytes per second. */
export const DEFAULT_REPLICATION_RATE = 4 << 20;
/** How often the authoritative list of connections (sock_diag) is read, ms. */
export const DEFAULT_SCAN_MS = 1000;
