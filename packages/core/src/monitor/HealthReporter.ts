import type { Backplane, BackplaneHealth } from '../backplane/Backplane.js';
import type { HistoryStats } from '../history/RoomHistory.js';
import type { ReliabilityManager, ScopeState } from '../reliability/ReliabilityManager.js';
import type { ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';
import type { ExecutionMonitor, MonitorStats } from './ExecutionMonitor.js';

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface HealthReport {
  readonly status: HealthStatus;
  readonly reasons: readonly string[];
  readonly timestamp: string;
  readonly reliability: { readonly circuits: Readonly<Record<string, ScopeState>> };
  readonly monitoring: {
    readonly successRate: number;
    readonly errorRate: number;
    readonly latencyMs: { readonly p50: number; readonly p95: number; readonly p99: number };
  };
  readonly system: {
    readonly connections: number;
    readonly users: number;
    readonly rooms: number;
    readonly uptimeMs: number;
    readonly memory: { readonly rssBytes: number; readonly heapUsedBytes: number };
  };
  readonly backplane: BackplaneHealth & { readonly nodeId: string };
}

export interface BroadcasterStats {
  readonly nodeId: string;
  readonly connections: number;
  readonly users: number;
  readonly rooms: number;
  readonly roomMemberships: number;
  /** Broadcasts called on this node. */
  readonly broadcasts: number;
  /** Other nodes' broadcasts delivered on this node. */
  readonly remoteBroadcasts: number;
  /** Messages written to connections (local and remote broadcasts). */
  readonly deliveries: number;
  /** Envelopes from the backplane dropped (invalid, oversize, unsigned), by reason. */
  readonly backplaneDropped: Readonly<Record<string, number>>;
  /** Rooms with history: messages recorded, recoveries answered `recovered: true` / `false`, store errors (when `history` is set). */
  readonly history?: HistoryStats;
  readonly monitor: MonitorStats;
  readonly reliability: Readonly<Record<string, ScopeState>>;
  readonly uptimeMs: number;
}

export interface HealthSources {
  readonly connections: ConnectionRegistry;
  readonly rooms: RoomRegistry;
  readonly monitor: ExecutionMonitor;
  readonly reliability: ReliabilityManager;
  readonly backplane: Backplane;
  readonly isDisposed: () => boolean;
  readonly history?: { readonly stats: HistoryStats } | undefined;
}

/** `getStats()` and `getHealthStatus()`, read from the parts; it owns nothing but the start time. */
export class HealthReporter {
  readonly #s: HealthSources;
  readonly #startedAt = Date.now();

  constructor(sources: HealthSources) {
    this.#s = sources;
  }

  stats(): BroadcasterStats {
    const { connections, rooms, monitor, reliability, backplane } = this.#s;
    const m = monitor.getStats();
    return {
      nodeId: backplane.nodeId,
      connections: connections.size,
      users: connections.userCount,
      rooms: rooms.size,
      roomMemberships: rooms.membershipCount,
      broadcasts: m.totals.count,
      remoteBroadcasts: m.remote.totals.count,
      deliveries: m.deliveries,
      backplaneDropped: m.backplane.dropped,
      ...(this.#s.history ? { history: this.#s.history.stats } : {}),
      monitor: m,
      reliability: reliability.getState(),
      uptimeMs: Date.now() - this.#startedAt,
    };
  }

  health(): HealthReport {
    const { connections, rooms, monitor, reliability, backplane } = this.#s;
    const reasons: string[] = [];
    let status: HealthStatus = 'healthy';
    const worsen = (to: HealthStatus, reason: string): void => {
      reasons.push(reason);
      if (to === 'unhealthy' || status === 'healthy') status = to;
    };
    if (this.#s.isDisposed()) worsen('unhealthy', 'broadcaster is disposed');
    const circuits = reliability.getState();
    for (const [scope, s] of Object.entries(circuits)) {
      if (s.state !== 'closed') worsen('degraded', `circuit "${scope}" is ${s.state}${s.lastError ? ` (last error: ${s.lastError})` : ''}`);
    }
    const bp = backplane.health?.() ?? { status: 'healthy' as const, reasons: [] };
    for (const r of bp.reasons) worsen(bp.status === 'healthy' ? 'healthy' : 'degraded', `backplane: ${r}`);
    const stats = monitor.getStats();
    if (stats.totals.count >= 20 && stats.totals.errorRate > 0.5) worsen('degraded', `error rate ${stats.totals.errorRate}`);
    const mem = process.memoryUsage();
    return {
      status,
      reasons,
      timestamp: new Date().toISOString(),
      reliability: { circuits },
      monitoring: { successRate: stats.totals.successRate, errorRate: stats.totals.errorRate, latencyMs: worstLatency(stats) },
      system: {
        connections: connections.size,
        users: connections.userCount,
        rooms: rooms.size,
        uptimeMs: Date.now() - this.#startedAt,
        memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
      },
      backplane: { ...bp, nodeId: backplane.nodeId },
    };
  }
}

function worstLatency(stats: MonitorStats): { p50: number; p95: number; p99: number } {
  let p50 = 0;
  let p95 = 0;
  let p99 = 0;
  for (const op of Object.values(stats.operations)) {
    p50 = Math.max(p50, op.latencyMs.p50);
    p95 = Math.max(p95, op.latencyMs.p95);
    p99 = Math.max(p99, op.latencyMs.p99);
  }
  return { p50, p95, p99 };
}
