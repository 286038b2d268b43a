import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ANSIBLE_DIR, PLAYBOOKS, roles, ROLES_DIR, run, topLevelKeys } from "./ansible.js";

// ops/ansible passes Ansible's syntax check and ansible-lint's production profile with no
// finding, and each role's meta/argument_specs.yml declares exactly its defaults.

const ROLE_FILES = [
  "defaults/main.yml",
  "handlers/main.yml",
  "meta/main.yml",
  "meta/argument_specs.yml",
  "tasks/main.yml",
  "tasks/preflight.yml",
  "tasks/install.yml",
  "tasks/configure.yml",
  "tasks/service.yml",
];

describe("ops/ansible", () => {
  it("has the four service roles, each with the whole layout", () => {
    for (const role of ["nats_server", "coordinator", "mover", "replication_agent"]) {
      expect(roles()).toContain(role);
      const missing = ROLE_FILES.filter((f) => !existsSync(join(ROLES_DIR, role, f)));
      expect(missing, role).toEqual([]);
    }
  });

  it.each(PLAYBOOKS)("%s passes ansible-playbook --syntax-check", async (playbook) => {
    const r = await run("ansible-playbook", ["--syntax-check", playbook]);
    expect(r.stderr + r.stdout).not.toMatch(/ERROR/);
    expect(r.code).toBe(0);
  });

  it("passes ansible-lint with the production profile and no finding", async () => {
    // Paths are given: without them ansible-lint lints only what git tracks.
    const r = await run(
      "ansible-lint",
      [
        "--profile",
        "production",
        "--offline",
        "--nocolor",
        "-f",
        "pep8",
        ...PLAYBOOKS,
        ...roles().map((x) => `roles/${x}`),
      ],
      { ANSIBLE_LINT_NODEPS: "1" },
    );
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/Passed with production profile: 0 failure\(s\), 0 warning\(s\)/);
    expect(r.code).toBe(0);
  }, 300_000);

  it.each(roles())("role %s: meta/argument_specs.yml declares exactly defaults/main.yml", async (role) => {
    const defaults = topLevelKeys(join(ROLES_DIR, role, "defaults/main.yml")).sort();
    // The spec file is YAML: read it with Ansible's own Python YAML (no YAML parser in node_modules).
    const script =
      "import json,sys,yaml; " +
      "print(json.dumps(sorted(yaml.safe_load(open(sys.argv[1]))['argument_specs']['main']['options'])))";
    const r = await run("python3", ["-c", script, join(ANSIBLE_DIR, "roles", role, "meta/argument_specs.yml")]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(defaults);
  });
});
