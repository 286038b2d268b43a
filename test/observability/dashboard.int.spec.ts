import { spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { generateRandomFile } from "../../cli/image.js";
import { startStackDashboard, type Dashboard } from "../../cli/dashboard/index.js";
import { BIN } from "../../cli/stack.js";
import { startTestStack } from "../support/stack.js";

// The live dashboard in a real browser (Debian's chromium, driven by playwright-core) against a
// real stack: the page, connected through server-sent events to a dashboard that reads NATS as
// the observer role, shows a bandwidth-limited migration running at a non-zero rate, then
// completed, and its events with their stream sequences; nothing on the page logs an error.

const MiB = 1024 * 1024;

/** Runs the built `dwcp` as a client of the test's stack (its credentials found under --data-dir). */
function dwcp(args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [BIN, ...args, "--data-dir", stack.opts.dataDir, "--nats", stack.url], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr.on("data", (d: Buffer) => (output += d.toString()));
  return new Promise((r) => child.once("close", (code) => r({ code, output })));
}
const CHROMIUM = process.env["DWCP_CHROMIUM"] ?? "/usr/bin/chromium";

// Functions that run in the page are functions, not strings: the page's Content-Security-Policy
// forbids eval. This project's types have no DOM library: what they use of it is declared here.
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { length: number };
}
declare const document: {
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { length: number };
};
declare const window: Record<string, unknown>;

let stack: Awaited<ReturnType<typeof startTestStack>>;

describe("the web dashboard in headless Chromium", () => {
  let dashboard: Dashboard;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `no Chromium at ${CHROMIUM}: install Debian's chromium package (apt-get install chromium), ` +
          "or set DWCP_CHROMIUM to a Chromium binary",
      );
    stack = await startTestStack({ replication: true });
    dashboard = await startStackDashboard(stack, "127.0.0.1:0");
    // Root in CI: Chromium's sandbox needs an unprivileged user.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (err) => errors.push(`page: ${err.message}`));
    page.on("requestfailed", (r) => {
      // The event stream is cut when the page closes at the end; anything else failing is an error.
      if (!r.url().endsWith("/events")) errors.push(`request: ${r.url()} ${r.failure()?.errorText ?? ""}`);
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await dashboard?.close();
    await stack?.cleanup();
  });

  it("shows a migration running at a non-zero rate, then completed, with its events and their sequences", async () => {
    await page.goto(dashboard.url);
    await page.waitForFunction(() => document.getElementById("connection")?.dataset["state"] === "live", undefined, {
      timeout: 30_000,
    });
    // Movers a and b, from the registry.
    await page.waitForFunction(() => document.querySelectorAll("#movers tr[data-host]").length === 2, undefined, {
      timeout: 30_000,
    });

    // Random bytes (nothing skipped or compressed away) at 4 MiB/s: about 12 s of transfer.
    const src = join(stack.root("a"), "vms/dash/disk.img");
    await mkdir(dirname(src), { recursive: true });
    await generateRandomFile(src, 48 * MiB);
    const command = buildStart({
      vm: "dash",
      source: { host: "a", volumes: [{ path: "vms/dash/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "in/dash" },
      options: {
        chunkSizeBytes: 1 * MiB,
        batchSizeBytes: 4 * MiB,
        bandwidthLimitBytesPerSec: 4 * MiB,
        compression: "none",
      },
    });
    const id = command.migrationId ?? command.commandId;
    const run = runMigration(stack.nats, command, { timeoutMs: 110_000 });

    const row = `tr[data-migration-id="${id}"]`;
    const running = await page.waitForFunction(
      (row) => {
        const tr = document.querySelector(row);
        const state = tr?.querySelector('[data-field="state"]')?.textContent;
        const rate = Number(tr?.querySelector('[data-field="rate"]')?.getAttribute("data-rate") ?? "0");
        return state === "running" && rate > 0 ? rate : false;
      },
      row,
      { timeout: 60_000, polling: 100 },
    );
    const rate = (await running.jsonValue()) as number;
    expect(rate).toBeGreaterThan(0);
    // Paced at 4 MiB/s: the rate shown is of that order, not a burst of the whole image.
    expect(rate).toBeLessThan(24 * MiB);

    expect(await run).toMatchObject({ state: "completed" });
    await page.waitForFunction(
      (row) => document.querySelector(row)?.querySelector('[data-field="state"]')?.textContent === "completed",
      row,
      { timeout: 30_000 },
    );

    // Its events, each with its stream sequence, ending with MigrationCompleted.
    await page.click(`tr[data-migration-id="${id}"] button`);
    await page.waitForFunction(
      () => document.querySelector('#timeline tr[data-type="MigrationCompleted"]') !== null,
      undefined,
      { timeout: 30_000 },
    );
    const timeline: Array<{ seq: number; type: string | null }> = [];
    for (const r of await page.$$("#timeline tr[data-seq]"))
      timeline.push({ seq: Number(await r.getAttribute("data-seq")), type: await r.getAttribute("data-type") });
    expect(timeline[0]?.type).toBe("MigrationRequested");
    expect(timeline.at(-1)?.type).toBe("MigrationCompleted");
    const seqs = timeline.map((e) => e.seq);
    expect(seqs.every((s, i) => s > 0 && (i === 0 || s > (seqs[i - 1] ?? 0)))).toBe(true);
    expect(await page.textContent("#timeline-id")).toBe(id);

    const shot = join(stack.opts.dataDir, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20 * 1024);
    expect(errors).toEqual([]);
  });

  it("shows a replicated VM's snapshot and its recovery point", async () => {
    await generateRandomFile(join(stack.root("a"), "vms/dash/repl.img"), 2 * MiB);
    const r = await dwcp(["replicate", "--vm", "dashrep", "--from", "a:vms/dash/repl.img", "--to", "b:repl"]);
    expect(r.code, r.output).toBe(0);
    const rpo = await page.waitForFunction(
      () => {
        const tr = document.querySelector('#replication tr[data-vm="dashrep"]');
        return tr && tr.querySelectorAll(".tick").length === 1 ? tr.textContent : false;
      },
      undefined,
      { timeout: 30_000 },
    );
    expect(String(await rpo.jsonValue())).toMatch(/\d+ s/);
    expect(errors).toEqual([]);
  });

  it("puts what a user typed on the page as text, never as markup", async () => {
    // A path with markup: the migration fails or is refused, and its message echoes the path.
    const hostile = "vms/<img src=x onerror=window.__pwned=1>.img";
    const command = buildStart({
      vm: "hostile",
      source: { host: "a", volumes: [{ path: hostile, kind: "disk" }] },
      destination: { host: "b", dir: "in/hostile" },
    });
    const id = command.migrationId ?? command.commandId;
    const result = await runMigration(stack.nats, command, { timeoutMs: 60_000 });
    expect(result.state).not.toBe("completed");
    const text = await page.waitForFunction(
      (row) => {
        const tr = document.querySelector(row);
        const state = tr?.querySelector('[data-field="state"]')?.textContent;
        return state && !["requested", "planned", "running"].includes(state) ? tr.textContent : false;
      },
      `tr[data-migration-id="${id}"]`,
      { timeout: 30_000 },
    );
    expect(String(await text.jsonValue())).toContain("<img");
    expect(await page.evaluate(() => document.querySelectorAll("main img").length)).toBe(0);
    expect(await page.evaluate(() => window["__pwned"])).toBeUndefined();
    expect(errors).toEqual([]);
  });

  it("answers a malformed migration id with 400 and an unknown one with 404, and sends security headers", async () => {
    const bad = await fetch(`${dashboard.url}api/migration/${encodeURIComponent("a.>")}`);
    expect(bad.status).toBe(400);
    const none = await fetch(`${dashboard.url}api/migration/no-such-migration`);
    expect(none.status).toBe(404);
    const html = await fetch(dashboard.url);
    expect(html.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(html.headers.get("x-content-type-options")).toBe("nosniff");
    expect((await fetch(`${dashboard.url}uplot.js`)).status).toBe(200);
    expect((await fetch(`${dashboard.url}../package.json`)).status).toBe(404);
  });
});
