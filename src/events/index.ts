// The FAN event model and its wire formats.
export * from './service-event.js';
export { parseFan, printFan } from './fan-line.js';
export { IncarnationFilter } from './incarnation-filter.js';
