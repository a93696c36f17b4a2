// The FAN event model and its wire formats.
export * from './service-event.js';
export { FAN_FORMS, parseFan, printFan } from './fan-line.js';
export type { FanForm } from './fan-line.js';
export { IncarnationFilter } from './incarnation-filter.js';
export { instanceFailure, serviceDown, nodeFailure, notRestarting } from './scenarios.js';
export type { Placement } from './scenarios.js';
export { formatLine, NotificationServer } from './notification-server.js';
export type { NotificationServerOptions, WireFormat } from './notification-server.js';
export { subscribe } from './subscribe.js';
export type { AgentConnection, SubscribeOptions, EventFilter } from './subscribe.js';
export { SessionRegistry } from './session-registry.js';
export type { SessionSignature } from './session-registry.js';
