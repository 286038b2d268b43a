import { mkdtempSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DIRECT_MIN_BYTES, openDirect, openDirectRead } from "./fs.js";

// The O_DIRECT write handle is opened only for a file that will get writes large enough to use it
// (DWCP_DIRECT_IO=auto, the default): a small volume's batch costs no second open.
describe("openDirect", () => {
  const dir = mkdtempSync(join(tmpdir(), "dwcp-fs-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("opens no O_DIRECT handle for writes smaller than DIRECT_MIN_BYTES, one for large writes", async () => {
    const fh = await open(join(dir, "v.part"), "w+");
    try {
      expect(await openDirect(fh, 64 * 1024)).toBeUndefined();
      expect(await openDirect(fh, DIRECT_MIN_BYTES - 4096)).toBeUndefined();
      // Where the file system refuses O_DIRECT (tmpfs) there is none for large writes either.
      const probe = await openDirectRead(fh);
      await probe?.close();
      const large = await openDirect(fh, DIRECT_MIN_BYTES);
      expect(large !== undefined).toBe(probe !== undefined);
      expect(large?.everyAligned).not.toBe(true);
      await large?.fh.close();
    } finally {
      await fh.close();
    }
  });
});
