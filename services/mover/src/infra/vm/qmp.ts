import { connect, type Socket } from "node:net";
import { z } from "zod";
import { DwcpError } from "#common/errors.js";

// A small typed QMP client (QEMU Machine Protocol, JSON lines over a unix socket): the greeting,
// capability negotiation, commands with ids and their typed returns, and asynchronous events.
// Every command dwcp sends is in QmpCommands with a zod schema for what QEMU returns.

/** QEMU answered a command with an error, or the connection failed or closed. */
export class QmpError extends DwcpError {
  readonly code = "QMP_ERROR";
  readonly retryable = false;
  /** QEMU's error class (GenericError, CommandNotFound, ...), when QEMU gave one. */
  readonly errorClass: string | undefined;
  constructor(message: string, options?: { cause?: unknown; errorClass?: string }) {
    super(message, options);
    this.errorClass = options?.errorClass;
  }
}

const Empty = z.object({}).loose();
const RunState = z.object({ status: z.string().max(64), running: z.boolean() }).loose();
const BlockInfo = z.array(
  z
    .object({ device: z.string().max(256), qdev: z.string().max(256).optional(), inserted: z.unknown().optional() })
    .loose(),
);

/** The commands dwcp sends, their arguments and the schema of their return value. */
export const QmpCommands = {
  qmp_capabilities: Empty,
  "query-status": RunState,
  "query-block": BlockInfo,
  stop: Empty,
  cont: Empty,
  quit: Empty,
  system_powerdown: Empty,
} as const;
export type QmpCommand = keyof typeof QmpCommands;
export type QmpReturn<C extends QmpCommand> = z.infer<(typeof QmpCommands)[C]>;

/** An asynchronous event (STOP, RESUME, SHUTDOWN, ...). */
export const QmpEvent = z.object({
  event: z.string().max(128),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.object({ seconds: z.number(), microseconds: z.number() }),
});
export type QmpEvent = z.infer<typeof QmpEvent>;

const Reply = z.union([
  z.object({ return: z.unknown(), id: z.number().optional() }),
  z.object({
    error: z.object({ class: z.string().max(128), desc: z.string().max(4096) }),
    id: z.number().optional(),
  }),
]);
const Greeting = z.object({ QMP: z.object({ version: z.unknown(), capabilities: z.array(z.unknown()) }) });

/** Longest line QEMU may send before the connection is dropped (a reply or an event). */
const MAX_LINE = 4 * 1024 * 1024;

export class QmpClient {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  private nextId = 1;
  private buffered = "";
  private closedWith: Error | undefined;
  private greeted: ((ok: boolean) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => this.onData(d));
    socket.on("error", (err) => this.fail(new QmpError(`QMP connection: ${err.message}`, { cause: err })));
    socket.on("close", () => this.fail(new QmpError("QMP connection closed")));
  }

  /** Connects to QEMU's QMP socket, reads the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => s.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (err) => {
        clearTimeout(timer);
        reject(new QmpError(`cannot connect to QMP at ${path}: ${err.message}`, { cause: err }));
      });
    });
    const client = new QmpClient(socket);
    const greeted = await new Promise<boolean>((resolve) => {
      client.greeted = resolve;
      setTimeout(() => resolve(false), timeoutMs).unref();
    });
    if (!greeted) {
      socket.destroy();
      throw new QmpError(`no QMP greeting at ${path} within ${timeoutMs} ms`);
    }
    await client.execute("qmp_capabilities");
    return client;
  }

  /** Sends `command` and resolves with its return value, checked against its schema. */
  async execute<C extends QmpCommand>(command: C, args?: Record<string, unknown>): Promise<QmpReturn<C>> {
    if (this.closedWith) throw this.closedWith;
    const id = this.nextId++;
    const reply = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    const value = await reply;
    const parsed = QmpCommands[command].safeParse(value);
    if (!parsed.success) throw new QmpError(`QMP ${command} returned an unexpected value: ${parsed.error.message}`);
    return parsed.data as QmpReturn<C>;
  }

  /**
   * Sends a command outside QmpCommands (a module's own typed block: qmp-live.ts, fleece.ts)
   * and checks its return against `schema`.
   */
  async executeAs<T>(command: string, schema: z.ZodType<T>, args?: Record<string, unknown>): Promise<T> {
    if (this.closedWith) throw this.closedWith;
    const id = this.nextId++;
    const reply = new Promise<unknown>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    const parsed = schema.safeParse(await reply);
    if (!parsed.success) throw new QmpError(`QMP ${command} returned an unexpected value: ${parsed.error.message}`);
    return parsed.data;
  }

  /** Calls `fn` with every event until the returned function is called. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Resolves with the first event named `name` (and matching `where`), or rejects after `timeoutMs`. */
  waitEvent(name: string, timeoutMs: number, where: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new QmpError(`no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (e.event !== name || !where(e)) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }

  /** Resolves once QEMU has closed the connection (it exits after `quit`). */
  closed(): Promise<void> {
    if (this.closedWith) return Promise.resolve();
    return new Promise((resolve) => this.socket.once("close", () => resolve()));
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    if (this.buffered.length > MAX_LINE && !this.buffered.includes("\n")) {
      this.socket.destroy(new Error(`a QMP line longer than ${MAX_LINE} characters`));
      return;
    }
    let nl: number;
    while ((nl = this.buffered.indexOf("\n")) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line !== "") this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.socket.destroy(new Error(`QMP sent a line that is not JSON: ${line.slice(0, 80)}`));
      return;
    }
    if (this.greeted !== undefined) {
      const ok = Greeting.safeParse(msg).success;
      this.greeted(ok);
      this.greeted = undefined;
      return;
    }
    const event = QmpEvent.safeParse(msg);
    if (event.success) {
      for (const l of [...this.listeners]) l(event.data);
      return;
    }
    const reply = Reply.safeParse(msg);
    if (!reply.success || reply.data.id === undefined) return;
    const p = this.pending.get(reply.data.id);
    if (p === undefined) return;
    this.pending.delete(reply.data.id);
    if ("error" in reply.data)
      p.reject(
        new QmpError(`QMP: ${reply.data.error.class}: ${reply.data.error.desc}`, {
          errorClass: reply.data.error.class,
        }),
      );
    else p.resolve(reply.data.return);
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    this.greeted?.(false);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
