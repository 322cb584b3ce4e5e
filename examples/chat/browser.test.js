// The chat example in a real browser (Debian's chromium, driven by
// playwright-core): two pages talk through pollgate, and survive a pollgate
// restart. Started by `cargo test` (tests/browser.rs), which builds the
// binaries, picks free ports and writes the config.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const net = require("node:net");
const { chromium } = require("playwright-core");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`set ${name}`);
  return v;
};
const PG_BIN = env("PG_BIN");
const APP_BIN = env("APP_BIN");
const PG_CONFIG = env("PG_CONFIG");
const PG_PORT = Number(env("PG_PORT"));
const HOOK_PORT = Number(env("HOOK_PORT"));
const APP_PORT = Number(env("APP_PORT"));
const SHOTS = process.env.SCREENSHOT_DIR;

function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

async function waitPort(port) {
  for (let i = 0; i < 300; i++) {
    if (await listening(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function start(bin, args) {
  const child = spawn(bin, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  return child;
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

async function say(page, user, text) {
  await page.fill("#user", user);
  await page.fill("#text", text);
  await page.click("button");
}

async function sees(page, text) {
  await page.locator("li.message", { hasText: text }).waitFor({ timeout: 15000 });
}

test("two pages chat through pollgate, across a pollgate restart", async () => {
  const app = start(APP_BIN, ["--listen", `127.0.0.1:${APP_PORT}`, "--webhook", `http://127.0.0.1:${HOOK_PORT}`]);
  let pg = start(PG_BIN, ["--config", PG_CONFIG]);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    await waitPort(APP_PORT);
    await waitPort(PG_PORT);
    const a = await browser.newPage();
    const b = await browser.newPage();
    for (const p of [a, b]) {
      p.on("console", (m) => console.error(`page: ${m.text()}`));
      p.on("pageerror", (e) => console.error(`page error: ${e.message}`));
      await p.goto(`http://127.0.0.1:${PG_PORT}/`);
      await p.locator("#status.connected").waitFor({ timeout: 15000 });
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
    await Promise.all([a, b].map((p) => p.locator("#status.connected").waitFor({ timeout: 20000 })));

    await say(b, "bob", "after the restart");
    await sees(a, "after the restart");
    await say(a, "alice", "still here");
    await sees(b, "still here");
    // Every page shows every message exactly once.
    for (const p of [a, b]) {
      const texts = await p.locator("li.message").allTextContents();
      assert.equal(texts.length, 4, texts.join(" | "));
      assert.equal(new Set(texts).size, 4);
    }
    if (SHOTS) await b.screenshot({ path: `${SHOTS}/chat.png` });
  } finally {
    await browser.close();
    await stop(pg);
    await stop(app);
  }
});
