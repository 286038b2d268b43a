import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateImage } from "../../cli/image.js";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { sha256File } from "../../cli/verify.js";
import { startWan, wanUnavailable, type Wan } from "./wan.js";
import { startWanStack, type WanStack } from "./wan-stack.js";

const unavailable = wanUnavailable();
if (unavailable) console.warn(`skipping the migration over an emulated WAN: ${unavailable}`);

describe.skipIf(unavailable !== undefined)("a migration over the emulated metro WAN", () => {
  let wan: Wan;
  let ws: WanStack;
  beforeAll(async () => {
    wan = await startWan({ profile: "metro", sites: ["a", "b"], hostSite: "a" });
    ws = await startWanStack(wan);
  }, 240_000);
  afterAll(async () => {
    await ws?.stop();
    await wan?.stop();
  });

  it("moves 64 MiB from site a to site b byte-identical, every byte across the link", async () => {
    const src = join(ws.stack.root("a"), "vms/smoke/disk.img");
    mkdirSync(join(ws.stack.root("a"), "vms/smoke"), { recursive: true });
    await generateImage(src, { sizeBytes: 64 << 20, zeroFraction: 0.25, seed: 18 });
    const linkBefore = await wan.bytesTo("b");
    const command = buildStart({
      vm: "smoke",
      source: { host: "a", volumes: [{ path: "vms/smoke/disk.img", kind: "disk" }] },
      destination: { host: "b", dir: "in" },
    });
    const r = await runMigration(ws.stack.nats, command, { timeoutMs: 300_000 });
    expect(r.state, `${r.reason} ${r.message}`).toBe("completed");
    expect(await sha256File(join(ws.stack.root("b"), "in/disk.img"))).toBe(await sha256File(src));
    // The data crossed the emulated link (a → b), not a shortcut: at least what dwcp says it sent.
    expect((await wan.bytesTo("b")) - linkBefore).toBeGreaterThanOrEqual(r.wireBytes);
  });
});
