// Runs the client against a real pollgate. Started by `cargo test`
// (tests/js_client.rs), which sets POLLGATE_URL and POLLGATE_WEBHOOK.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const PollgateClient = require("./pollgate-client.js");

const BASE = process.env.POLLGATE_URL;
const HOOK = process.env.POLLGATE_WEBHOOK;
if (!BASE || !HOOK) throw new Error("set POLLGATE_URL and POLLGATE_WEBHOOK");

async function publish(channel, data) {
  const resp = await fetch(`${HOOK}/publish/${channel}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
  assert.equal(resp.status, 200);
  return resp.json();
}

// Every test ends within this, whatever pollgate or the client does.
const T = { timeout: 20000 };

function once(client, event) {
  return new Promise((resolve) => {
    const handler = (...args) => resolve(args);
    client.on(event, handler);
  });
}

test("receives every message once, in order, across reconnects", T, async () => {
  const channel = "js-order-" + Date.now();
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel, timeout: 1 });
  const got = [];
  const done = new Promise((resolve) => {
    client.on("message", (data) => {
      got.push(data.n);
      if (got.length === 30) resolve();
    });
  });
  const connected = once(client, "connected");
  client.start();
  await connected;
  for (let n = 0; n < 30; n++) {
    await publish(channel, { n });
  }
  await done;
  client.stop();
  assert.deepEqual(got, Array.from({ length: 30 }, (_, n) => n));
});

test("the cursor starts where the caller says", T, async () => {
  const channel = "js-since-" + Date.now();
  await publish(channel, { n: "old" });
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel, since: 0, timeout: 1, max: 10 });
  const first = once(client, "message");
  client.start();
  const [data, meta] = await first;
  client.stop();
  assert.equal(data.n, "old");
  assert.equal(typeof meta.timestamp, "number");
});

test("errors back off with full jitter up to the ceiling, and disconnected is said once", T, async () => {
  const client = new PollgateClient({
    url: `${BASE}/api/poll/`, channel: "js-backoff", timeout: 0.1, initialDelay: 20, maxDelay: 80,
  });
  const events = [];
  for (const e of ["connected", "disconnected", "error"]) client.on(e, () => events.push(e));
  const connected = once(client, "connected");
  client.start();
  await connected;
  // The delays the client asks for, with the random draws it is given.
  const draws = [0.5, 1, 0.25, 1, 0, 0.75];
  const asked = [];
  const [random, setTimeout_] = [Math.random, global.setTimeout];
  let draw = 0;
  Math.random = () => draws[draw++ % draws.length];
  // The timers set while a failure is handled are the backoffs.
  let failing = false;
  global.setTimeout = (fn, ms, ...rest) => {
    if (failing) asked.push(ms);
    return setTimeout_(fn, ms, ...rest);
  };
  const failed = client._failed;
  client._failed = function (err) {
    failing = true;
    try {
      return failed.call(this, err);
    } finally {
      failing = false;
    }
  };
  try {
    // From the next poll on, nothing answers.
    client.url = "http://127.0.0.1:9/api/poll/";
    await new Promise((resolve) => {
      client.on("error", () => {
        if (events.filter((e) => e === "error").length === draws.length) resolve();
      });
    });
  } finally {
    Math.random = random;
    global.setTimeout = setTimeout_;
    client.stop();
  }
  // Ceilings 20, 40, 80, then capped at maxDelay; each delay a draw of it.
  const ceilings = [20, 40, 80, 80, 80, 80];
  assert.deepEqual(asked.slice(0, draws.length), ceilings.map((c, i) => draws[i] * c));
  assert.deepEqual(events.slice(0, 3), ["connected", "disconnected", "error"]);
  assert.equal(events.filter((e) => e === "disconnected").length, 1, events.join(" "));
  assert.equal(events.filter((e) => e === "connected").length, 1, events.join(" "));
});

test("a start point from the future is a gap, and the client goes on from pollgate's cursor", T, async () => {
  const channel = "js-future-" + Date.now();
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel, since: 99999999999, timeout: 1 });
  const gap = once(client, "gap");
  client.start();
  const [meta] = await gap;
  assert.ok(meta.timestamp <= Date.now() / 1000 + 1, `a cursor from now on: ${meta.timestamp}`);
  const message = once(client, "message");
  await publish(channel, { n: "after" });
  const [data] = await message;
  client.stop();
  assert.equal(data.n, "after");
});

test("a 400 from pollgate is an error event, not a crash", T, async () => {
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel: "bad/name", initialDelay: 10 });
  const [err] = await new Promise((resolve) => {
    client.on("error", (...a) => resolve(a));
    client.start();
  });
  client.stop();
  assert.equal(err.status, 400);
});

test("stop() aborts the held poll at once", T, async () => {
  // The first poll answers (timeout) after 0.2 s; the client then holds its second.
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel: "js-stop", timeout: 0.2 });
  const connected = once(client, "connected");
  client.start();
  await connected;
  client.timeout = 30;
  const started = Date.now();
  const disconnected = once(client, "disconnected");
  client.stop();
  await disconnected;
  // Not the poll's own end: that is 30 s away.
  assert.ok(Date.now() - started < client.timeout * 1000 / 2);
});

// A maintained EventSource for Node (tests/sse), where the browser would
// have its own.
const { EventSource } = require(process.env.POLLGATE_EVENTSOURCE);

function collect(client, count) {
  const got = [];
  const done = new Promise((resolve) => {
    client.on("message", (data) => {
      got.push(data.n);
      if (got.length === count) resolve(got);
    });
  });
  return done;
}

test("streams where pollgate does, the cursor carried over from the poll", T, async () => {
  const channel = "js-sse-" + Date.now();
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel, timeout: 1, EventSource });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const done = collect(client, 20);
  const connected = once(client, "connected");
  client.start();
  await connected;
  // Published while the client moves from its first poll to the stream.
  for (let n = 0; n < 20; n++) await publish(channel, { n });
  const got = await done;
  assert.equal(client.transport, "sse");
  client.stop();
  assert.deepEqual(got, Array.from({ length: 20 }, (_, n) => n));
  assert.deepEqual(errors, []);
});

test("a route that does not stream is polled, quietly", T, async () => {
  const channel = "js-nosse-" + Date.now();
  const client = new PollgateClient({ url: `${BASE}/plain/poll/`, channel, timeout: 1, EventSource });
  const errors = [];
  const events = [];
  client.on("error", (e) => errors.push(e));
  client.on("disconnected", () => events.push("disconnected"));
  const done = collect(client, 5);
  const connected = once(client, "connected");
  client.start();
  await connected;
  for (let n = 0; n < 5; n++) await publish(channel, { n });
  const got = await done;
  assert.equal(client.transport, "poll");
  client.stop();
  assert.deepEqual(got, [0, 1, 2, 3, 4]);
  assert.deepEqual(errors, [], "a refused stream is not an error");
  assert.deepEqual(events, ["disconnected"], "only stop() disconnects");
});

test("stop() in a message handler leaves no stream or poll behind", T, async () => {
  const channel = "js-stop-in-handler-" + Date.now();
  await publish(channel, { n: 0 });
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel, since: 0, timeout: 1, EventSource });
  const got = [];
  const stopped = new Promise((resolve) => {
    client.on("message", (data) => {
      got.push(data.n);
      client.stop();
      resolve();
    });
  });
  client.start();
  await stopped;
  // What the answer's callback would have started next, it must not have.
  await new Promise((r) => setImmediate(r));
  assert.equal(client._es, null, "no event stream opened after stop()");
  assert.equal(client._timer, null);
  // pollgate holds nothing for the channel once the client's last request
  // is gone (a stream or poll opened after stop() would be held)...
  for (;;) {
    const info = await (await fetch(`${HOOK}/channels/${channel}`)).json();
    if (info.waiters === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  // ...so the next message, seen by another reader, reaches no one else.
  await publish(channel, { n: 1 });
  const seen = await (await fetch(`${BASE}/api/poll/${channel}?since=0&max=10&timeout=0`)).json();
  assert.deepEqual(seen.messages.map((m) => m.n), [0, 1]);
  assert.deepEqual(got, [0]);
});
