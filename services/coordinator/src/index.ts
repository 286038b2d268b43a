// The coordinator's front door: what the CLI and other services may import.
export { runCoordinator } from "./main.js";
export { Coordinator } from "./app/coordinator.js";
export type { Lifecycle } from "#common/lifecycle.js";
export { coordinatorConfig, type CoordinatorConfig } from "./config.js";
