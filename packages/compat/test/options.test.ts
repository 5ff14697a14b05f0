// Construction: the only place compat throws (BCAST_INVALID_OPTION), the options it accepts (the
// core's BroadcasterOptions, an existing broadcaster, the seed's reliability shape) and how the
// ConnectionManager and the BroadcastManager share one Broadcaster.
import { Broadcaster, ErrorCode, isBcastError, type BroadcasterOptions } from '@bcast/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BroadcastManager, ConnectionManager, RoomManager, type CompatOptions } from '../src/index.js';
import { recordingLogger } from './helpers.js';

// What compat hands to the core: the options each Broadcaster is constructed with (the core's
// reliability and limits are its own business, not readable from outside).
const given = vi.hoisted(() => new WeakMap<object, unknown>());
vi.mock('@bcast/core', async (importOriginal) => {
  const core = await importOriginal<typeof import('@bcast/core')>();
  class Broadcaster extends core.Broadcaster {
    constructor(options?: BroadcasterOptions) {
      super(options);
      given.set(this, options);
    }
  }
  return { ...core, Broadcaster };
});
const optionsOf = (b: Broadcaster): BroadcasterOptions => given.get(b) as BroadcasterOptions;

const quiet = { warn: () => {}, error: () => {} };
const made: Array<{ dispose(): Promise<void> }> = [];
const track = <T extends { dispose(): Promise<void> }>(value: T): T => (made.push(value), value);
afterEach(async () => {
  for (const m of made.splice(0)) await m.dispose();
});

function invalidOption(fn: () => unknown): string {
  try {
    track(fn() as { dispose(): Promise<void> });
  } catch (error) {
    if (isBcastError(error, ErrorCode.InvalidOption)) return error.message;
    throw error;
  }
  throw new Error('did not throw');
}

const manager = (options?: CompatOptions) => track(new BroadcastManager(new ConnectionManager(), undefined, { logger: quiet, ...options }));
const reliabilityOf = (m: BroadcastManager) => optionsOf(m.broadcaster).reliability;

describe('construction', () => {
  it('works with no options, a RoomManager or null for the optional arguments', () => {
    const connections = new ConnectionManager();
    const rooms = new RoomManager(connections);
    const m = track(new BroadcastManager(connections, rooms));
    expect(m.rooms).toBe(rooms);
    expect(m.broadcaster).toBe(connections.broadcaster);
    expect(track(new BroadcastManager(new ConnectionManager(), null, null)).rooms).toBeInstanceOf(RoomManager);
    // No reliability option: the core's defaults (those of the seed: 5 failures, 30 s, 3 retries from 1 s to 10 s).
    expect(reliabilityOf(m)).toBeUndefined();
  });

  it.each([
    ['a first argument that is not a ConnectionManager', () => new BroadcastManager({} as ConnectionManager)],
    ['rooms that are not a RoomManager', () => new BroadcastManager(new ConnectionManager(), {} as RoomManager)],
    ['rooms of another ConnectionManager', () => new BroadcastManager(new ConnectionManager(), new RoomManager(new ConnectionManager()))],
    ['a RoomManager without a ConnectionManager', () => new RoomManager(undefined as unknown as ConnectionManager)],
    ['options that are not an object', () => new BroadcastManager(new ConnectionManager(), undefined, 5 as CompatOptions)],
    ['an unknown errorMode', () => manager({ errorMode: 'throw' as 'reject' })],
    ['a reserved socket.io event', () => new ConnectionManager({ socketIo: { event: 'disconnect' } })],
    ['an unknown socket.io payload', () => new ConnectionManager({ socketIo: { payload: 'xml' as 'json' } })],
    ['a broadcaster that is not one', () => manager({ broadcaster: {} as Broadcaster })],
    ['a logger without warn', () => new ConnectionManager({ logger: { error: () => {} } as unknown as Console })],
    ['a negative maxMessageBytes (core validation)', () => manager({ maxMessageBytes: -1 })],
    ['a core reliability option out of range', () => manager({ reliability: { retry: { maxRetries: -1 } } })],
  ])('throws BCAST_INVALID_OPTION for %s', (_name, fn) => {
    expect(invalidOption(fn)).toEqual(expect.any(String));
  });

  it('refuses a broadcaster together with options it would ignore, and says which', () => {
    const broadcaster = new Broadcaster({ logger: quiet });
    made.push(broadcaster);
    expect(invalidOption(() => new ConnectionManager({ broadcaster, maxMessageBytes: 10 }))).toMatch(/maxMessageBytes would be ignored/);
  });
});

describe("the seed's reliability config (seconds) maps to the core's (milliseconds)", () => {
  const legacy = { circuit_breaker: { failure_threshold: 3, recovery_timeout: 2.5 }, retry: { max_retries: 1, base_delay: 0.1, max_delay: 0.5 } };
  const expected = { circuitBreaker: { failureThreshold: 3, recoveryTimeoutMs: 2_500 }, retry: { maxRetries: 1, baseDelayMs: 100, maxDelayMs: 500 } };

  it('as `reliability`', () => {
    expect(reliabilityOf(manager({ reliability: legacy }))).toEqual(expected);
  });

  it('at the top level, and partially (the rest keeps the defaults)', () => {
    expect(reliabilityOf(manager(legacy))).toEqual(expected);
    expect(reliabilityOf(manager({ retry: { max_retries: 0 } }))).toEqual({ retry: { maxRetries: 0 } });
  });

  it("passes the core's own shape through", () => {
    const core = { circuitBreaker: { failureThreshold: 2, recoveryTimeoutMs: 10 } };
    expect(reliabilityOf(manager({ reliability: core }))).toEqual(core);
  });

  it.each([
    ['failure_threshold 0', { circuit_breaker: { failure_threshold: 0 } }, /failure_threshold must be a whole number >= 1, got 0/],
    ['failure_threshold 2.5', { circuit_breaker: { failure_threshold: 2.5 } }, /failure_threshold/],
    ['failure_threshold "5"', { circuit_breaker: { failure_threshold: '5' } }, /failure_threshold/],
    ['recovery_timeout -1', { circuit_breaker: { recovery_timeout: -1 } }, /recovery_timeout must be a number of seconds >= 0/],
    ['recovery_timeout NaN', { circuit_breaker: { recovery_timeout: Number.NaN } }, /recovery_timeout/],
    ['max_retries -1', { retry: { max_retries: -1 } }, /max_retries/],
    ['base_delay "1s"', { retry: { base_delay: '1s' } }, /base_delay/],
    ['max_delay below base_delay', { retry: { base_delay: 5, max_delay: 1 } }, /max_delay \(1 s\) must not be smaller than retry.base_delay \(5 s\)/],
    ['max_delay below the default base_delay', { retry: { max_delay: 0.5 } }, /max_delay/],
    ['a section that is not an object', { circuit_breaker: 5 }, /circuit_breaker must be an object/],
  ])('refuses %s', (_name, reliability, message) => {
    expect(invalidOption(() => manager({ reliability } as CompatOptions))).toMatch(message);
  });

  it('refuses both places at once, and a mix of both shapes', () => {
    expect(invalidOption(() => manager({ reliability: legacy, retry: { max_retries: 1 } }))).toMatch(/given twice/);
    expect(invalidOption(() => manager({ reliability: { circuit_breaker: { failure_threshold: 2 }, timeoutMs: 100 } as NonNullable<CompatOptions['reliability']> }))).toMatch(/mixes/);
    expect(invalidOption(() => manager({ reliability: { retry: { max_retries: 2, baseDelayMs: 5 } } as NonNullable<CompatOptions['reliability']> }))).toMatch(/retry\.baseDelayMs/);
  });

  it('warns about settings it does not know instead of failing', () => {
    const logger = recordingLogger();
    const m = manager({ logger, reliability: { circuit_breaker: { failure_threshold: 4, enabled: true } } as NonNullable<CompatOptions['reliability']> });
    expect(reliabilityOf(m)).toEqual({ circuitBreaker: { failureThreshold: 4 } });
    expect(logger.lines.join('\n')).toMatch(/ignoring unknown setting\(s\) enabled/);
  });
});

describe('one Broadcaster per ConnectionManager', () => {
  it('the BroadcastManager options configure the Broadcaster of a fresh ConnectionManager', () => {
    const connections = new ConnectionManager();
    const m = track(new BroadcastManager(connections, undefined, { maxMessageBytes: 100, logger: quiet }));
    expect(optionsOf(connections.broadcaster)).toMatchObject({ maxMessageBytes: 100 });
    expect(m.broadcaster).toBe(connections.broadcaster);
  });

  it('the options reach the Broadcaster: a limit given to the BroadcastManager is enforced', async () => {
    const connections = new ConnectionManager();
    const m = track(new BroadcastManager(connections, undefined, { maxMessageBytes: 100, logger: quiet }));
    const socket = { readyState: 1, send: vi.fn() };
    connections.connect('u', socket);
    expect(await m.broadcastToAll('x'.repeat(100))).toMatchObject({ successful: 1 });
    expect(await m.broadcastToAll('x'.repeat(101))).toMatchObject({ successful: 0, failed: 1, error: ErrorCode.MessageTooLarge });
    expect(socket.send).toHaveBeenCalledTimes(1);
  });

  it('or the ConnectionManager options; then both cannot configure it', () => {
    const connections = track(new ConnectionManager({ maxMessageBytes: 100, logger: quiet }));
    expect(invalidOption(() => new BroadcastManager(connections, undefined, { maxMessageBytes: 200 }))).toMatch(/was given its own Broadcaster options/);
    const m = track(new BroadcastManager(connections, undefined, { errorMode: 'reject' }));
    expect(m.broadcaster).toBe(connections.broadcaster);
    expect(optionsOf(m.broadcaster)).toMatchObject({ maxMessageBytes: 100 });
  });

  it('a Broadcaster already started cannot be reconfigured (an adapter may hold it already)', () => {
    const used = track(new ConnectionManager({ logger: quiet }));
    used.connect('u', { readyState: 1, send: () => {} });
    expect(invalidOption(() => new BroadcastManager(used, undefined, { maxMessageBytes: 200 }))).toMatch(/already started its Broadcaster/);
    const handedOut = track(new ConnectionManager({ logger: quiet }));
    const broadcaster = handedOut.broadcaster; // e.g. given to attachToServer
    expect(invalidOption(() => new BroadcastManager(handedOut, undefined, { maxMessageBytes: 200 }))).toMatch(/already started/);
    expect(broadcaster.isDisposed).toBe(false);
    // Settings that are not Broadcaster options are still fine.
    expect(track(new BroadcastManager(handedOut, undefined, { errorMode: 'reject', logger: quiet })).broadcaster).toBe(broadcaster);
  });

  it('runs on a Broadcaster the options supply, and leaves disposing it to its owner', async () => {
    const broadcaster = new Broadcaster({ logger: quiet });
    const connections = new ConnectionManager({ broadcaster });
    const m = new BroadcastManager(connections, undefined, { broadcaster });
    expect(m.broadcaster).toBe(broadcaster);
    expect(invalidOption(() => new BroadcastManager(connections, undefined, { broadcaster: new Broadcaster({ logger: quiet }) }))).toMatch(/own Broadcaster options/);
    await m.dispose();
    expect(broadcaster.isDisposed).toBe(false);
    await broadcaster.dispose();

    const viaManager = new BroadcastManager(new ConnectionManager(), undefined, { broadcaster: (made.push(new Broadcaster({ logger: quiet })), made.at(-1) as Broadcaster) });
    expect(viaManager.broadcaster).toBe(made.at(-1));
  });

  it('disposes a Broadcaster it created: later broadcasts resolve with BCAST_SHUTDOWN, health is unhealthy', async () => {
    const m = manager();
    await m.dispose();
    expect(m.broadcaster.isDisposed).toBe(true);
    expect(await m.broadcastToAll('x')).toMatchObject({ successful: 0, totalConnections: 0, error: ErrorCode.Shutdown });
    expect(await m.broadcastToUser('u', 'x')).toBe(false);
    expect(m.getHealthStatus().status).toBe('unhealthy');
  });
});

