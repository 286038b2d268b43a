// The coordinator's front door: what the CLI and other services may import.
export { runCoordinator } from "./main.js";
export { Coordinator, type Lifecycle } from "./app/coordinator.js";
export { coordinatorConfig, type CoordinatorConfig } from "./config.js";
