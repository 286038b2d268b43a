import { z } from "zod";

/**
 * The one rule for VM names, shared by migrations and replication (commands, events, CLI flags,
 * the replication service): a VM name becomes a NATS subject token (`dwcp.evt.replication.<vm>`),
 * so `*`, `>`, `.`, spaces and other token characters are refused, as is anything that is not
 * 1-64 characters of A-Z a-z 0-9 _ -.
 */
export const VM_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export const VmName = z
  .string()
  .regex(VM_NAME_PATTERN, "VM names are 1-64 characters of A-Z a-z 0-9 _ - (no NATS wildcards or dots)");

/** Why `name` is not a VM name, or undefined if it is one. */
export function vmNameProblem(name: string): string | undefined {
  return VM_NAME_PATTERN.test(name)
    ? undefined
    : `VM name ${JSON.stringify(name.slice(0, 80))} must be 1-64 characters of A-Z a-z 0-9 _ - ` +
        "(no NATS wildcards or dots)";
}
