// The chat example in a real browser (Debian's chromium, driven by
// playwright-core): two pages talk through pollgate, and survive a pollgate
// restart. Started by `cargo test` (tests/it/browser.rs), which builds the
// binaries, picks free ports and writes the config.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { chatEnv, waitPort, start, stop, launch, postMessage: post, sees, record, exactlyOnce } = require("./harness.js");

const { PG_BIN, APP_BIN, PG_CONFIG, PG_PORT, HOOK_PORT, APP_PORT } = chatEnv();
const SHOTS = process.env.SCREENSHOT_DIR;

async function say(page, user, text) {
  await page.fill("#user", user);
  await page.fill("#text", text);
  await page.click("button");
}

test("two pages chat through pollgate, across a pollgate restart", { timeout: 120000 }, async () => {
  const app = start(APP_BIN, ["--listen", `127.0.0.1:${APP_PORT}`, "--webhook", `http://127.0.0.1:${HOOK_PORT}`]);
  let pg = start(PG_BIN, ["--config", PG_CONFIG]);
  const browser = await launch();
  try {
    await waitPort(APP_PORT);
    await waitPort(PG_PORT);
    const a = await browser.newPage();
    const b = await browser.newPage();
    for (const p of [a, b]) {
      p.on("console", (m) => console.error(`page: ${m.text()}`));
      p.on("pageerror", (e) => console.error(`page error: ${e.message}`));
      await p.goto(`http://127.0.0.1:${PG_PORT}/`);
      await record(p);
      await p.locator("#status.connected").waitFor({ timeout: 15000 });
      await p.waitForFunction(() => client.transport === "sse", null, { timeout: 15000 });
    }

    await say(a, "alice", "hello from A");
    await sees(b, "hello from A");
    await say(b, "bob", "hi A, this is B");
    await sees(a, "hi A, this is B");

    // Restart pollgate: both pages notice, reconnect, and miss nothing after.
    assert.equal(await stop(pg), 0, "pollgate exits 0 on SIGTERM");
    await Promise.all([a, b].map((p) => p.locator("#status:not(.connected)").waitFor({ timeout: 15000 })));
    pg = start(PG_BIN, ["--config", PG_CONFIG]);
    await waitPort(PG_PORT);
    // Said before the pages are back (the browser waits pollgate's `retry:`
    // before reconnecting): they get it from the buffer, resuming with
    // their Last-Event-ID.
    await post(PG_PORT, "carol", "while you were away");
    await Promise.all([a, b].map((p) => p.locator("#status.connected").waitFor({ timeout: 20000 })));
    await sees(a, "while you were away");
    await sees(b, "while you were away");

    await say(b, "bob", "after the restart");
    await sees(a, "after the restart");
    await say(a, "alice", "still here");
    // Each page shows its own message when the stream brings it back, which
    // may be after the other page has it: wait for both.
    await sees(b, "still here");
    await sees(a, "still here");
    // Every page shows every message exactly once, and its client delivered
    // each exactly once (before the page's own de-duplication), still streaming.
    for (const p of [a, b]) {
      const texts = await p.locator("li.message").allTextContents();
      assert.equal(texts.length, 5, texts.join(" | "));
      assert.equal(new Set(texts).size, 5);
    }
    await exactlyOnce([a, b], ["hello from A", "hi A, this is B", "while you were away", "after the restart", "still here"], PG_PORT);
    for (const p of [a, b]) {
      assert.equal(await p.evaluate(() => client.transport), "sse");
    }
    if (SHOTS) await b.screenshot({ path: `${SHOTS}/chat.png` });
  } finally {
    await browser.close();
    await stop(pg);
    await stop(app);
  }
});
