import { defineConfig } from "vitest/config";

// Tiers by suffix (see ../shared/STYLE.md): unit specs do no I/O; int specs run against a real
// nats-server, real files, sockets and child processes. Chaos specs live in test/chaos/.
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
        },
      },
    ],
  },
});
