// Types for the ES module entry (pollgate-client.mjs): the same as
// pollgate-client.d.ts, with the class as the default export.
export * from "./pollgate-client.js";
export { PollgateClient as default } from "./pollgate-client.js";
