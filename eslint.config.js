// Type-checked lint. domain/ folders must stay pure: no NATS, no logging, no file system.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: [
      "tmp/**",
      "bench/.*",
      "node_modules/**",
      "native/build/**",
      "schemas/json/**",
      "coverage/**",
      "**/*.mjs",
      "eslint.config.js",
      "vitest.config.ts",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/switch-exhaustiveness-check": "error",
      "@typescript-eslint/no-floating-promises": "error",
    },
  },
  {
    files: ["services/**/*.ts"],
    rules: { "no-console": "error" },
  },
  {
    files: ["services/*/src/domain/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { group: ["@nats-io/*"], message: "domain/ is pure: JetStream belongs in infra/" },
            { group: ["pino"], message: "domain/ is pure: log from app/ or infra/" },
            {
              group: ["node:fs", "node:fs/*", "fs", "node:net", "node:child_process"],
              message: "domain/ is pure: I/O belongs in infra/",
            },
          ],
        },
      ],
    },
  },
);
