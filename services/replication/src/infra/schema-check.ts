import type { z } from "zod";

// A fast yes for the common case of zod validation, compiled once from the schema itself (no
// second copy of any schema): a predicate that walks a value in place, without allocating, and
// answers true only when zod would accept the value and return an equal one (no stripped keys,
// defaults or transforms). Anything it cannot vouch for — a failure, an unknown key, a construct
// it does not compile — goes to zod's own safeParse, which stays the authority and gives errors.
// A replay validates a million stored events; zod's copy of each also doubled what the GC traced.

type Check = (v: unknown) => boolean;

interface Def {
  type: string;
  checks?: Array<{ _zod: { def: CheckDef } }>;
  check?: string;
  pattern?: RegExp;
  values?: unknown[];
  entries?: Record<string, unknown>;
  element?: Schema;
  shape?: Record<string, Schema>;
  catchall?: unknown;
  innerType?: Schema;
  options?: Schema[];
  discriminator?: string;
}

interface CheckDef {
  check: string;
  format?: string;
  pattern?: RegExp;
  minimum?: number;
  maximum?: number;
  value?: number;
  inclusive?: boolean;
  fn?: (v: unknown) => unknown;
}

interface Schema {
  _zod: { def: Def };
}

/** Thrown while compiling: the construct is left to zod. */
class Unsupported extends Error {}

/**
 * Generates one JavaScript function per object, array and union, each a straight line of type
 * tests on local variables (V8 optimises these far better than a tree of closures); regexes,
 * sets and refinement functions are passed in as parameters, never as source text.
 */
class Generator {
  readonly fns: string[] = [];
  readonly params: unknown[] = [];

  param(value: unknown): string {
    this.params.push(value);
    return `p${this.params.length - 1}`;
  }

  fn(body: string): string {
    const name = `f${this.fns.length}`;
    this.fns.push(`function ${name}(v) {\n${body}\n}`);
    return name;
  }

  private checks(d: Def, v: string): string[] {
    const defs = [...(d.check !== undefined ? [d as CheckDef] : []), ...(d.checks ?? []).map((c) => c._zod.def)];
    return defs.map((c) => {
      switch (c.check) {
        case "string_format":
          if (!(c.pattern instanceof RegExp)) throw new Unsupported(c.format);
          return `${this.param(c.pattern)}.test(${v})`;
        case "min_length":
          return `${v}.length >= ${Number(c.minimum)}`;
        case "max_length":
          return `${v}.length <= ${Number(c.maximum)}`;
        case "number_format":
          if (c.format !== "safeint") throw new Unsupported(c.format);
          return `Number.isSafeInteger(${v})`;
        case "greater_than":
          return `${v} ${c.inclusive ? ">=" : ">"} ${this.param(c.value)}`;
        case "less_than":
          return `${v} ${c.inclusive ? "<=" : "<"} ${this.param(c.value)}`;
        case "custom":
          if (typeof c.fn !== "function") throw new Unsupported("custom");
          return `${this.param(c.fn)}(${v}) === true`;
        default:
          throw new Unsupported(c.check);
      }
    });
  }

  /** A boolean expression over the variable `v` (a plain identifier). */
  expr(s: Schema, v: string): string {
    const d = s._zod.def;
    const all = (parts: string[]): string => `(${parts.join(" && ")})`;
    switch (d.type) {
      case "string":
        return all([`typeof ${v} === "string"`, ...this.checks(d, v)]);
      case "number":
        return all([`typeof ${v} === "number"`, `Number.isFinite(${v})`, ...this.checks(d, v)]);
      case "boolean":
        return `(typeof ${v} === "boolean")`;
      case "literal":
        return `(${(d.values ?? []).map((x) => `${v} === ${this.param(x)}`).join(" || ") || "false"})`;
      case "enum":
        return `${this.param(new Set(Object.values(d.entries ?? {})))}.has(${v})`;
      case "nullable":
        if (!d.innerType) throw new Unsupported("nullable");
        return `(${v} === null || ${this.expr(d.innerType, v)})`;
      case "optional":
        if (!d.innerType) throw new Unsupported("optional");
        return `(${v} === undefined || ${this.expr(d.innerType, v)})`;
      case "default":
      case "prefault":
        // Absent, zod fills the default in: the output would differ from the input, so zod decides.
        if (!d.innerType) throw new Unsupported(d.type);
        return `(${v} !== undefined && ${this.expr(d.innerType, v)})`;
      case "array":
        return `${this.array(d)}(${v})`;
      case "object":
        return `${this.object(d)}(${v})`;
      case "union":
        return `${this.union(d)}(${v})`;
      default:
        throw new Unsupported(d.type);
    }
  }

  private array(d: Def): string {
    if (!d.element) throw new Unsupported("array");
    const element = this.expr(d.element, "e");
    const checks = this.checks(d, "v");
    return this.fn(`if (!Array.isArray(v)) return false;
for (let i = 0; i < v.length; i++) { const e = v[i]; if (!${element}) return false; }
return ${checks.length > 0 ? checks.join(" && ") : "true"};`);
  }

  private object(d: Def): string {
    if (d.catchall !== undefined || !d.shape) throw new Unsupported("catchall");
    const keys = Object.keys(d.shape);
    const lines = keys.map((k, i) => {
      const field = d.shape![k]!;
      const key = JSON.stringify(k);
      // An explicit undefined is not JSON.
      const absent = field._zod.def.type === "optional" ? `if (${key} in v) return false;` : "return false;";
      const check = `if (!${this.expr(field, `a${i}`)}) return false;`;
      return `const a${i} = v[${key}]; if (a${i} === undefined) { ${absent} } else ${check}`;
    });
    // A key zod does not know would be stripped from its output: let zod decide.
    const known = keys.map((k) => `case ${JSON.stringify(k)}:`).join(" ");
    // Refinements of the whole object (fields checked against each other) run last, as in zod.
    const checks = this.checks(d, "v");
    return this.fn(`if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
${lines.join("\n")}
for (const k in v) { switch (k) { ${known} break; default: return false; } }
return ${checks.length > 0 ? checks.join(" && ") : "true"};`);
  }

  private union(d: Def): string {
    const key = d.discriminator;
    if (key === undefined || !d.options) throw new Unsupported("union");
    const cases = d.options.map((opt) => {
      const lit = opt._zod.def.shape?.[key]?._zod.def;
      if (lit?.type !== "literal" || !lit.values) throw new Unsupported("discriminator");
      const check = this.object(opt._zod.def);
      return lit.values.map((x) => `if (t === ${this.param(x)}) return ${check}(v);`).join("\n");
    });
    return this.fn(`if (typeof v !== "object" || v === null) return false;
const t = v[${JSON.stringify(key)}];
${cases.join("\n")}
return false;`);
  }
}

/** The compiled check of a schema, or undefined when it uses something left to zod. */
function compileCheck(schema: Schema): Check | undefined {
  const g = new Generator();
  let root: string;
  try {
    root = g.expr(schema, "v");
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
  const names = g.params.map((_, i) => `p${i}`);
  try {
    // Generated from the schema's own definition; no input reaches the source.
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- see above
    const make = new Function(
      ...names,
      `"use strict";\n${g.fns.join("\n")}\nreturn function check(v) { return ${root}; };`,
    ) as (...p: unknown[]) => Check;
    return make(...g.params);
  } catch {
    return undefined; // code generation disallowed (--disallow-code-generation-from-strings): zod only
  }
}

export type SafeParse<T> = { success: true; data: T } | { success: false; error: z.ZodError };

/**
 * `safeParse` with a compiled fast path: a value the compiled check accepts is returned as it is
 * (zod would return an equal copy); everything else is parsed by zod. A schema with constructs
 * the compiler does not know is always parsed by zod.
 */
export function compiledSafeParse<S extends z.ZodType>(schema: S): (v: unknown) => SafeParse<z.infer<S>> {
  const fast = compileCheck(schema);
  const slow = (v: unknown): SafeParse<z.infer<S>> => schema.safeParse(v);
  if (!fast) return slow;
  return (v) => (fast(v) ? { success: true, data: v as z.infer<S> } : slow(v));
}

/** Whether the schema compiled to a fast path (for tests). */
export function compiles(schema: z.ZodType): boolean {
  return compileCheck(schema) !== undefined;
}
