import { defineConfig } from "vitest/config";
import { chaosTest } from "./test/chaos/vitest.chaos.config.js";

// Tiers by file suffix: unit specs do no I/O; int specs run against a real
// nats-server, real files, sockets and child processes; chaos specs (test/chaos/) kill processes
// and servers and cut links on a 3-node cluster. `npm test` runs all three, as CI does. The processes
// the int and chaos tiers start run dist/: test/support/build-dist.ts rebuilds it when stale.
// The compat run of .ci/run (DWCP_COMPAT_RUN=1, on a current nats-server) repeats only the
// suites that exercise the server: the host-side suites (deployment, WAN emulator, CLI packaging,
// QEMU, Prometheus) and the specs that start no nats-server at all (native kernels, the data
// channel and volumes, the replication store's helpers, path and TLS attacks on movers, a
// metrics listener without a server) run once, as do the data-plane size and rate suites.
const COMPAT_SKIPS =
  process.env["DWCP_COMPAT_RUN"] === "1"
    ? [
        "test/ops/**",
        "test/wan/**",
        "test/cli/**",
        "test/vm/**",
        "test/observability/**",
        "native/**",
        "cli/print-config.int.spec.ts",
        "services/common/config-file.int.spec.ts",
        "services/mover/src/infra/volume*.int.spec.ts",
        "services/mover/src/infra/data-channel/{client-session,data-channel-security,data-channel,fencing,link-share,links,local-copy,resume,tunnel}.int.spec.ts",
        "services/replication/src/infra/{hash-pool,nbd-client}.int.spec.ts",
        "test/replication/{backup-digest,chaining-values,fp-cache,put-batcher}.int.spec.ts",
        "test/security/{data-channel-tls,metrics-auth,paths,refusal-flood}.int.spec.ts",
        // Data-plane sizes and rates: the server only carries their few events.
        "test/{bandwidth-limit,bigvm}.int.spec.ts",
      ]
    : [];

export default defineConfig({
  test: {
    projects: [
      { test: { name: "unit", include: ["**/*.unit.spec.ts"], exclude: ["node_modules/**"] } },
      {
        test: {
          name: "int",
          include: ["**/*.int.spec.ts"],
          exclude: ["node_modules/**", ...COMPAT_SKIPS],
          testTimeout: 120_000,
          hookTimeout: 60_000,
          fileParallelism: false,
          globalSetup: ["test/support/build-dist.ts"],
        },
      },
      {
        test: {
          ...chaosTest,
          // Its cuts are on the data channel, not the server: the compat run leaves it out.
          exclude: ["node_modules/**", ...(COMPAT_SKIPS.length > 0 ? ["test/chaos/live.chaos.spec.ts"] : [])],
          globalSetup: ["test/support/build-dist.ts", ...chaosTest.globalSetup],
        },
      },
    ],
  },
});
