// Drives a SMART EHR launch in headless Chromium, as a clinician would:
// sign in on the EHR's launcher, launch the test app for a patient, approve on the consent page,
// then wait for the app (index.html) to show what it read.
//
//   EHR_TEST_PASSWORD=... node drive.mjs --launcher https://127.0.0.1:PORT/oauth/launcher \
//     --username U --client-id C --patient P --artifacts DIR
//
// Prints the app's JSON result on stdout and exits 0; on any failure prints what went wrong, the
// pages visited and the browser console to stderr, saves DIR/failure.png and exits 1.
// The EHR's certificate comes from its dev CA, which is not in the browser's store: the context
// ignores HTTPS errors (for that certificate; the app itself is served over plain http on loopback).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    launcher: { type: "string" },
    username: { type: "string" },
    "client-id": { type: "string" },
    patient: { type: "string" },
    artifacts: { type: "string", default: "." },
    timeout: { type: "string", default: "20000" },
  },
});
const password = process.env.EHR_TEST_PASSWORD;
for (const name of ["launcher", "username", "client-id", "patient"]) {
  if (!opts[name]) fail(`missing --${name}`);
}
if (!password) fail("missing EHR_TEST_PASSWORD in the environment");

const ehrOrigin = new URL(opts.launcher).origin;
const trail = [];    // every page the tab showed, in order
const browserLog = []; // the pages' console messages, errors and failed requests

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  // The machine's network is closed: keep Chromium from phoning home at start.
  args: ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true });
const page = await context.newPage();
page.setDefaultTimeout(Number(opts.timeout));
page.on("framenavigated", (frame) => { if (frame === page.mainFrame()) trail.push(frame.url()); });
page.on("console", (msg) => browserLog.push(`console.${msg.type()}: ${msg.text()}`));
page.on("pageerror", (err) => browserLog.push(`pageerror: ${err.message}`));
page.on("response", (res) => { if (res.status() >= 400) browserLog.push(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`); });
page.on("requestfailed", (req) => browserLog.push(`requestfailed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`));

let step = "start";
try {
  step = "open the launcher (expect the sign-in page)";
  await page.goto(opts.launcher);
  await page.fill("#username", opts.username);
  await page.fill("#password", password);
  step = "sign in (expect the launcher form)";
  await page.click("#sign-in");
  await page.waitForSelector("select#client_id, #error");
  await failOnPageError();
  step = "choose the app and the patient, then launch";
  await page.selectOption("#client_id", opts["client-id"]);
  await page.selectOption("#patient", opts.patient);
  await page.click("#launch");
  step = "follow the app's launch page to the consent page";
  await page.waitForSelector("#approve, #error");
  await failOnPageError();
  const consentUrl = new URL(page.url());
  if (consentUrl.origin !== ehrOrigin || consentUrl.pathname !== "/oauth/authorize") {
    throw new Error(`consent page at ${page.url()}, expected ${ehrOrigin}/oauth/authorize`);
  }
  step = "approve (expect the app's redirect URI to read and show data)";
  await page.click("#approve");
  await page.waitForSelector("pre#result, pre#error");
  await failOnPageError();
  process.stdout.write((await page.textContent("pre#result")) + "\n");
  await browser.close();
} catch (err) {
  await report(err);
  await browser.close();
  process.exit(1);
}

async function failOnPageError() {
  const error = await page.$("#error");
  if (error) throw new Error(`the page at ${page.url()} shows an error: ${(await error.textContent()).trim()}`);
}

async function report(err) {
  let shot = "(none)";
  try {
    mkdirSync(opts.artifacts, { recursive: true });
    shot = join(opts.artifacts, "failure.png");
    await page.screenshot({ path: shot, fullPage: true });
  } catch (shotErr) {
    shot = `(could not save: ${shotErr.message})`;
  }
  process.stderr.write([
    `EHR launch failed at step: ${step}`,
    `error: ${err && err.message ? err.message : err}`,
    `screenshot: ${shot}`,
    "pages visited:", ...trail.map((url) => `  ${url}`),
    "browser console:", ...browserLog.map((line) => `  ${line}`),
  ].join("\n") + "\n");
}

function fail(message) {
  process.stderr.write(`drive.mjs: ${message}\n`);
  process.exit(2);
}
