// The webhook listener's status page in a real browser: it must update by
// itself (long polling /status) when messages are published.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const { chromium } = require("playwright-core");

const HOOK = process.env.POLLGATE_WEBHOOK;
const SHOTS = process.env.SCREENSHOT_DIR;

test("the status page shows publishes as they happen", async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`${HOOK}/`);
    await page.locator("#live:not(.off)").waitFor({ timeout: 10000 });
    assert.equal(await page.locator("#published").textContent(), "0");
    const before = await page.screenshot({ path: `${SHOTS}/status-before.png` });

    for (let n = 0; n < 3; n++) {
      const r = await fetch(`${HOOK}/publish/news`, { method: "POST", body: JSON.stringify({ n }) });
      assert.equal(r.status, 200);
    }
    // No reload: the page's own long poll brings the new numbers.
    await page.locator("#published", { hasText: /^3$/ }).waitFor({ timeout: 10000 });
    await page.locator("#rows tr", { hasText: "news" }).waitFor({ timeout: 10000 });
    const row = await page.locator("#rows tr", { hasText: "news" }).locator("td").allTextContents();
    assert.deepEqual(row, ["news", "0", "3"]);
    const after = await page.screenshot({ path: `${SHOTS}/status-after.png` });
    assert.notDeepEqual(before, after, "the picture changed");
    assert.ok(fs.existsSync(`${SHOTS}/status-after.png`));
  } finally {
    await browser.close();
  }
});
