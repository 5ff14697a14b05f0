import { trace } from '@opentelemetry/api';
import { LocalBackplane, type Backplane } from './backplane/Backplane.js';
import { BackplaneBridge } from './backplane/BackplaneBridge.js';
import type { FanOutObserver } from './connection/FanOutObserver.js';
import { ErrorClassifier } from './errors/classify.js';
import { BroadcastExecutor } from './execution/BroadcastExecutor.js';
import { ExecutionEngine } from './execution/ExecutionEngine.js';
import { MemoryHistory } from './history/HistoryStore.js';
import { RoomHistory } from './history/RoomHistory.js';
import { ConnectionLifecycle } from './lifecycle/ConnectionLifecycle.js';
import { ExecutionMonitor } from './monitor/ExecutionMonitor.js';
import { HealthReporter } from './monitor/HealthReporter.js';
import { resolveOptions, withBackplaneScope, type BroadcasterOptions, type ResolvedOptions } from './options.js';
import { Presence, type PresenceEvent } from './presence/Presence.js';
import { ConnectionRegistry } from './registry/ConnectionRegistry.js';
import { RoomRegistry } from './registry/RoomRegistry.js';
import { ReliabilityManager } from './reliability/ReliabilityManager.js';

/** Every part of one broadcaster, wired once. Each part calls only parts listed before it. */
export interface Parts {
  readonly options: ResolvedOptions;
  readonly connections: ConnectionRegistry;
  readonly rooms: RoomRegistry;
  readonly backplane: Backplane;
  readonly ownsBackplane: boolean;
  readonly reliability: ReliabilityManager;
  readonly monitor: ExecutionMonitor;
  readonly engine: ExecutionEngine;
  readonly executor: BroadcastExecutor;
  readonly lifecycle: ConnectionLifecycle;
  readonly bridge: BackplaneBridge;
  readonly presence: Presence;
  readonly history: RoomHistory | undefined;
  readonly health: HealthReporter;
  readonly observers: Set<FanOutObserver>;
}

/**
 * Builds the parts from the options (resolved here, once). `announce` sends a presence event to a
 * room's members (the facade's own `toRoom`); `isDisposed` is the facade's state, read by health.
 */
export function assemble(
  options: BroadcasterOptions,
  hooks: { announce: (event: PresenceEvent, except: string) => void; isDisposed: () => boolean },
): Parts {
  const resolved = resolveOptions(options);
  const connections = new ConnectionRegistry();
  const rooms = new RoomRegistry();
  const backplane = options.backplane ?? new LocalBackplane();
  const classifier = options.classifier ?? new ErrorClassifier();
  const top = options.reliability ?? {};
  let bridge: BackplaneBridge | undefined;
  const reliability = new ReliabilityManager({ ...withBackplaneScope(top, BackplaneBridge.predicates(() => bridge)), classifier: top.classifier ?? classifier });
  const monitor = new ExecutionMonitor({
    ...(options.tracerProvider ? { tracerProvider: options.tracerProvider } : {}),
    ...(options.meterProvider ? { meterProvider: options.meterProvider } : {}),
  });
  monitor.observeCircuits(() => reliability.getState());
  reliability.onEvent((event) => {
    const span = trace.getActiveSpan();
    if (event.type === 'retry') {
      span?.addEvent('bcast.retry', { 'bcast.scope': event.scope, 'bcast.attempt': event.attempt, 'bcast.retry.delay_ms': event.delayMs });
    } else if (event.type === 'circuit') {
      span?.addEvent('bcast.circuit.state_change', { 'bcast.scope': event.scope, 'bcast.circuit.from': event.from, 'bcast.circuit.to': event.to });
      resolved.log('warn', `circuit "${event.scope}" ${event.from} -> ${event.to}`);
    }
  });
  const engine = new ExecutionEngine({ monitor, reliability, classifier });
  const history = options.history && new RoomHistory(options.history, options.history.store ?? new MemoryHistory(), resolved.log);
  const observers = new Set<FanOutObserver>();
  const { limits, traceRoomNames, log, fanOutSliceMs: sliceMs } = resolved;
  const executor = new BroadcastExecutor({ connections, rooms, limits, classifier, observers, monitor, traceRoomNames, history, log, sliceMs });
  const lifecycle = new ConnectionLifecycle({ connections, rooms, monitor, options: resolved, history });
  bridge = new BackplaneBridge({ backplane, engine, executor, lifecycle, monitor, options: resolved });
  const presence = new Presence({ connections, rooms, nodeId: backplane.nodeId, log }, options.presence ?? {});
  if (presence.tracking) {
    rooms.on((event) => {
      const note = presence.update(event);
      if (note) hooks.announce(note.event, note.except);
    });
  }
  const health = new HealthReporter({ connections, rooms, monitor, reliability, backplane, isDisposed: hooks.isDisposed, history });
  return { options: resolved, connections, rooms, backplane, ownsBackplane: options.backplane === undefined, reliability, monitor, engine, executor, lifecycle, bridge, presence, history, health, observers };
}
