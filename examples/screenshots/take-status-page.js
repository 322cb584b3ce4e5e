// How status-page.png was made: real traffic (pollers arriving and leaving,
// a publish rate that swings) through a real pollgate for SECS seconds, then a
// screenshot of its status page in headless Chromium.
//
//   cargo build --release
//   NODE_PATH=examples/chat/node_modules node examples/screenshots/take-status-page.js 240 status-page.png
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const PUB = "http://127.0.0.1:18080", HOOK = "http://127.0.0.1:18081";
const SECS = Number(process.argv[2] || 20), OUT = process.argv[3] || "status-page.png";
const config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pollgate-shot-")), "pollgate.yaml");
fs.writeFileSync(config, `listen: "127.0.0.1:18080"\nwebhook: { listen: "127.0.0.1:18081" }\nroutes:\n  - { prefix: /api/poll/, poll: {} }\n`);
const bin = path.join(__dirname, "../../target/release/pollgate");
const pg = spawn(bin, ["--config", config], { stdio: "ignore", env: { ...process.env, RUST_LOG: "warn" } });
const names = ["orders", "orders.eu", "chat:lobby", "chat:support", "prices.btc", "prices.eth", "builds", "alerts", "user-1041", "user-2288", "presence", "news"];
let stop = false;
let clients = 0;
async function poller(ch) {
  const id = `c${clients++}`;
  let since = "";
  const until = Date.now() + (40 + Math.random() * 100) * 1000;
  while (!stop && Date.now() < until) {
    try {
      const r = await fetch(`${PUB}/api/poll/${ch}?timeout=20${since}`, { headers: { "x-client-id": id } });
      const j = await r.json();
      if (j.timestamp) since = `&since=${j.timestamp}`;
      if (!r.ok) await new Promise((r) => setTimeout(r, 500));
    } catch { await new Promise((r) => setTimeout(r, 200)); }
  }
}
(async () => {
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  // Pollers arrive over time, so the held-polls line climbs.
  let started = 0;
  const arrive = setInterval(() => {
    if (stop) return;
    for (let i = 0; i < 4; i++) poller(names[(started++) % names.length]);
  }, 1000);
  (async () => {
    while (!stop) {
      const t = (Date.now() - t0) / 1000;
      const rate = 8 + 7 * Math.sin(t / 25) + (Math.floor(t / 40) % 3 === 1 ? 10 : 0);
      const ch = names[Math.floor(Math.random() * names.length * 0.7)];
      await fetch(`${HOOK}/publish/${ch}`, { method: "POST", body: JSON.stringify({ t, price: Math.random() }) }).catch(() => {});
      await new Promise((r) => setTimeout(r, 1000 / Math.max(rate, 1)));
    }
  })();
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 }, deviceScaleFactor: 1 });
  await page.goto(`${HOOK}/`);
  await new Promise((r) => setTimeout(r, SECS * 1000));
  clearInterval(arrive);
  await page.click("th[data-key=buffered]");
  await page.screenshot({ path: OUT, fullPage: true });
  stop = true;
  await browser.close();
  pg.kill("SIGKILL");
  process.exit(0);
})();
