export { ExecutionMonitor, type MonitorOptions, type MonitorStats, type OperationStats, type Outcome } from './ExecutionMonitor.js';
