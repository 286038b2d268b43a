// The mover's public surface: what the CLI and other code outside services/mover import (as
// `#mover`). Everything else under src/ is the mover's own; tests and benches may reach it.
export { runMover } from "./main.js";
export { moverConfig, type MoverConfig, type MoverFlags } from "./config.js";
export {
  AuthFailedError,
  ChecksumMismatchError,
  DestinationUnreachableError,
  DestinationWriteError,
  NoSpaceError,
  PathNotFoundError,
  PathOutsideRootError,
  ProtocolError,
  RemoteFailureError,
  SourceChangedError,
  SourceReadError,
  TransferAbortedError,
} from "./errors.js";
export { adoptVm, listVms, parseDefinition, startVm, stopVm, VmError, type VmStatus } from "./infra/vm/runner.js";
export { readRecord as readVmRecord, type VmRecord } from "./infra/vm/runner.js";
export {
  blockNode,
  blockNodes,
  clearFleeceLeftovers,
  openFleeceView,
  removeBitmap,
  restoreBitmap,
  type DirtyBitmap,
  type FleeceDisk,
  type FleeceView,
} from "./infra/vm/fleece.js";
export { QmpClient, QmpError } from "./infra/vm/qmp.js";
