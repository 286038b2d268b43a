import { describe, expect, it } from "vitest";
import { COMMANDS, flagsOf } from "./commands.js";
import { bashCompletion, zshCompletion } from "./completion.js";
import { commandHelp, overview } from "./help.js";
import { manPage } from "./man.js";

describe("the command table is the one source of help, man page and completion", () => {
  it("gives every command a usage, an example and a described flag list", () => {
    for (const c of COMMANDS) {
      expect(c.examples.length, c.name).toBeGreaterThan(0);
      for (const e of c.examples) expect(e, c.name).toContain(`dwcp ${c.name}`);
      const names = flagsOf(c).map((f) => f.name);
      expect(new Set(names).size, `${c.name} declares a flag twice`).toBe(names.length);
      for (const f of flagsOf(c)) expect(f.help.length, `${c.name} --${f.name}`).toBeGreaterThan(5);
    }
  });
  it("shows every flag with its default in help, the man page and both completions", () => {
    const man = manPage("0.0.0");
    const bash = bashCompletion();
    const zsh = zshCompletion();
    for (const c of COMMANDS) {
      const help = commandHelp(c).replace(/\s+/g, " ");
      expect(commandHelp(c)).toMatch(new RegExp(`^usage: dwcp ${c.name}`));
      expect(overview()).toContain(`  ${c.name} `);
      expect(man).toContain(`dwcp ${c.name.replaceAll("-", "\\-")}`);
      for (const f of flagsOf(c)) {
        expect(help, `${c.name} --${f.name}`).toContain(`--${f.name}`);
        if (f.default !== undefined) expect(help).toContain(`(default: ${f.default})`);
        expect(man).toContain(`\\-\\-${f.name.replaceAll("-", "\\-")}`);
        expect(bash).toContain(`--${f.name}`);
        expect(zsh).toContain(`'--${f.name}[`);
      }
    }
  });
});
