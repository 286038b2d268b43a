import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { MigrationSummaryPage } from "#schemas/index.js";
import { ensureLayout } from "./layout.js";
import { connectNats, type Nats } from "./nats.js";
import { startNatsServer, type NatsServerHandle } from "./nats-server.js";
import { INSECURE } from "./signing.js";
import { publishPages, readPages } from "./summaries.js";

// Reading the summary pages while the coordinator republishes them: every read ends, with the
// page as it was at one moment or the next. (An ordered consumer that waited for `pending === 0`
// waited for ever on a few reads in a hundred whose page was replaced while they read it.)
let dir: string;
let server: NatsServerHandle;
let nats: Nats;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dwcp-summaries-"));
  server = await startNatsServer({ storeDir: join(dir, "nats") });
  nats = await connectNats(server.url, "summaries");
  await ensureLayout(nats.nc, nats.jsm, { replicas: 1 });
});

afterAll(async () => {
  await nats?.nc.close().catch(() => undefined);
  if (server) await server.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

const page = (n: number, messages: number): MigrationSummaryPage => ({
  type: "MigrationSummaryPage",
  version: 1,
  page: n,
  summaries: [
    {
      type: "MigrationSummary",
      version: 1,
      migrationId: `m-${n}`,
      state: "running",
      bytes: 1,
      wireBytes: 1,
      zeroBytes: 0,
      batchesDone: 0,
      messages,
      lastSeq: messages,
    },
  ],
});

it("every read ends while the pages are republished back to back, and sees each page once", async () => {
  await publishPages(nats, INSECURE, [page(0, 1), page(1, 1)]);
  let publishing = true;
  let published = 1;
  const publisher = (async () => {
    while (publishing) await publishPages(nats, INSECURE, [page(0, ++published), page(1, published)]);
  })();
  try {
    for (let i = 0; i < 200; i++) {
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<"hung">((r) => (timer = setTimeout(() => r("hung"), 10_000)));
      const pages = await Promise.race([readPages(nats, INSECURE), hung]).finally(() => clearTimeout(timer));
      expect(pages === "hung" ? `read ${i} did not end within 10 s` : pages.map((p) => p.page)).toEqual([0, 1]);
    }
    expect(published).toBeGreaterThan(10);
  } finally {
    publishing = false;
    await publisher;
  }
});
