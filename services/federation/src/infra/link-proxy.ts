import { TcpRelay } from "#common/relay.js";

/**
 * A TCP relay on one leafnode link (site -> hub) that a test or an operator drill can cut: cutting
 * destroys every relayed connection and refuses new ones (accepted and closed at once, so the
 * listening port stays ours); healing lets the site's reconnect attempts through again. It is
 * the common TcpRelay listening on a free loopback port.
 */
export type LinkProxy = TcpRelay;
export const LinkProxy = {
  start: (target: { host: string; port: number }): Promise<LinkProxy> => TcpRelay.start({ target }),
};
