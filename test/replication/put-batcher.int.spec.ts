import { mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { strongHash, zeroPages } from "#native/index.js";
import { DestinationAgent, inProcess, type Transport } from "../../services/replication/src/app/destination.js";
import { CountingLink, PutBatcher } from "../../services/replication/src/app/source-batch.js";

// A sync's scan lanes add chunks to one batcher at once. A lane that waits for a send to go out
// must find room again when it resumes: other lanes may have filled the new buffer meanwhile.
describe("PutBatcher", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-batcher-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("packs chunks from concurrent lanes into frames whose payload matches their chunks", async () => {
    const agent = await DestinationAgent.open(join(dir, "store"));
    const direct = inProcess(agent);
    // Replies come late, so a lane's send waits for a free slot while the others keep adding.
    const slow: Transport = {
      request: async (f) => {
        await new Promise<void>((r) => setTimeout(r, 5));
        return direct.request(f);
      },
    };
    const batcher = new PutBatcher(new CountingLink(slow), { batchBytes: 1 << 20, inflight: 1 });
    const CHUNK = 300 * 1024; // does not divide the batch: a lane finds it full and waits for a send
    const hashes: string[] = [];
    const lane = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const bytes = randomBytes(CHUNK);
        const hash = (await strongHash(bytes)).toString("hex");
        hashes.push(hash);
        await batcher.add({
          hash,
          base: null,
          bytes,
          pages: null,
          zeroMap: zeroPages(bytes),
          reread: () => Promise.resolve(bytes),
        });
      }
    };
    await Promise.all([lane(13), lane(11), lane(9)]);
    const counters = await batcher.finish();
    expect(counters.chunksSent).toBe(33);
    expect(counters.fullResends).toBe(0);
    for (const h of hashes) expect(await agent.store.has(h), h).toBe(true);
  });
});
