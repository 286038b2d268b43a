// The source file's permission bits survive `dwcp replicate` and `dwcp restore` (through the built
// binary, against a real stack with replication services), as they do `dwcp migrate`: the first
// snapshot carries them, a later incremental one carries a changed mode, and restore applies the
// mode of the snapshot it restores.
import { chmod, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256File } from "../../cli/verify.js";
import { cliOf, makeImage, startTestStack } from "../support/stack.js";

const MiB = 1024 * 1024;
let stack: Awaited<ReturnType<typeof startTestStack>>;
let source: string;

/** `dwcp <args>` as a user runs it against the test stack. */
const dwcp = (...args: string[]) => cliOf(stack)(...args);

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o7777;

beforeAll(async () => {
  stack = await startTestStack({ replication: true });
  source = await makeImage(stack, "a", "vms/m/disk.img", { sizeBytes: 2 * MiB + 3, zeroFraction: 0.4, seed: 9 });
});
afterAll(async () => stack?.cleanup());

describe("file modes on replicate and restore", () => {
  it("a restore gives each file the mode its source had when the snapshot was taken", async () => {
    await chmod(source, 0o604);
    const first = await dwcp("replicate", "--vm", "m", "--from", "a:vms/m/disk.img", "--to", "b:repl", "--json");
    expect(first.code, first.stderr).toBe(0);
    const at1 = new Date().toISOString();

    // The mode alone changes: an incremental snapshot carries it.
    await chmod(source, 0o640);
    const second = await dwcp("replicate", "--vm", "m", "--from", "a:vms/m/disk.img", "--to", "b:repl", "--json");
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ changedBytes: 0 });

    const old = await dwcp("restore", "--vm", "m", "--at", at1, "--to", "b:out1", "--json");
    expect(old.code, old.stderr).toBe(0);
    const latest = await dwcp("restore", "--vm", "m", "--at", new Date().toISOString(), "--to", "b:out2", "--json");
    expect(latest.code, latest.stderr).toBe(0);

    const out1 = join(stack.root("b"), "out1", "disk.img");
    const out2 = join(stack.root("b"), "out2", "disk.img");
    expect(await modeOf(out1)).toBe(0o604);
    expect(await modeOf(out2)).toBe(0o640);
    expect(await sha256File(out2)).toBe(await sha256File(source));
    if (process.getuid?.() === 0) expect((await stat(out2)).uid).toBe((await stat(source)).uid);
  });
});
