// Follows one event stream with the `eventsource` package (a maintained
// WHATWG EventSource for Node, not written here) and prints every event it
// sees as one JSON line: {"type", "id", "data"}, plus "open" and "error".
// Reconnects are the library's own (with its Last-Event-ID).
//
//   node follow.mjs URL [LAST_EVENT_ID]
import { EventSource } from "eventsource";

const [url, lastId] = process.argv.slice(2);
let first = true;
const es = new EventSource(url, {
  // Only the first connect carries an id given here; the library sets its
  // own Last-Event-ID on every reconnect.
  fetch: (input, init) => {
    const headers = { ...(init && init.headers) };
    if (first && lastId) headers["Last-Event-ID"] = lastId;
    first = false;
    return fetch(input, { ...init, headers });
  },
});
const print = (o) => process.stdout.write(JSON.stringify(o) + "\n");
es.onopen = () => print({ type: "open" });
es.onerror = (e) => print({ type: "error", message: String(e && e.message), state: es.readyState });
for (const type of ["ready", "message", "gap"]) {
  es.addEventListener(type, (e) => print({ type, id: e.lastEventId, data: e.data }));
}
process.stdin.on("end", () => { es.close(); process.exit(0); });
process.stdin.resume();
