// What the browser tests share: the processes they start, the browser, and
// how they look at a page. The tests are started by `cargo test`
// (tests/it/browser.rs), which builds the binaries, picks free ports and
// writes the configs into the environment.
"use strict";
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const net = require("node:net");
const { chromium } = require("playwright-core");

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`set ${name}`);
  return v;
}

// What tests/it/browser.rs hands every chat test: the binaries, pollgate's
// config and the ports.
function chatEnv() {
  return {
    PG_BIN: env("PG_BIN"),
    APP_BIN: env("APP_BIN"),
    PG_CONFIG: env("PG_CONFIG"),
    PG_PORT: Number(env("PG_PORT")),
    HOOK_PORT: Number(env("HOOK_PORT")),
    APP_PORT: Number(env("APP_PORT")),
  };
}

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
  return spawn(bin, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// Posts a chat message to the app (through whatever listens on `port`).
async function postMessage(port, user, text) {
  const resp = await fetch(`http://127.0.0.1:${port}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, text }),
  });
  assert.ok(resp.ok, `the app answered ${resp.status}`);
}

async function sees(page, text) {
  await page.locator("li.message", { hasText: text }).waitFor({ timeout: 15000 });
}

// From now on, what the page's client delivers, before the page's own
// de-duplication: what "exactly once" is checked on.
async function record(page) {
  await page.evaluate(() => {
    window.delivered = [];
    client.on("message", (m) => window.delivered.push(m.text));
  });
}

// Each of `texts` was delivered exactly once to each of `pages`. Checked
// once a message said after them has arrived on every page: delivery is in
// order, so a late duplicate of any of them would have come before it.
async function exactlyOnce(pages, texts, port) {
  const sentinel = `delivered after the rest ${Date.now()}`;
  await postMessage(port, "check", sentinel);
  for (const page of pages) {
    await page.waitForFunction((s) => window.delivered.includes(s), sentinel, { timeout: 15000 });
    const delivered = await page.evaluate(() => window.delivered);
    for (const t of texts) {
      assert.equal(delivered.filter((d) => d === t).length, 1, `${t}: ${delivered.join(" | ")}`);
    }
  }
}

module.exports = { env, chatEnv, waitPort, start, stop, launch, postMessage, sees, record, exactlyOnce };
