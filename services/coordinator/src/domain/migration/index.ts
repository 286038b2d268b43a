// The migration read model: the pure state, fold and plan geometry that the CLI, the replay view
// and the tests use to read a migration from its events. Deciding stays inside the coordinator.
export {
  allBatchesDone,
  emptyTotals,
  initialMigration,
  isTerminal,
  SET_ASIDE,
  setAside,
  TERMINAL,
  type BatchState,
  type BatchStatus,
  type IgnoredInput,
  type Migration,
  type MigrationStatus,
  type Totals,
} from "./state.js";
export { evolve, fold, invalidEventMessage } from "./evolve.js";
export { basename, batchRange, type BatchRange, type Plan, type VolumeSize } from "./planner.js";
export {
  evolveInvalid,
  evolveTrusted,
  foldTrusted,
  type InvalidInput,
  refusal,
  IGNORED_KEPT,
  type ProducedEvent,
  type Producer,
} from "./producers.js";
export { isListed, summaryOf, type FoldedPosition } from "./summary.js";
