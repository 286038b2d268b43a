import { describe, expect, it } from "vitest";
import {
  parseCompression,
  parseCount,
  parseDuration,
  parseFrom,
  parsePort,
  parseRate,
  parseSize,
  parseTo,
  UsageError,
} from "./args.js";
import { CompressionMode } from "#schemas/index.js";

describe("CLI argument parsing", () => {
  it("parses sizes in binary units", () => {
    expect(parseSize("--chunk-size", "4M")).toBe(4 * 1024 * 1024);
    expect(parseSize("--chunk-size", "64KiB")).toBe(65536);
    expect(parseSize("--chunk-size", "65536")).toBe(65536);
    expect(() => parseSize("--chunk-size", "4 parsecs")).toThrow(/--chunk-size must be a size/);
  });
  it("parses --from with kinds and --to", () => {
    expect(parseFrom("a:vm/disk.img,vm/mem.img=memory")).toEqual({
      host: "a",
      volumes: [
        { path: "vm/disk.img", kind: "disk" },
        { path: "vm/mem.img", kind: "memory" },
      ],
    });
    expect(parseTo("b:/srv/in")).toEqual({ host: "b", dir: "/srv/in" });
    expect(() => parseTo("b")).toThrow(UsageError);
    expect(() => parseFrom(":x")).toThrow(/--from must be HOST:PATH/);
  });
  it("parses durations", () => {
    expect(parseDuration("--every", "5m")).toBe(300_000);
    expect(() => parseDuration("--every", "soon")).toThrow(UsageError);
  });
});

describe("CLI values checked before any work", () => {
  it("takes days as a duration (--keep-for 7d)", () => {
    expect(parseDuration("--keep-for", "7d")).toBe(7 * 86_400_000);
  });
  it("echoes a rate as it was typed", () => {
    expect(parseRate("--bandwidth-limit", "100M/s")).toBe(100 * 1024 * 1024);
    expect(() => parseRate("--bandwidth-limit", "100Mbit/s")).toThrow('got "100Mbit/s"');
  });
  it("takes the compression modes the migration schema takes, and names them when refusing", () => {
    for (const mode of CompressionMode.options) expect(parseCompression(mode)).toBe(mode);
    expect(() => parseCompression("gzip")).toThrow('one of auto, none, lz4, zstd, got "gzip"');
  });
  it("refuses an unknown volume kind by name", () => {
    expect(() => parseFrom("a:disk.img=ram")).toThrow(/unknown volume kind "ram"/);
    expect(parseFrom("a:dir=x/disk.img").volumes).toEqual([{ path: "dir=x/disk.img", kind: "disk" }]);
  });
  it("refuses counts and ports that are not numbers", () => {
    expect(() => parseCount("--sites", "abc")).toThrow(/--sites must be a whole number/);
    expect(() => parsePort("--nats-port", "abc")).toThrow(/--nats-port must be a TCP port/);
    expect(parsePort("--nats-port", "4222")).toBe(4222);
  });
});
