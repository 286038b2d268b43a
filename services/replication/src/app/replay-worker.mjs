// Entry of a replay partition's worker thread (replay.ts). Plain JavaScript because a worker does
// not inherit tsx's loader: register it, then run the typed worker.
import { register } from "tsx/esm/api";

register();
await import("./replay-worker.ts");
