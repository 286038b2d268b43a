// Type-checked lint, and the architecture rules that keep the services apart:
// - Front doors. Code outside a service (cli/, services/common/, native/, schemas/, scripts/)
//   imports it only through its package import (#coordinator, #migration, #mover, #replication,
//   #federation), never a path into services/<svc>/src/; code inside a service never imports
//   another service's files. Tests (*.spec.ts, test/**) and bench/** are white-box and may reach
//   any service's internals; a domain spec still has to stay pure.
// - native/ is used through #native/index.js, plus #native/page-tree.js: its pure page
//   arithmetic, the one part that domain/ may import (index.js loads the binding).
// - domain/ folders stay pure: no NATS, no logging, no file system, sockets, processes or
//   threads. This rule sees direct imports only; scripts/check-architecture.ts (npm run check)
//   follows imports transitively, so a helper cannot smuggle I/O into domain/.
import { readdirSync } from "node:fs";
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** Every folder under services/ with a src/ is a service; common/ is shared code, not one. */
const SERVICES = readdirSync(new URL("./services/", import.meta.url), { withFileTypes: true })
  .filter((d) => d.isDirectory() && readdirSync(new URL(`./services/${d.name}/`, import.meta.url)).includes("src"))
  .map((d) => d.name)
  .sort();

const TESTS = ["**/*.spec.ts", "test/**", "bench/**"];

/** Matches a path into one of `services`' src/, relative ("../../mover/src/x.js") or not. */
const intoServices = (services) => `(^|/)(${services.join("|")})/src(/|$)`;

const frontDoors = (services, where) =>
  services.length === 0
    ? []
    : [
        {
          regex: intoServices(services),
          message: `${where}: import a service only through its front door (#${services.join(", #")}, #migration)`,
        },
      ];

const nativeEntry = [
  {
    regex: "(^#native/|(^|/)native/)(?!(index|page-tree)\\.js$)",
    message: "import native/ through #native/index.js (or the pure #native/page-tree.js)",
  },
];

const PURE = "domain/ is pure";
const purity = [
  { group: ["@nats-io/*"], message: `${PURE}: JetStream belongs in infra/` },
  { group: ["pino"], message: `${PURE}: log from app/ or infra/` },
  {
    group: ["node:fs", "node:fs/*", "fs", "fs/*", "node:net", "net", "node:child_process", "child_process"],
    message: `${PURE}: I/O belongs in infra/`,
  },
  { group: ["node:worker_threads", "worker_threads"], message: `${PURE}: threads belong in infra/` },
  { regex: "^#native/index\\.js$", message: `${PURE}: #native/index.js loads the binding; use #native/page-tree.js` },
];

const restrict = (patterns) => ({ "no-restricted-imports": ["error", { patterns }] });

/**
 * One config per group of files: a file gets exactly one no-restricted-imports pattern list.
 * Exported for scripts/architecture.unit.spec.ts (ESLint uses only the default export).
 */
export const boundaries = [
  {
    files: ["cli/**/*.ts", "services/common/**/*.ts", "native/**/*.ts", "schemas/**/*.ts", "scripts/**/*.ts", "*.ts"],
    ignores: TESTS,
    rules: restrict([...frontDoors(SERVICES, "outside a service"), ...nativeEntry]),
  },
  ...SERVICES.flatMap((svc) => {
    const others = frontDoors(
      SERVICES.filter((s) => s !== svc),
      `services/${svc}`,
    );
    return [
      {
        files: [`services/${svc}/**/*.ts`],
        ignores: [...TESTS, `services/${svc}/src/domain/**`],
        rules: restrict([...others, ...nativeEntry]),
      },
      {
        files: [`services/${svc}/src/domain/**/*.ts`],
        ignores: TESTS,
        rules: restrict([...others, ...nativeEntry, ...purity]),
      },
      { files: [`services/${svc}/src/domain/**/*.spec.ts`], rules: restrict(purity) },
    ];
  }),
];

export default tseslint.config(
  {
    ignores: [
      "tmp/**",
      "bench/.*",
      "node_modules/**",
      "native/build/**",
      "dist/**",
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
      // Biome formats at 120 but leaves long strings, templates, regexes and comments alone.
      "max-len": [
        "error",
        {
          code: 120,
          ignoreUrls: false,
          ignoreStrings: false,
          ignoreTemplateLiterals: false,
          ignoreRegExpLiterals: false,
          ignoreComments: false,
        },
      ],
    },
  },
  {
    files: ["services/**/*.ts"],
    rules: { "no-console": "error" },
  },
  ...boundaries,
  // The dashboard's page script (web/): plain browser JavaScript, served as it is, no build step.
  {
    files: ["web/**/*.js"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      parserOptions: { projectService: false, project: false, program: null },
      sourceType: "script",
      globals: Object.fromEntries(
        [
          "document",
          "location",
          "history",
          "sessionStorage",
          "fetch",
          "setTimeout",
          "URLSearchParams",
          "TextDecoderStream",
          "Node",
          "uPlot",
        ].map((g) => [g, "readonly"]),
      ),
    },
  },
);
