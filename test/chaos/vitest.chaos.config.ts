import { resolve } from "node:path";
import { defineConfig } from "vitest/config";

// The chaos tier on its own: `npx vitest run -c test/chaos/vitest.chaos.config.ts`. Same settings
// as the "chaos" project the root vitest.config.ts should carry (see RELIABILITY.md).
export default defineConfig({
  test: {
    root: resolve(import.meta.dirname, "../.."),
    name: "chaos",
    include: ["test/chaos/**/*.chaos.spec.ts"],
    globalSetup: ["test/chaos/support/global-setup.ts"],
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 120_000,
  },
});
