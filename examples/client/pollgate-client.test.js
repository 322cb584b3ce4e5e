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

function once(client, event) {
  return new Promise((resolve) => {
    const handler = (...args) => resolve(args);
    client.on(event, handler);
  });
}

test("receives every message once, in order, across reconnects", async () => {
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

test("the cursor starts where the caller says", async () => {
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

test("errors back off with jitter and report disconnected", async () => {
  // A port with nothing behind it.
  const client = new PollgateClient({ url: "http://127.0.0.1:9/api/poll/", channel: "x", initialDelay: 20, maxDelay: 80 });
  const errors = [];
  await new Promise((resolve) => {
    client.on("error", (e) => {
      errors.push(e);
      if (errors.length === 4) resolve();
    });
    client.start();
  });
  client.stop();
  assert.equal(errors.length, 4);
});

test("a 400 from pollgate is an error event, not a crash", async () => {
  const client = new PollgateClient({ url: `${BASE}/api/poll/`, channel: "bad/name", initialDelay: 10 });
  const [err] = await new Promise((resolve) => {
    client.on("error", (...a) => resolve(a));
    client.start();
  });
  client.stop();
  assert.equal(err.status, 400);
});

test("stop() aborts the held poll at once", async () => {
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
  assert.ok(Date.now() - started < 1000);
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

test("streams where pollgate does, the cursor carried over from the poll", async () => {
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

test("a route that does not stream is polled, quietly", async () => {
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

test("stop() in a message handler leaves no stream or poll behind", async () => {
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
  await publish(channel, { n: 1 });
  assert.deepEqual(got, [0]);
});
