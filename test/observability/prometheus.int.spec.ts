import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildStart, runMigration } from "../../cli/migrate.js";
import { METRICS_JOBS } from "../../cli/stack.js";
import { startNatsServer } from "#common/nats-server.js";
import { generateRandomFile } from "../../cli/image.js";
import { startTestStack } from "../support/stack.js";
import {
  eventually,
  prometheusAvailable,
  shortenedRules,
  startPrometheus,
  type Prometheus,
} from "../support/prometheus.js";

const MiB = 1024 * 1024;
type TestStack = Awaited<ReturnType<typeof startTestStack>>;

const RULES = readFileSync(join(import.meta.dirname, "../../ops/prometheus/dwcp.rules.yml"), "utf8");
/** The shipped rules' `for:` windows, shortened for the test: mover down fires after this long. */
const FOR_SECONDS = 3;

/** The value of one series of a /metrics text, or undefined. */
const sampleOf = (text: string, line: RegExp): number | undefined => {
  const m = text.split("\n").find((l) => line.test(l));
  return m === undefined ? undefined : Number(m.slice(m.lastIndexOf(" ") + 1));
};

describe.skipIf(!prometheusAvailable())(
  "metrics, health and alerts of the embedded stack, scraped by Prometheus",
  () => {
    let stack: TestStack;
    let prom: Prometheus;

    beforeAll(async () => {
      stack = await startTestStack({ metrics: true });
      const sd = join(stack.opts.dataDir, "prometheus");
      prom = await startPrometheus({
        dir: join(stack.opts.dataDir, "prom"),
        jobs: Object.fromEntries(Object.values(METRICS_JOBS).map((job) => [job, join(sd, `${job}.json`)])),
        rules: shortenedRules(RULES, { forSeconds: FOR_SECONDS, rangeSeconds: 30 }),
      });
      await eventually("Prometheus scraping the coordinator and both movers", async () => {
        const up = await prom.query('up{job=~"dwcp-mover|dwcp-coordinator"} == 1');
        return up.length === 3 ? up : undefined;
      });
    });
    afterAll(async () => {
      await prom?.stop();
      await stack?.cleanup();
    });

    it("sees bytes written at a non-zero rate during a migration and the completed counter move after it", async () => {
      // Random bytes: nothing is skipped as zero or compressed away.
      const src = join(stack.root("a"), "vms/p1/disk.img");
      await mkdir(dirname(src), { recursive: true });
      await generateRandomFile(src, 192 * MiB);
      const command = buildStart({
        vm: "p1",
        source: { host: "a", volumes: [{ path: "vms/p1/disk.img", kind: "disk" }] },
        destination: { host: "b", dir: "in/p1" },
        // At most 64 MiB/s, so that the run spans many of Prometheus's 200 ms scrapes however fast
        // the machine moves it (unlimited, 192 MiB took 0.47 s on a quiet one).
        options: { chunkSizeBytes: 1 * MiB, batchSizeBytes: 4 * MiB, bandwidthLimitBytesPerSec: 64 * MiB },
      });
      const startS = Date.now() / 1000;
      const r = await runMigration(stack.nats, command, { timeoutMs: 110_000 });
      const endS = Date.now() / 1000;
      expect(r).toMatchObject({ state: "completed" });
      expect(endS - startS).toBeGreaterThan(1.5);
      // The rate as Prometheus computed it at each moment of the run (its scrapes of that time are in).
      const during = await eventually("the run's rate of bytes written", async () => {
        const points = await prom.queryRange(
          'sum(rate(dwcp_bytes_written_total{job="dwcp-mover"}[1s]))',
          startS,
          endS,
          0.25,
        );
        return points.some(([, v]) => v > 0) ? points : undefined;
      });
      expect(Math.max(...during.map(([, v]) => v))).toBeGreaterThan(0);
      expect(during.every(([t]) => t >= startS - 0.25 && t <= endS + 0.25)).toBe(true);
      const completed = await eventually("the completed-migrations counter at 1", async () => {
        const r = await prom.query('sum(dwcp_migrations_ended_total{job="dwcp-coordinator",outcome="completed"})');
        return (r[0]?.value ?? 0) >= 1 ? r[0]?.value : undefined;
      });
      expect(completed).toBe(1);
      const byState = await prom.query('dwcp_migrations{job="dwcp-coordinator",state="completed"}');
      expect(byState[0]?.value).toBeGreaterThanOrEqual(1);
    });

    it("serves no secret and no host path in its metrics, and answers /healthz and /readyz", async () => {
      const mover = stack.metricsTargets.get("mover-b");
      expect(mover).toBeDefined();
      const text = await (await fetch(`http://${mover?.address}/metrics`)).text();
      expect(sampleOf(text, /^dwcp_bytes_written_total\{/)).toBeGreaterThan(0);
      expect(sampleOf(text, /^process_resident_memory_bytes\{/)).toBeGreaterThan(0);
      expect(text).toMatch(/^dwcp_root_free_bytes\{root="0"/m);
      expect(text).not.toContain(stack.secret);
      expect(text).not.toContain(stack.opts.dataDir);
      expect(text).not.toContain(stack.root("b"));
      expect(text).not.toMatch(/"\/[^"]*"/); // no label value that is an absolute path
      const health = await fetch(`http://${mover?.address}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: "alive", state: "running" });
      const ready = await fetch(`http://${mover?.address}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: "ready", failed: [] });
    });

    it("fires the mover-down alert within its for: window after a mover stops", async () => {
      const target = stack.metricsTargets.get("mover-b")?.address;
      await stack.movers.get("b")?.stop();
      const stoppedAt = Date.now();
      const alert = await eventually(
        "DwcpMoverDown firing",
        async () =>
          (await prom.alerts()).find(
            (a) => a.labels["alertname"] === "DwcpMoverDown" && a.labels["instance"] === target && a.state === "firing",
          ),
        30_000,
      );
      expect(alert.labels["severity"]).toBe("critical");
      // A failed scrape (1 s), the rule's for: window, an evaluation (1 s): a few seconds of slack on a loaded host.
      expect(Date.now() - stoppedAt).toBeLessThan((FOR_SECONDS + 15) * 1000);
      // The other mover stays up: no alert for it.
      const other = stack.metricsTargets.get("mover-a")?.address;
      expect(
        (await prom.alerts()).some((a) => a.labels["alertname"] === "DwcpMoverDown" && a.labels["instance"] === other),
      ).toBe(false);
    });

    it("turns /readyz unready while the stack's nats-server is stopped, and ready again after it returns", async () => {
      const coordinator = stack.metricsTargets.get("coordinator-0")?.address;
      const readyz = async (): Promise<{ status: number; body: { failed: string[] } }> => {
        const r = await fetch(`http://${coordinator}/readyz`);
        return { status: r.status, body: (await r.json()) as { failed: string[] } };
      };
      expect((await readyz()).status).toBe(200);
      const { port, configFile } = stack.server;
      await stack.server.stop(); // this test's own server, by its PID
      const down = await eventually("/readyz 503", async () => {
        const r = await readyz();
        return r.status === 503 ? r : undefined;
      });
      expect(down.body.failed).toContain("nats");
      expect((await fetch(`http://${coordinator}/healthz`)).status).toBe(200); // alive all along
      stack.server = await startNatsServer({
        configFile: configFile ?? "",
        port,
        logFile: join(stack.opts.dataDir, "logs", "nats-server.log"),
      });
      // The stack stops the servers it lists: the restarted one, not the one stopped above.
      stack.servers = [stack.server];
      const up = await eventually("/readyz 200 again", async () => {
        const r = await readyz();
        return r.status === 200 ? r : undefined;
      });
      expect(up.body.failed).toEqual([]);
    });
  },
);
