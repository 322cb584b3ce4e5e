// The JavaScript client's transports in a real browser (Debian's chromium,
// driven by playwright-core): Server-Sent Events straight to pollgate, and
// the fall back to long polling behind nginx with `proxy_buffering on` and
// gzip for event streams in the poll location (the deployment recipe,
// changed as a careless proxy would be: the gzip filter holds the stream).
// Started by `cargo test` (tests/it/browser.rs), which also starts nginx.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { env, chatEnv, waitPort, start, stop, launch, postMessage, sees, record, exactlyOnce } = require("./harness.js");

const { PG_BIN, APP_BIN, PG_CONFIG, PG_PORT, HOOK_PORT, APP_PORT } = chatEnv();
const NGINX_PORT = Number(env("NGINX_PORT"));

async function metric(series) {
  const text = await (await fetch(`http://127.0.0.1:${HOOK_PORT}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

async function open(browser, url) {
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await record(page);
  return page;
}

let app, pg, browser;

test.before(async () => {
  app = start(APP_BIN, ["--listen", `127.0.0.1:${APP_PORT}`, "--webhook", `http://127.0.0.1:${HOOK_PORT}`]);
  pg = start(PG_BIN, ["--config", PG_CONFIG]);
  browser = await launch();
  await waitPort(APP_PORT);
  await waitPort(PG_PORT);
  await waitPort(NGINX_PORT);
});

test.after(async () => {
  if (browser) await browser.close();
  await stop(pg);
  await stop(app);
});

test("the client streams events where nothing buffers them", { timeout: 120000 }, async () => {
  const page = await open(browser, `http://127.0.0.1:${PG_PORT}/`);
  await page.locator("#status.connected").waitFor({ timeout: 15000 });
  await page.waitForFunction(() => client.transport === "sse", null, { timeout: 15000 });
  assert.equal(await metric('pollgate_sse_streams{route="/api/poll/"}'), 1);
  await postMessage(PG_PORT, "ann", "streamed one");
  await postMessage(PG_PORT, "ann", "streamed two");
  await sees(page, "streamed two");
  await exactlyOnce([page], ["streamed one", "streamed two"], PG_PORT);
  const events = await metric("pollgate_sse_events_total");
  assert.ok(events >= 2, `${events} events sent`);
  await page.close();
});

test("behind a proxy that buffers the stream, the client long-polls and loses nothing", { timeout: 120000 }, async () => {
  const page = await open(browser, `http://127.0.0.1:${NGINX_PORT}/?heartbeatMs=1500`);
  // Said while the stream is still being held back by nginx.
  await postMessage(NGINX_PORT, "ben", "said while buffered");
  await page.waitForFunction(() => client.transport === "poll" && client._buffered, null, { timeout: 15000 });
  await page.locator("#status.connected").waitFor({ timeout: 15000 });
  await sees(page, "said while buffered");
  await postMessage(NGINX_PORT, "ben", "said while polling");
  await sees(page, "said while polling");
  await exactlyOnce([page], ["said while buffered", "said while polling"], NGINX_PORT);
  assert.equal(await page.evaluate(() => client.transport), "poll", "it stays on long polling");
  await page.close();
});
