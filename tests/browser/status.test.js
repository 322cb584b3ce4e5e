// The webhook listener's status page in a real browser: it updates by
// itself (long polling /status) when messages are published, its charts draw
// what pollgate sampled (held polls, publish and delivery rates, latency),
// and its channel table sorts and filters.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { chromium } = require("playwright-core");

const HOOK = process.env.POLLGATE_WEBHOOK;
const PUBLIC = process.env.POLLGATE_PUBLIC;
const SHOTS = process.env.SCREENSHOT_DIR;

async function publish(channel, n) {
  const items = Array.from({ length: n }, (_, i) => ({ channel, data: { i } }));
  const r = await fetch(`${HOOK}/publish`, { method: "POST", body: JSON.stringify({ items }) });
  assert.equal(r.status, 200, await r.text());
}

// Pixels of the publishes line drawn above the chart's zero line: what the
// chart shows, read from the canvas itself.
function linePixels(page) {
  return page.evaluate(() => {
    const c = document.getElementById("chart-publishes");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const dpr = c.width / c.clientWidth;
    const zero = Math.floor((c.clientHeight - 18) * dpr) - 3; // the plot's bottom edge
    let n = 0;
    for (let y = 0; y < zero; y++) {
      for (let x = 0; x < c.width; x++) {
        const i = (y * c.width + x) * 4;
        // The line's colour, #7c3aed (anti-aliased edges aside).
        if (Math.abs(d[i] - 124) < 30 && Math.abs(d[i + 1] - 58) < 30 && Math.abs(d[i + 2] - 237) < 30) n++;
      }
    }
    return n;
  });
}

// The rows of the channel table, as the page shows them.
function rows(page) {
  return page.locator("#rows tr").evaluateAll((trs) =>
    trs.map((tr) => Array.from(tr.cells, (td) => td.textContent)));
}

test("the status page charts what pollgate sampled and its table sorts and filters", { timeout: 120000 }, async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const polls = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
    await page.goto(`${HOOK}/`);
    await page.locator("#live:not(.off)").waitFor({ timeout: 10000 });
    assert.equal(await page.locator("#published").textContent(), "0");
    assert.match(await page.locator("#broker").textContent(), /memory · up/);
    // Quiet so far: the first samples are drawn, all zeros, and no line
    // rises above the zero line.
    await page.waitForFunction(() => window.pollgateCharts.samples.length > 0, null, { timeout: 15000 });
    await page.locator("#chart-publishes[data-max]").waitFor({ state: "attached", timeout: 10000 });
    const quiet = await page.evaluate(() => window.pollgateCharts.samples);
    assert.ok(quiet.every((s) => s.publishes === 0 && s.held === 0), JSON.stringify(quiet));
    assert.equal(await linePixels(page), 0, "nothing drawn above zero yet");
    const before = await page.locator("#charts").screenshot();

    // Three held polls, then a burst of publishes that releases them.
    for (let i = 0; i < 3; i++) {
      polls.push(fetch(`${PUBLIC}/api/poll/news?timeout=30`).then((r) => r.json()));
    }
    await page.waitForFunction(() => window.pollgateCharts.samples.some((s) => s.held === 3),
      null, { timeout: 15000 });
    await publish("news", 40);
    const answers = await Promise.all(polls);
    assert.ok(answers.every((a) => a.status === "message"), JSON.stringify(answers));
    await publish("sports", 5);
    await publish("weather", 12);

    // No reload: the figures come by the page's long poll, the charts by
    // the samples pollgate takes every interval.
    await page.locator("#published", { hasText: /^57$/ }).waitFor({ timeout: 10000 });
    await page.waitForFunction(() => {
      const s = window.pollgateCharts.samples;
      return s.length && s[s.length - 1].published === 57 && s.some((x) => x.p50_ms !== null);
    }, null, { timeout: 15000 });

    // What the page draws is what pollgate recorded: the same samples.
    const drawn = await page.evaluate(() => window.pollgateCharts.samples);
    const served = (await (await fetch(`${HOOK}/status/history`)).json()).samples;
    for (const s of drawn) {
      assert.deepEqual(s, served.find((x) => x.seq === s.seq), `sample ${s.seq}`);
    }
    // The burst shows as a rate: no sample rate is above what its interval
    // could hold, and together they count every publish and delivery.
    assert.ok(drawn.some((s) => s.publishes > 0) && drawn.some((s) => s.deliveries > 0));
    const last = drawn[drawn.length - 1];
    assert.equal(last.delivered, 3, "three polls, one message each");
    for (let i = 1; i < drawn.length; i++) {
      const secs = (drawn[i].at - drawn[i - 1].at) / 1000;
      const counted = drawn[i].publishes * secs;
      assert.ok(Math.abs(counted - (drawn[i].published - drawn[i - 1].published)) < 0.5,
        `sample ${drawn[i].seq}: ${drawn[i].publishes}/s over ${secs} s`);
    }
    const p99 = drawn.find((s) => s.p99_ms !== null).p99_ms;
    assert.ok(p99 > 0 && p99 < 16000, `p99 ${p99} ms`);
    assert.ok(Number(await page.locator("#chart-publishes").getAttribute("data-max")) >= 10);

    const after = await page.locator("#charts").screenshot();
    assert.notDeepEqual(before, after, "the charts changed");
    assert.ok(await linePixels(page) > 20, "the burst is drawn as a rise of the publishes line");

    // The table: busiest first, sortable by any column, filterable by name.
    await page.locator("#rows tr", { hasText: "weather" }).waitFor({ timeout: 10000 });
    // No waiters anywhere now: ties go by name.
    assert.deepEqual((await rows(page)).map((r) => r[0]), ["news", "sports", "weather"]);
    await page.click("th[data-key=buffered]");
    assert.deepEqual(await rows(page), [["news", "0", "40"], ["weather", "0", "12"], ["sports", "0", "5"]]);
    await page.click("th[data-key=buffered]");
    assert.deepEqual(await rows(page), [["sports", "0", "5"], ["weather", "0", "12"], ["news", "0", "40"]]);
    assert.equal(await page.locator("th[data-key=buffered]").getAttribute("aria-sort"), "ascending");
    await page.click("th[data-key=channel]");
    assert.deepEqual((await rows(page)).map((r) => r[0]), ["news", "sports", "weather"]);
    await page.fill("#filter", "EAT");
    assert.deepEqual(await rows(page), [["weather", "0", "12"]]);
    // pollgate's own answer for the filter (every match listed: no note).
    await page.locator("#shown", { hasText: /^1 of 3 channels$/ }).waitFor({ timeout: 10000 });
    assert.deepEqual(await rows(page), [["weather", "0", "12"]]);
    // Cleared, the page asks pollgate again for every channel.
    await page.fill("#filter", "");
    await page.locator("#rows tr").nth(2).waitFor({ timeout: 10000 });
    assert.equal((await rows(page)).length, 3);

    if (SHOTS) await page.screenshot({ path: `${SHOTS}/status.png`, fullPage: true });
  } finally {
    await browser.close();
  }
});
