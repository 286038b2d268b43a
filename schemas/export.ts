// Writes one JSON Schema per command, event, work item and RPC message to schemas/json/.
// `--check` fails (exit 1) when a committed file is stale, so CI catches a forgotten export.
import { readFileSync, writeFileSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import * as commands from "./commands.js";
import * as events from "./events.js";
import * as work from "./work.js";
import * as rpc from "./rpc.js";
import * as federation from "./federation.js";
import * as replication from "./replication.js";
import * as vm from "./vm.js";
import * as summary from "./summary.js";
import * as progress from "./progress.js";

const outDir = join(import.meta.dirname, "json");
const check = process.argv.includes("--check");

const entries: Array<[string, z.ZodType]> = [
  ["StartMigration", commands.StartMigration],
  ["CancelMigration", commands.CancelMigration],
  ["SetMigrationOptions", commands.SetMigrationOptions],
  ["MigrationRequested", events.MigrationRequested],
  ["MigrationRejected", events.MigrationRejected],
  ["MigrationPlanned", events.MigrationPlanned],
  ["ChunkBatchTransferred", events.ChunkBatchTransferred],
  ["ChunkBatchFailed", events.ChunkBatchFailed],
  ["ChunkBatchRetried", events.ChunkBatchRetried],
  ["MigrationCompleted", events.MigrationCompleted],
  ["MigrationFailed", events.MigrationFailed],
  ["MigrationCancelled", events.MigrationCancelled],
  ["MigrationOptionsChanged", events.MigrationOptionsChanged],
  ["CommandRejected", events.CommandRejected],
  ["LiveMigrationStarted", events.LiveMigrationStarted],
  ["LiveMigrationProgress", events.LiveMigrationProgress],
  ["LiveMigrationCompleted", events.LiveMigrationCompleted],
  ["LiveMigrationFailed", events.LiveMigrationFailed],
  ["TransferBatch", work.TransferBatch],
  ["LiveMigrate", work.LiveMigrate],
  ["MoverRequest", rpc.MoverRequest],
  ["MoverRegistration", rpc.MoverRegistration],
  ["LiveRequest", rpc.LiveRequest],
  ["LiveReply", rpc.LiveReply],
  ["SiteJoined", federation.SiteJoined],
  ["SiteLeft", federation.SiteLeft],
  ["SiteHealthReported", federation.SiteHealthReported],
  ["VmPlaced", federation.VmPlaced],
  ["VmMoved", federation.VmMoved],
  ["VmRemoved", federation.VmRemoved],
  ["FederationAppend", federation.FederationAppend],
  ["RecordVmMigration", federation.RecordVmMigration],
  ["SnapshotCommitted", replication.SnapshotCommitted],
  ["SnapshotsPruned", replication.SnapshotsPruned],
  ["BackupHeader", replication.BackupHeader],
  ["BackupMessage", replication.BackupMessage],
  ["BackupTrailer", replication.BackupTrailer],
  ["ReplicationManifest", replication.Manifest],
  ["AgentRequest", replication.AgentRequest],
  ["AgentReply", replication.AgentReply],
  ["ReplicationCommand", replication.ReplicationCommand],
  ["ReplicationReply", replication.ReplicationReply],
  ["VmDefinition", vm.VmDefinition],
  ["SnapshotVmDefinition", vm.SnapshotVmDefinition],
  ["MigrationSummary", summary.MigrationSummary],
  ["BatchProgress", progress.BatchProgress],
];

mkdirSync(outDir, { recursive: true });
const stale: string[] = [];
const expected = new Set<string>();
for (const [name, schema] of entries) {
  const file = `${name}.v1.schema.json`;
  expected.add(file);
  const json = { $id: `https://dwcp.dev/schemas/${file}`, title: name, ...z.toJSONSchema(schema, { io: "input" }) };
  const text = JSON.stringify(json, null, 2) + "\n";
  const path = join(outDir, file);
  if (check) {
    let current = "";
    try {
      current = readFileSync(path, "utf8");
    } catch {
      /* missing counts as stale */
    }
    if (current !== text) stale.push(file);
  } else {
    writeFileSync(path, text);
  }
}
for (const file of readdirSync(outDir)) if (!expected.has(file)) stale.push(`${file} (no longer exported)`);
if (check && stale.length > 0) {
  process.stderr.write(`schemas/json is stale; run \`npm run schemas\` and commit:\n  ${stale.join("\n  ")}\n`);
  process.exit(1);
}
process.stdout.write(check ? "schemas/json is fresh\n" : `wrote ${entries.length} JSON Schemas to schemas/json/\n`);
