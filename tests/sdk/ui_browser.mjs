// Drives the gateway's page at /ui in Chromium (Debian's, through playwright-core).
//
// Usage: node ui_browser.mjs PLAYWRIGHT_DIR CHROMIUM BASE_URL ADMIN_KEY CLIENT_KEY SCREENSHOT
//
// Signs in (a wrong key first), sees the overview's plots drawn, finds a generation and opens
// it, creates a key and uses it, disables it and sees the next request refused, signs in with
// a client key that sees only its own activity, checks that the Content-Security-Policy keeps
// an inline script from running, and that nothing was logged to the console as an error (but
// the browser's own note of the one 401 the wrong key gets). Exits non-zero with a message on
// the first failed check; prints "all checks passed".
import { createRequire } from "node:module";
import path from "node:path";

const [pwDir, chromiumPath, base, adminKey, clientKey, screenshot] = process.argv.slice(2);
const require = createRequire(path.join(pwDir, "node_modules") + "/");
const { chromium } = require("playwright-core");

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  let allowed401 = 0;
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (allowed401 > 0 && /status of 401/.test(m.text())) {
      allowed401 -= 1;
      return;
    }
    errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));

  // The page and its policy.
  const res = await page.goto(`${base}/ui`);
  check(res.status() === 200, `GET /ui: ${res.status()}`);
  const csp = res.headers()["content-security-policy"] || "";
  check(csp.includes("script-src 'self'") && !csp.includes("unsafe-inline"), `CSP: ${csp}`);

  // A wrong key is told so.
  allowed401 = 1;
  await page.fill("#key", "sk-not-a-key");
  await page.press("#key", "Enter");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent !== "");
  check((await page.textContent("#signin-error")).includes("refused"), "a wrong key is refused");

  // The admin key: the overview's plots draw.
  await page.fill("#key", adminKey);
  await page.click("#signin-form button");
  await page.waitForSelector("#overview:not([hidden])");
  await page.waitForSelector("#chart-requests canvas");
  await page.waitForFunction(() => document.querySelector("#overview-totals").textContent.includes("requests"));
  const totals = await page.textContent("#overview-totals");
  check(/^[1-9]\d* requests, \$/.test(totals), `overview totals: ${totals}`);
  check((await page.$$(".charts canvas")).length >= 4, "four plots");
  check(!(await page.isHidden('nav button[data-view="keys"]')), "the admin sees the keys");
  await page.selectOption("#split", "model");
  await page.waitForFunction(() => document.querySelectorAll("#chart-requests .u-legend .u-series").length > 1);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  // Generations: find one and open it, with the keyboard.
  await page.click('nav button[data-view="generations"]');
  await page.waitForSelector("#generation-table tbody tr");
  const rows = await page.$$("#generation-table tbody tr");
  check(rows.length >= 3, `generations listed: ${rows.length}`);
  await page.selectOption("#filter-status", "error");
  await page.click("#generation-filters button");
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll("#generation-table tbody tr");
    return rows.length > 0 && [...rows].every((r) => r.children[3].textContent === "error");
  });
  await page.focus("#generation-table tbody tr");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#generation-detail:not([hidden])");
  const detail = await page.textContent("#generation-detail");
  check(detail.includes("Attempts") && /fake\s*fail-500\s*(failed|skipped)/.test(detail), `detail: ${detail}`);

  // Keys: create one, use it, disable it, see it refused.
  await page.click('nav button[data-view="keys"]');
  await page.waitForSelector("#key-table tbody tr");
  await page.fill("#new-key-name", "made-in-the-browser");
  await page.fill("#new-key-limit", "5");
  await page.click("#create-key button");
  await page.waitForSelector("#created-key:not([hidden])");
  const made = (await page.textContent("#created-key-value")).trim();
  check(made.startsWith("sk-mg-"), `created key: ${made}`);
  const chat = (key) =>
    fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "vendor/fake-model", messages: [{ role: "user", content: "hi" }] }),
    });
  check((await chat(made)).status === 200, "the new key works");
  const row = page.locator("#key-table tbody tr", { hasText: "made-in-the-browser" });
  page.once("dialog", (d) => d.accept("600, 10000, 50000"));
  await row.locator("button", { hasText: "Change rate limits" }).click();
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#key-table tbody tr")].some(
      (r) => r.textContent.includes("600 requests a minute, 10000 a day, 50K tokens a minute")));
  await row.locator("button", { hasText: "Disable" }).click();
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#key-table tbody tr")].some(
      (r) => r.textContent.includes("made-in-the-browser") && r.textContent.includes("disabled")));
  check((await chat(made)).status === 401, "a disabled key is refused");
  page.once("dialog", (d) => d.accept());
  await row.locator("button", { hasText: "Delete" }).click();
  await page.waitForFunction(() =>
    ![...document.querySelectorAll("#key-table tbody tr")].some((r) => r.textContent.includes("made-in-the-browser")));

  // Models: the catalog with health and prices.
  await page.click('nav button[data-view="models"]');
  await page.waitForSelector("#model-table tbody tr");
  check((await page.textContent("#model-table")).includes("vendor/fake-model"), "models listed");

  // The policy holds: an inline script does not run.
  await page.evaluate(() => {
    const s = document.createElement("script");
    s.textContent = "window.__inline = true";
    document.body.append(s);
  });
  check(!(await page.evaluate(() => window.__inline === true)), "an inline script ran");
  // (Its refusal is the policy's expected console report.)
  const csp_reports = errors.filter((e) => e.includes("Content Security Policy"));
  check(csp_reports.length === 1, `one CSP report for the inline script: ${JSON.stringify(errors)}`);
  errors.splice(errors.indexOf(csp_reports[0]), 1);

  // A client key: its own activity only, and no keys.
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])");
  await page.fill("#key", clientKey);
  await page.click("#signin-form button");
  await page.waitForSelector("#chart-requests canvas");
  await page.waitForFunction(() => document.querySelector("#overview-totals").textContent.includes("requests"));
  const mine = await page.textContent("#overview-totals");
  check(mine.startsWith("2 requests"), `a client key's own activity: ${mine}`);
  check(await page.isHidden('nav button[data-view="keys"]'), "no keys for a client key");
  check(await page.isHidden('#split option[value="key"]'), "no split by key for a client key");

  // A phone-sized screen: the page still lays out.
  await page.setViewportSize({ width: 390, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling on a phone: ${overflow}px`);

  check(errors.length === 0, `console errors: ${JSON.stringify(errors)}`);
  console.log("all checks passed");
} finally {
  await browser.close();
}
