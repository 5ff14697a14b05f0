export {
  ReliabilityManager,
  defaultReliability,
  type CircuitBreakerOptions,
  type RetryOptions,
  type ScopeOptions,
  type ReliabilityOptions,
  type CircuitStateName,
  type ScopeState,
  type ReliabilityEvent,
  type ExecuteOutcome,
} from './ReliabilityManager.js';
