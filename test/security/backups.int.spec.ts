import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BACKUP_FORMAT, type BackupMessage, type BackupStream } from "#schemas/replication.js";
import { provision } from "#common/credentials/provision.js";
import { EVT_STREAM, ensureLayout } from "#common/layout.js";
import { main } from "../../cli/main.js";
import { backupWith } from "../../services/replication/src/app/backup.js";
import { restoreLogWith, type RestoreLogOptions } from "../../services/replication/src/app/restore-log.js";
import { encodePayload } from "../../services/replication/src/domain/backup/format.js";
import {
  BackupPayloadInvalidError,
  BackupSignatureInvalidError,
  BackupSignerUntrustedError,
  BackupUnsignedError,
  UnknownStreamInBackupError,
} from "../../services/replication/src/domain/backup/errors.js";
import { BackupWriter } from "../../services/replication/src/infra/backup-file.js";
import {
  hmacSigningKey,
  signingKeyFromSeed,
  type BackupSigningKey,
} from "../../services/replication/src/infra/backup-signing.js";
import { completed, planned, requested, startTestNats, transferred, type TestNats } from "../replication/support.js";

// The attack: a backup file edited by hand (forged history, a stream capturing dwcp.mover.>, a
// max_age that wipes the log) with its digest recomputed was imported. Each refusal below is an
// error that names what was wrong, and the target server is left exactly as it was.

const seed = (): string => new TextDecoder().decode(createUser().getSeed());
const admin = signingKeyFromSeed(seed());
const trust = { alg: "ed25519", publicKey: admin.publicKey } as const;
const sha256 = (s: string): string => createHash("sha256").update(s).digest("hex");

/** Lines of a backup file, without the empty string after the last "\n". */
const linesOf = (file: string): string[] => readFileSync(file, "utf8").split("\n").slice(0, -1);

/** Rewrites a backup's lines and recomputes its trailer's digest, keeping its signature (the attack). */
function forge(file: string, out: string, edit: (lines: string[]) => string[]): void {
  const lines = linesOf(file);
  const trailer = JSON.parse(lines.at(-1) ?? "{}") as Record<string, unknown>;
  const body = edit(lines.slice(0, -1));
  const text = body.map((l) => `${l}\n`).join("");
  writeFileSync(out, `${text}${JSON.stringify({ ...trailer, count: body.length - 1, sha256: sha256(text) })}\n`);
}

/** A backup file written message by message, signed with `key` (or unsigned, version 1). */
async function craft(
  file: string,
  streams: BackupStream[],
  messages: BackupMessage[],
  key: BackupSigningKey | null = admin,
): Promise<string> {
  const w = await BackupWriter.create(
    file,
    { format: BACKUP_FORMAT, createdAt: new Date().toISOString(), streams },
    key ?? undefined,
  );
  for (const m of messages) await w.message(m);
  await w.commit();
  return file;
}

const evtMessage = (
  seq: number,
  id: string,
  payload: unknown,
  subject = `dwcp.evt.migration.${id}`,
): BackupMessage => ({
  stream: EVT_STREAM,
  seq,
  ts: `${Date.now()}000000`,
  subject,
  ...encodePayload(Buffer.from(JSON.stringify(payload))),
});

describe("backups you can trust", () => {
  let src: TestNats;
  const targets: TestNats[] = [];
  let good: string;
  let evtConfig: Record<string, unknown>;

  /** A fresh nats-server with nothing on it: a refused import must leave it so. */
  const fresh = async (): Promise<TestNats> => {
    const t = await startTestNats(false);
    targets.push(t);
    return t;
  };
  const streamNames = async (t: TestNats): Promise<string[]> => {
    const names: string[] = [];
    for await (const n of t.nats.jsm.streams.names()) names.push(n);
    return names;
  };
  const refused = async (t: TestNats, opts: RestoreLogOptions, error: new (...a: never[]) => Error) => {
    const err = await restoreLogWith(t.nats, opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(error);
    expect(await streamNames(t), "nothing was created").toEqual([]);
    return err as Error & { code: string };
  };

  beforeAll(async () => {
    src = await startTestNats(true);
    for (const id of ["m1", "m2"])
      for (const e of [requested(id, `vm-${id}`), planned(id), transferred(id, 0), transferred(id, 1), completed(id)])
        await src.nats.js.publish(`dwcp.evt.migration.${id}`, JSON.stringify(e), {
          msgID: `${id}.${e.type}.${"batch" in e ? e.batch : 0}`,
        });
    good = join(src.dir, "good.backup");
    await backupWith(src.nats, { out: good, key: admin });
    evtConfig = { ...(await src.nats.jsm.streams.info(EVT_STREAM)).config };
  });
  afterAll(async () => Promise.all([src?.stop(), ...targets.map((t) => t.stop())]));

  it("refuses a forged event with a recomputed digest: the signature no longer verifies", async () => {
    const t = await fresh();
    const forged = join(t.dir, "forged.backup");
    // "100 GB completed": the planned size of m1, with the digest made right again.
    forge(good, forged, (lines) =>
      lines.map((l) =>
        l.includes('"type":"MigrationPlanned"') ? l.replace('"totalBytes":2097152', '"totalBytes":1e11') : l,
      ),
    );
    expect(readFileSync(forged, "utf8")).toContain('"totalBytes":1e11');
    const err = await refused(t, { in: forged, trust }, BackupSignatureInvalidError);
    expect(err.code).toBe("BACKUP_SIGNATURE_INVALID");
    expect(err.message).toMatch(/invalid signature .* altered after it was signed; nothing was imported/);

    // Signed again, by the attacker's own key: the file names that key, and it is not trusted.
    const attacker = signingKeyFromSeed(seed());
    const resigned = join(t.dir, "resigned.backup");
    const head = JSON.parse(linesOf(forged)[0] ?? "{}") as { streams: BackupStream[] };
    const msgs = linesOf(forged)
      .slice(1, -1)
      .map((l) => JSON.parse(l) as BackupMessage);
    await craft(resigned, head.streams, msgs, attacker);
    const untrusted = await refused(t, { in: resigned, trust }, BackupSignerUntrustedError);
    expect(untrusted.message).toContain(attacker.publicKey);
    expect(untrusted.message).toContain(`not by the trusted key ${admin.publicKey}`);

    // Or written as an old, unsigned file: refused unless the operator says otherwise.
    const unsigned = await craft(join(t.dir, "unsigned.backup"), head.streams, msgs, null);
    const u = await refused(t, { in: unsigned, trust }, BackupUnsignedError);
    expect(u.message).toMatch(/not signed .* --allow-unsigned/);
  });

  it("refuses a correctly signed backup holding a foreign stream, and names it", async () => {
    const t = await fresh();
    const msgs = linesOf(good)
      .slice(1, -1)
      .map((l) => JSON.parse(l) as BackupMessage);
    const head = JSON.parse(linesOf(good)[0] ?? "{}") as { streams: BackupStream[] };
    const evil: BackupStream = {
      name: "EVIL_RPC",
      config: { name: "EVIL_RPC", subjects: ["dwcp.mover.>"] },
      firstSeq: 1,
      lastSeq: 1,
      messages: 1,
    };
    const rpc = { stream: "EVIL_RPC", seq: 1, ts: "1", subject: "dwcp.mover.b.rpc", json: { op: "finalize" } };
    const file = await craft(join(t.dir, "evil.backup"), [...head.streams, evil], [...msgs, rpc]);
    const err = await refused(t, { in: file, trust }, UnknownStreamInBackupError);
    expect(err.code).toBe("BACKUP_UNKNOWN_STREAM");
    expect(err.message).toContain('holds stream "EVIL_RPC", which is not one of dwcp\'s streams');
  });

  it("ignores the stream configuration in the file: the restored stream has the code's", async () => {
    const t = await fresh();
    const head = JSON.parse(linesOf(good)[0] ?? "{}") as { streams: BackupStream[] };
    const msgs = linesOf(good)
      .slice(1, -1)
      .map((l) => JSON.parse(l) as BackupMessage);
    const hostile = head.streams.map((s) => ({
      ...s,
      config: { ...s.config, max_age: 120_000_000_000, subjects: ["dwcp.evt.>", "dwcp.mover.>"], deny_delete: false },
    }));
    const file = await craft(join(t.dir, "max-age.backup"), hostile, msgs);
    const r = await restoreLogWith(t.nats, { in: file, trust });
    expect(r).toMatchObject({ messages: 10, signature: "signed" });
    const restored = (await t.nats.jsm.streams.info(EVT_STREAM)).config;
    expect(restored.max_age).toBe(0);
    expect(restored.subjects).toEqual(["dwcp.evt.>"]);
    expect(restored).toEqual(evtConfig); // what ensureLayout makes on a fresh server
    // And what ensureLayout would make on this server now: nothing to change.
    await ensureLayout(t.nats.nc, t.nats.jsm, { replicas: 1 });
    expect((await t.nats.jsm.streams.info(EVT_STREAM)).config).toEqual(restored);
  });

  it("refuses an invalid payload, naming its stream and sequence, and writes nothing", async () => {
    const t = await fresh();
    const [evt] = (JSON.parse(linesOf(good)[0] ?? "{}") as { streams: BackupStream[] }).streams;
    const streams = [{ ...(evt as BackupStream), lastSeq: 3, messages: 3 }];
    const junk = "x".repeat(250 * 1024);
    const bad = { ...planned("m9"), batchCount: "many", note: junk };
    const file = await craft(join(t.dir, "payload.backup"), streams, [
      evtMessage(1, "m9", requested("m9", "v9")),
      evtMessage(2, "m9", bad),
      evtMessage(3, "m9", completed("m9")),
    ]);
    const err = await refused(t, { in: file, trust }, BackupPayloadInvalidError);
    expect(err).toMatchObject({ code: "BACKUP_PAYLOAD_INVALID", stream: EVT_STREAM, seq: 2 });
    expect(err.message).toMatch(/DWCP_EVT sequence 2 is invalid \(payload: .*\); nothing was imported/);
    expect(err.message.length).toBeLessThan(600); // the junk is not echoed

    // A junk type, a message on another stream's subject, a payload that is not JSON: each refused.
    for (const [what, m] of [
      ["junk type", evtMessage(2, "m9", { ...completed("m9"), type: junk })],
      ["foreign subject", evtMessage(2, "m9", completed("m9"), "dwcp.mover.b.rpc")],
      ["not JSON", { ...evtMessage(2, "m9", {}), json: undefined, data: Buffer.from("{nope").toString("base64") }],
      ["wrong aggregate", evtMessage(2, "m9", completed("m8"))],
    ] as const) {
      const f = await craft(join(t.dir, "p.backup"), streams, [
        evtMessage(1, "m9", requested("m9", "v9")),
        m,
        evtMessage(3, "m9", completed("m9")),
      ]);
      const e = await refused(t, { in: f, trust }, BackupPayloadInvalidError);
      expect(e.message, what).toContain("DWCP_EVT sequence 2 is invalid");
      expect(e.message.length, what).toBeLessThan(600);
    }
  });

  it("round-trips a good signed backup byte-identically (ed25519 and HMAC)", async () => {
    const t = await fresh();
    const r = await restoreLogWith(t.nats, { in: good, trust });
    expect(r).toMatchObject({
      messages: 10,
      signature: "signed",
      streams: [{ name: EVT_STREAM, firstSeq: 1, lastSeq: 10 }],
    });
    for (let seq = 1; seq <= 10; seq++) {
      const [a, b] = await Promise.all([
        src.nats.jsm.streams.getMessage(EVT_STREAM, { seq }),
        t.nats.jsm.streams.getMessage(EVT_STREAM, { seq }),
      ]);
      if (!a || !b) throw new Error(`sequence ${seq} is missing`);
      expect(b.subject).toBe(a.subject);
      expect(Buffer.from(b.data).equals(Buffer.from(a.data)), `payload ${seq}`).toBe(true);
      expect(b.header.get("Dwcp-Orig-Seq")).toBe(String(seq));
    }
    // A backup of the restored log carries the very same payload lines.
    const again = join(t.dir, "again.backup");
    await backupWith(t.nats, { out: again, key: admin });
    const payload = (l: string): string => l.slice(l.search(/"(json|data)":/));
    expect(linesOf(again).slice(1, -1).map(payload)).toEqual(linesOf(good).slice(1, -1).map(payload));

    // HMAC-SHA256 with a shared secret: the same round trip; another secret is not trusted.
    const secret = randomBytes(32);
    const hmacFile = join(t.dir, "hmac.backup");
    await backupWith(src.nats, { out: hmacFile, key: hmacSigningKey(secret) });
    const u = await fresh();
    const other = await refused(
      u,
      { in: hmacFile, trust: { alg: "hmac-sha256", secret: randomBytes(32) } },
      BackupSignerUntrustedError,
    );
    expect(other.message).toMatch(/signed by the HMAC secret [0-9a-f]{16}, not by the trusted key/);
    await restoreLogWith(u.nats, { in: hmacFile, trust: { alg: "hmac-sha256", secret } });
    expect((await u.nats.jsm.streams.info(EVT_STREAM)).state.messages).toBe(10);
  });

  it("the CLI signs with the admin key, verifies against trust.json; exit 2 without keys, 1 when refused", async () => {
    const t = await fresh();
    const dir = t.dir;
    // What `dwcp up --data-dir D` provisions: D/creds/admin.nk and D/trust.json naming its public key.
    const p = await provision(dir, { hosts: [] });
    const stderr: string[] = [];
    // These test servers take anonymous plaintext clients: the data dir is for the keys only.
    vi.stubEnv("DWCP_NATS_INSECURE", "on");
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((s) => (stderr.push(String(s)), true));
    const quiet = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    try {
      const file = join(dir, "cli.backup");
      expect(await main(["backup", "--out", file, "--nats", src.server.url])).toBe(2);
      expect(stderr.join("")).toMatch(/backup needs a key to sign with: --sign-key FILE/);
      expect(await main(["backup", "--out", file, "--data-dir", dir, "--nats", src.server.url])).toBe(0);
      const header = JSON.parse(linesOf(file)[0] ?? "{}") as { signer: unknown };
      expect(header.signer).toEqual({ alg: "ed25519", publicKey: p.roles.get("admin")?.publicKey });

      stderr.length = 0;
      expect(await main(["restore-log", "--in", file, "--nats", t.server.url])).toBe(2);
      expect(stderr.join("")).toMatch(/restore-log needs the key your backups are signed with: --trust-key/);
      expect(await main(["restore-log", "--in", file, "--trust-key", "UNOTAKEY", "--nats", t.server.url])).toBe(2);
      const stranger = signingKeyFromSeed(seed()).publicKey;
      stderr.length = 0;
      expect(await main(["restore-log", "--in", file, "--trust-key", stranger, "--nats", t.server.url])).toBe(1);
      expect(stderr.join("")).toContain(`not by the trusted key ${stranger}`);
      expect(await streamNames(t)).toEqual([]);
      expect(await main(["restore-log", "--in", file, "--data-dir", dir, "--nats", t.server.url])).toBe(0);
      expect((await t.nats.jsm.streams.info(EVT_STREAM)).state.messages).toBe(10);

      // An old unsigned file: exit 1 saying what to do; imported only with --allow-unsigned, with a warning.
      const u = await fresh();
      const head = JSON.parse(linesOf(good)[0] ?? "{}") as { streams: BackupStream[] };
      const msgs = linesOf(good)
        .slice(1, -1)
        .map((l) => JSON.parse(l) as BackupMessage);
      const old = await craft(join(u.dir, "v1.backup"), head.streams, msgs, null);
      stderr.length = 0;
      expect(await main(["restore-log", "--in", old, "--data-dir", dir, "--nats", u.server.url])).toBe(1);
      expect(stderr.join("")).toMatch(/is not signed \(format version 1\).*--allow-unsigned/);
      expect(await streamNames(u)).toEqual([]);
      stderr.length = 0;
      expect(await main(["restore-log", "--in", old, "--allow-unsigned", "--nats", u.server.url])).toBe(0);
      expect(stderr.join("")).toMatch(/warning: --allow-unsigned/);
      expect((await u.nats.jsm.streams.info(EVT_STREAM)).state.messages).toBe(10);
    } finally {
      spy.mockRestore();
      vi.unstubAllEnvs();
      quiet.mockRestore();
    }
  });
});
