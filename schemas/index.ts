export * from "./common.js";
export * from "./commands.js";
export * from "./events.js";
export * from "./work.js";
export * from "./rpc.js";
export * from "./federation.js";
export * from "./replication.js";
export * from "./summary.js";
