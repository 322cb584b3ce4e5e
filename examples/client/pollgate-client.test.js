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
