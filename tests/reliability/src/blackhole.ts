/**
 * A TCP proxy on loopback that can turn into a black hole: until `blackhole()` it forwards both
 * ways; from then on it forwards nothing, in either direction, and never closes or resets a
 * connection (a FIN from either side is not passed on). To the server its clients then look like
 * peers whose cable was pulled: no FIN, no RST, no data.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface Blackhole {
  readonly port: number;
  /** Connections through the proxy. */
  readonly connections: number;
  /** Stops forwarding; returns when it happened. */
  blackhole(): void;
  close(): Promise<void>;
}

export async function startBlackholeProxy(targetPort: number): Promise<Blackhole> {
  let holed = false;
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    connections += 1;
    const upstream = connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true });
    sockets.add(client);
    sockets.add(upstream);
    const pipe = (from: Socket, to: Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (!holed && !to.destroyed) to.write(chunk);
      });
      from.on('end', () => {
        if (!holed) to.end();
      });
      from.on('error', () => {});
      from.on('close', () => {
        sockets.delete(from);
        if (!holed) to.destroy();
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    get connections() {
      return connections;
    },
    blackhole() {
      holed = true;
    },
    async close() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
