import { defineConfig } from "vitest/config";
import { chaosTest } from "./test/chaos/vitest.chaos.config.js";

// Tiers by file suffix: unit specs do no I/O; int specs run against a real
// nats-server, real files, sockets and child processes; chaos specs (test/chaos/) kill processes
// and servers and cut links on a 3-node cluster. `npm test` runs all three, as CI does. The processes
// the int and chaos tiers start run dist/: test/support/build-dist.ts rebuilds it when stale.
export default defineConfig({
  test: {
    projects: [
      { test: { name: "unit", include: ["**/*.unit.spec.ts"], exclude: ["node_modules/**"] } },
      {
        test: {
          name: "int",
          include: ["**/*.int.spec.ts"],
          exclude: ["node_modules/**"],
          testTimeout: 120_000,
          hookTimeout: 60_000,
          fileParallelism: false,
          globalSetup: ["test/support/build-dist.ts"],
        },
      },
      { test: { ...chaosTest, globalSetup: ["test/support/build-dist.ts", ...chaosTest.globalSetup] } },
    ],
  },
});
