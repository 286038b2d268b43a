import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROFILES, startWan, wanUnavailable, type Wan, type WanProfile } from "./wan.js";

const TCP_COPY = resolve(import.meta.dirname, "tcp-copy.mjs");
const unavailable = wanUnavailable();
if (unavailable) console.warn(`skipping the WAN emulator suite: ${unavailable}`);

/** Round trips in ms of `count` pings from a to b (each line's time=). */
async function pings(wan: Wan, count: number, intervalS: number): Promise<{ rtts: number[]; lost: number }> {
  const args = ["-n", "-q", "-c", String(count), "-i", String(intervalS), "-W", "2", wan.address("b")];
  const { stdout } = await wan
    .exec("a", "ping", args)
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? "" }));
  const stats = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(stdout);
  if (!stats) throw new Error(`unexpected ping output: ${stdout}`);
  return { rtts: rtt ? [Number(rtt[1]), Number(rtt[2])] : [], lost: Number(stats[1]) - Number(stats[2]) };
}

/** One TCP stream a → b for `seconds`: the receiver's steady-state rate. */
async function tcpRate(wan: Wan, seconds: number): Promise<number> {
  const recv = wan.spawn("b", process.execPath, [TCP_COPY, "recv", wan.address("b"), "5201", "-"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: recv.stdout! })[Symbol.asyncIterator]();
  expect((await lines.next()).value).toBe("listening");
  await wan.exec("a", process.execPath, [TCP_COPY, "send", wan.address("b"), "5201", "--seconds", String(seconds)]);
  const result = JSON.parse((await lines.next()).value as string) as { bytes: number; steadyMbit: number };
  return result.steadyMbit;
}

const lossless = (p: WanProfile): WanProfile => ({ ...p, name: `${p.name}-lossless`, lossPct: 0 });

describe.skipIf(unavailable !== undefined)("WAN emulator", () => {
  let wan: Wan;
  beforeAll(async () => {
    wan = await startWan({ profile: "metro", sites: ["a", "b"] });
  });
  afterAll(async () => {
    await wan?.stop();
  });

  for (const profile of [PROFILES.metro, lossless(PROFILES.continental)]) {
    it(`${profile.name}: ping RTT and one TCP stream's rate match the profile`, async () => {
      await wan.setProfile(profile);
      const { rtts, lost } = await pings(wan, 20, 0.05);
      expect(lost).toBe(0);
      const [min, avg] = rtts as [number, number];
      // The minimum is the emulated delay plus the least scheduling noise: within 10%. The mean
      // carries this loaded machine's scheduling delays too.
      expect(min).toBeGreaterThanOrEqual(profile.rttMs * 0.9);
      expect(min).toBeLessThanOrEqual(profile.rttMs * 1.1);
      expect(avg).toBeLessThanOrEqual(profile.rttMs * 1.6);

      const before = await wan.stats();
      const mbit = await tcpRate(wan, 6);
      // Goodput under tbf's rate: headers take ~4.5% of a 1514-byte frame.
      expect(mbit).toBeGreaterThanOrEqual(profile.rateMbit * 0.9);
      expect(mbit).toBeLessThanOrEqual(profile.rateMbit * 1.01);
      const after = await wan.stats();
      // The stream went through the forwarder (not around it), and it dropped nothing.
      expect(after.bytes - before.bytes).toBeGreaterThan((mbit * 1e6 * 5) / 8);
      expect(after.lost - before.lost).toBe(0);
    });
  }

  it("drops the configured share of packets in each direction", async () => {
    const profile = { ...PROFILES.intercontinental, rttMs: 10 };
    await wan.setProfile(profile);
    const count = 2000;
    const { lost } = await pings(wan, count, 0.002);
    // A round trip survives both directions: 1 - (1 - p)^2 of the pings are lost.
    const p = profile.lossPct / 100;
    const expected = count * (1 - (1 - p) ** 2);
    expect(lost).toBeGreaterThanOrEqual(expected * 0.45);
    expect(lost).toBeLessThanOrEqual(expected * 1.8);
  });

  it("a cut drops everything until it heals", async () => {
    await wan.setProfile("metro");
    await wan.cut();
    expect((await pings(wan, 3, 0.05)).lost).toBe(3);
    await wan.heal();
    expect((await pings(wan, 3, 0.05)).lost).toBe(0);
  });
});
