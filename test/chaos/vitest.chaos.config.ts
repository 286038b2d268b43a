import { resolve } from "node:path";
import { defineConfig } from "vitest/config";

/** The chaos tier's settings: the root vitest.config.ts's "chaos" project uses these too. */
export const chaosTest = {
  name: "chaos",
  include: ["test/chaos/**/*.chaos.spec.ts"],
  globalSetup: ["test/chaos/support/global-setup.ts"],
  fileParallelism: false,
  testTimeout: 180_000,
  hookTimeout: 120_000,
};

// The chaos tier on its own: `npx vitest run -c test/chaos/vitest.chaos.config.ts`.
export default defineConfig({
  test: {
    root: resolve(import.meta.dirname, "../.."),
    ...chaosTest,
    globalSetup: ["test/support/build-dist.ts", ...chaosTest.globalSetup],
  },
});
