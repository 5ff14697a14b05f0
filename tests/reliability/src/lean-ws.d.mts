// Types of lean-ws.mjs, for the tests that open a connection themselves.
import type { Socket } from 'node:net';

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
  /** False when the TCP connection ended without a close frame (reported as 1006). */
  readonly closeFrame: boolean;
}

export interface LeanClient {
  readonly socket: Socket;
  readonly closeInfo: CloseInfo | undefined;
  send(text: string): void;
  close(code?: number): void;
  destroy(): void;
}

export interface OpenOptions {
  port: number;
  host?: string;
  path?: string;
  transport?: 'ws' | 'socketio';
  localAddress?: string;
  timeoutMs?: number;
  onMessage?: (buffer: Buffer, start: number, end: number) => void;
  onClose?: (info: CloseInfo) => void;
  pauseAfterOpen?: boolean;
}

/** An upgrade the server refused: `status` is its HTTP status, 0 when the connection failed (`code` then says why). */
export declare class UpgradeError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  constructor(message: string, status: number, code?: string);
}

export declare function openWs(options: OpenOptions): Promise<LeanClient>;
export declare const clock: () => number;
