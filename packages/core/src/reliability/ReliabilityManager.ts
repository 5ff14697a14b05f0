import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  IsolatedCircuitError,
  TaskCancelledError,
  TimeoutStrategy,
  circuitBreaker,
  halfJitterGenerator,
  handleWhen,
  noJitterGenerator,
  retry,
  timeout,
  wrap,
  type CircuitBreakerPolicy,
  type IDisposable,
  type IPolicy,
  type RetryPolicy,
} from 'cockatiel';
import { BcastError } from '../errors/BcastError.js';
import { ErrorClassifier } from '../errors/classify.js';
import { ErrorCode } from '../errors/codes.js';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. @default 5 */
  failureThreshold?: number;
  /** How long the circuit stays open before a trial call may run (half-open). @default 30_000 */
  recoveryTimeoutMs?: number;
}

export interface RetryOptions {
  /** Retries after the first attempt; 0 disables retry. @default 3 */
  maxRetries?: number;
  /** Delay before the first retry; doubles each time. @default 1_000 */
  baseDelayMs?: number;
  /** Upper bound of any delay. @default 10_000 */
  maxDelayMs?: number;
  /** Randomise each delay within [delay/2, delay] so that clients don't retry in lockstep. @default true */
  jitter?: boolean;
}

export interface ScopeOptions {
  circuitBreaker?: CircuitBreakerOptions;
  retry?: RetryOptions;
  /** Deadline of one attempt; `undefined` for none. @default undefined */
  timeoutMs?: number | undefined;
  /** Which failures are retried. @default the classifier's `transient` errors */
  retryWhen?: ((error: unknown) => boolean) | undefined;
  /** Which failures count against the circuit. @default everything but caller errors and open circuits */
  failureWhen?: ((error: unknown) => boolean) | undefined;
}

export interface ReliabilityOptions extends ScopeOptions {
  /** Per-scope overrides, merged over the defaults above (e.g. `{ backplane: { timeoutMs: 250 } }`). */
  scopes?: Readonly<Record<string, ScopeOptions>>;
  /** Decides which errors are retried (transient) and which count against a circuit (not caller errors). */
  classifier?: ErrorClassifier;
}

export type CircuitStateName = 'closed' | 'open' | 'half-open' | 'isolated';

export interface ScopeState {
  readonly state: CircuitStateName;
  /** Consecutive failures counted so far in the closed state. */
  readonly consecutiveFailures: number;
  readonly opens: number;
  readonly lastTransitionAt: number | undefined;
  readonly lastError: string | undefined;
}

export type ReliabilityEvent =
  | { type: 'retry'; scope: string; attempt: number; delayMs: number; error: unknown }
  | { type: 'circuit'; scope: string; from: CircuitStateName; to: CircuitStateName; error?: unknown }
  | { type: 'give-up'; scope: string; error: unknown };

export interface ExecuteOutcome<T> {
  readonly value: T;
  readonly attempts: number;
}

/** Failure raised by {@link ReliabilityManager.execute}, with the number of attempts it made. */
export interface AttemptsCarrier {
  attempts?: number;
}

interface ResolvedScope {
  readonly failureThreshold: number;
  readonly recoveryTimeoutMs: number;
  readonly maxRetries: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly jitter: boolean;
  readonly timeoutMs: number | undefined;
}

interface Scope {
  readonly name: string;
  readonly config: ResolvedScope;
  readonly breaker: CircuitBreakerPolicy;
  readonly retry: RetryPolicy;
  readonly policy: IPolicy;
  readonly listeners: IDisposable[];
  state: CircuitStateName;
  consecutiveFailures: number;
  opens: number;
  lastTransitionAt: number | undefined;
  lastError: string | undefined;
}

const stateNames: Record<CircuitState, CircuitStateName> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Isolated]: 'isolated',
};

/** The seed's defaults: breaker 5 failures / 30 s; retry 3 times from 1 s, capped at 10 s. */
export const defaultReliability: ResolvedScope = Object.freeze({
  failureThreshold: 5,
  recoveryTimeoutMs: 30_000,
  maxRetries: 3,
  baseDelayMs: 1_000,
  maxDelayMs: 10_000,
  jitter: true,
  timeoutMs: undefined,
});

/**
 * Circuit breakers and retries per named scope, on cockatiel.
 *
 * Composition per scope: retry( breaker( timeout( fn ) ) ). The breaker sees every wire attempt, so
 * it opens after `failureThreshold` attempts rather than that many exhausted retry chains; a call
 * refused by an open circuit is never retried. Only errors the classifier calls `transient` are
 * retried; caller errors neither retry nor count against the circuit.
 */
export class ReliabilityManager {
  readonly #options: ReliabilityOptions;
  readonly #classifier: ErrorClassifier;
  readonly #scopes = new Map<string, Scope>();
  readonly #listeners = new Set<(event: ReliabilityEvent) => void>();

  constructor(options: ReliabilityOptions = {}) {
    this.#options = options;
    this.#classifier = options.classifier ?? new ErrorClassifier();
    validateScope('reliability', resolveScope(options, undefined));
    for (const [name, scope] of Object.entries(options.scopes ?? {})) {
      validateScope(`reliability.scopes.${name}`, resolveScope(options, scope));
    }
  }

  /** Resolved settings of a scope (defaults, then top-level options, then the scope's overrides). */
  configOf(scope: string): Readonly<ResolvedScope> {
    return this.#scope(scope).config;
  }

  /** Subscribe to retries, give-ups and circuit transitions. Returns an unsubscribe function. */
  onEvent(listener: (event: ReliabilityEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Runs `fn` under the scope's policies. Resolves with its value and the attempts made; rejects with
   * the last error, or a `BCAST_CIRCUIT_OPEN` / `BCAST_TIMEOUT` BcastError, carrying `attempts`.
   */
  async execute<T>(scopeName: string, fn: (attempt: { attempt: number; signal: AbortSignal }) => Promise<T> | T): Promise<ExecuteOutcome<T>> {
    const scope = this.#scope(scopeName);
    let attempts = 0;
    try {
      // A fresh signal per call: cockatiel's shared default signal would collect one abort
      // listener per concurrent timed call (MaxListenersExceededWarning under load).
      const value = await scope.policy.execute(async ({ signal }) => {
        attempts += 1;
        return fn({ attempt: attempts, signal });
      }, new AbortController().signal);
      return { value, attempts };
    } catch (error) {
      const converted = convertPolicyError(scopeName, scope.config, error);
      (converted as AttemptsCarrier).attempts = attempts;
      throw converted;
    }
  }

  /** State of every scope used so far. */
  getState(): Record<string, ScopeState> {
    const out: Record<string, ScopeState> = {};
    for (const scope of this.#scopes.values()) out[scope.name] = this.stateOf(scope.name);
    return out;
  }

  stateOf(scopeName: string): ScopeState {
    const scope = this.#scope(scopeName);
    return {
      state: scope.state,
      consecutiveFailures: scope.consecutiveFailures,
      opens: scope.opens,
      lastTransitionAt: scope.lastTransitionAt,
      lastError: scope.lastError,
    };
  }

  /** Holds a scope's circuit open until the returned function is called. */
  isolate(scopeName: string): () => void {
    const handle = this.#scope(scopeName).breaker.isolate();
    return () => handle.dispose();
  }

  /** Removes every listener; the manager can still be used, with fresh scopes. */
  dispose(): void {
    for (const scope of this.#scopes.values()) for (const l of scope.listeners) l.dispose();
    this.#scopes.clear();
    this.#listeners.clear();
  }

  #emit(event: ReliabilityEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // a listener must never break a call
      }
    }
  }

  #scope(name: string): Scope {
    const existing = this.#scopes.get(name);
    if (existing) return existing;
    const overrides = this.#options.scopes?.[name];
    const config = resolveScope(this.#options, overrides);
    const classifier = this.#classifier;
    const retryWhen = overrides?.retryWhen ?? this.#options.retryWhen ?? ((error: unknown) => classifier.classify(error) === 'transient');
    const failureWhen =
      overrides?.failureWhen ??
      this.#options.failureWhen ??
      ((error: unknown) => {
        const category = classifier.classify(error);
        return category !== 'caller' && category !== 'circuit-open';
      });
    const breaker = circuitBreaker(
      handleWhen((error) => failureWhen(convertPolicyError(name, config, error))),
      { halfOpenAfter: config.recoveryTimeoutMs, breaker: new ConsecutiveBreaker(config.failureThreshold) },
    );
    const retryPolicy = retry(
      handleWhen((error) => {
        const category = classifier.classify(error);
        return category !== 'circuit-open' && category !== 'caller' && retryWhen(convertPolicyError(name, config, error));
      }),
      {
        maxAttempts: config.maxRetries,
        backoff: new ExponentialBackoff({
          initialDelay: config.baseDelayMs,
          maxDelay: config.maxDelayMs,
          generator: config.jitter ? halfJitterGenerator : noJitterGenerator,
        }),
      },
    );
    const policies: IPolicy[] = [retryPolicy, breaker];
    if (config.timeoutMs !== undefined) policies.push(timeout(config.timeoutMs, { strategy: TimeoutStrategy.Aggressive, abortOnReturn: false }));
    const scope: Scope = {
      name,
      config,
      breaker,
      retry: retryPolicy,
      policy: wrap(...policies),
      listeners: [],
      state: 'closed',
      consecutiveFailures: 0,
      opens: 0,
      lastTransitionAt: undefined,
      lastError: undefined,
    };
    scope.listeners.push(
      breaker.onStateChange((next) => {
        const from = scope.state;
        const to = stateNames[next];
        if (from === to) return;
        scope.state = to;
        scope.lastTransitionAt = Date.now();
        if (to === 'open') scope.opens += 1;
        if (to === 'closed') scope.consecutiveFailures = 0;
        this.#emit({ type: 'circuit', scope: name, from, to });
      }),
      breaker.onFailure(({ reason }) => {
        if ('error' in reason) {
          scope.consecutiveFailures += 1;
          scope.lastError = describe(reason.error);
        }
      }),
      breaker.onSuccess(() => {
        scope.consecutiveFailures = 0;
      }),
      retryPolicy.onRetry((event) => {
        if ('error' in event) {
          this.#emit({ type: 'retry', scope: name, attempt: event.attempt, delayMs: event.delay, error: event.error });
        }
      }),
      retryPolicy.onGiveUp((reason) => {
        if ('error' in reason) this.#emit({ type: 'give-up', scope: name, error: reason.error });
      }),
    );
    this.#scopes.set(name, scope);
    return scope;
  }
}

function resolveScope(options: ScopeOptions, scope: ScopeOptions | undefined): ResolvedScope {
  const d = defaultReliability;
  return {
    failureThreshold: scope?.circuitBreaker?.failureThreshold ?? options.circuitBreaker?.failureThreshold ?? d.failureThreshold,
    recoveryTimeoutMs: scope?.circuitBreaker?.recoveryTimeoutMs ?? options.circuitBreaker?.recoveryTimeoutMs ?? d.recoveryTimeoutMs,
    maxRetries: scope?.retry?.maxRetries ?? options.retry?.maxRetries ?? d.maxRetries,
    baseDelayMs: scope?.retry?.baseDelayMs ?? options.retry?.baseDelayMs ?? d.baseDelayMs,
    maxDelayMs: scope?.retry?.maxDelayMs ?? options.retry?.maxDelayMs ?? d.maxDelayMs,
    jitter: scope?.retry?.jitter ?? options.retry?.jitter ?? d.jitter,
    timeoutMs: scope && 'timeoutMs' in scope ? scope.timeoutMs : options.timeoutMs,
  };
}

function validateScope(where: string, s: ResolvedScope): void {
  const checks: Array<[string, number | undefined, number]> = [
    ['circuitBreaker.failureThreshold', s.failureThreshold, 1],
    ['circuitBreaker.recoveryTimeoutMs', s.recoveryTimeoutMs, 0],
    ['retry.maxRetries', s.maxRetries, 0],
    ['retry.baseDelayMs', s.baseDelayMs, 0],
    ['retry.maxDelayMs', s.maxDelayMs, 0],
    ['timeoutMs', s.timeoutMs, 1],
  ];
  for (const [name, value, min] of checks) {
    if (value === undefined && name === 'timeoutMs') continue;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      throw new BcastError(ErrorCode.InvalidOption, `${where}.${name} must be a number >= ${min}, got ${String(value)}`, {
        details: { option: `${where}.${name}`, value },
      });
    }
  }
  if (s.maxDelayMs < s.baseDelayMs) {
    throw new BcastError(ErrorCode.InvalidOption, `${where}.retry.maxDelayMs must be >= retry.baseDelayMs`, {
      details: { option: `${where}.retry.maxDelayMs`, value: s.maxDelayMs },
    });
  }
}

function convertPolicyError(scopeName: string, config: ResolvedScope, error: unknown): unknown {
  if (error instanceof IsolatedCircuitError) {
    return new BcastError(ErrorCode.CircuitIsolated, `circuit "${scopeName}" is isolated`, { cause: error, details: { scope: scopeName } });
  }
  if (error instanceof BrokenCircuitError) {
    return new BcastError(ErrorCode.CircuitOpen, `circuit "${scopeName}" is open after ${config.failureThreshold} consecutive failures`, {
      cause: error,
      details: { scope: scopeName },
    });
  }
  if (error instanceof TaskCancelledError) {
    return new BcastError(ErrorCode.Timeout, `"${scopeName}" did not finish within ${String(config.timeoutMs)} ms`, {
      cause: error,
      details: { scope: scopeName, timeoutMs: config.timeoutMs },
    });
  }
  return error;
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
