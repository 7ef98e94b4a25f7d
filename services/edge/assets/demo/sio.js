// A small Socket.IO v5 / Engine.IO v4 client over WebSocket, default namespace only, enough
// for the edge's service dialect (docs/protocol.md): connect, events, acks, heartbeat,
// reconnect with backoff. No dependencies, so it runs under the edge's strict CSP.
'use strict';

/**
 * Connection to the edge's default namespace.
 *
 * Callbacks (set the properties):
 * - onConnect(sid, isReconnect): the namespace is connected (`40`)
 * - onConnectError(message): the server refused the namespace (`44`); no retry
 * - onServerDisconnect(): the server ended the namespace (`41`); no retry
 * - onTransportClose(delayMs, attempt): the WebSocket closed without `41`; reconnecting
 *   in delayMs
 * - onEvent(name, payload): a server event (`42["name", payload]`)
 */
class SioClient {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.connected = false;
    this.everConnected = false;
    this.stopped = false;
    this.attempt = 0;
    this.nextAckId = 0;
    this.acks = new Map();
    this.reconnectTimer = null;
    this.watchdog = null;
    this.heartbeatMs = 45000;
    // The page id of the last connect reply: presented again when reconnecting, so that the
    // server knows this page is coming back (connection state recovery) and tells nobody.
    this.pid = null;
    this.onConnect = () => {};
    this.onConnectError = () => {};
    this.onServerDisconnect = () => {};
    this.onTransportClose = () => {};
    this.onEvent = () => {};
  }

  /** The reconnect delay after `attempt` failures: 0.5 s, 1 s, 2 s, 4 s, then 5 s. */
  static backoff(attempt) {
    return Math.min(500 * 2 ** attempt, 5000);
  }

  /** The URL of the edge's Socket.IO endpoint on this page's host. */
  static defaultUrl() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.host}/socket.io/?EIO=4&transport=websocket`;
  }

  open() {
    this.stopped = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.handleClose(null);
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws && typeof ev.data === 'string') this.handleFrame(ev.data);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.handleClose(ws);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  /** Ends the connection for good (no reconnect). */
  close() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    clearTimeout(this.watchdog);
    const ws = this.ws;
    this.ws = null;
    this.connected = false;
    this.failAcks('closed');
    if (ws) {
      try {
        if (ws.readyState === WebSocket.OPEN) ws.send('41');
        ws.close(1000);
      } catch (e) {
        // Already closing.
      }
    }
  }

  /** Sends `42["name", payload]` (no ack). Returns false when not connected. */
  emit(name, payload) {
    return this.sendPacket('2' + JSON.stringify([name, payload]));
  }

  /** Sends `42<id>["name", payload]`; resolves with the ack's first argument. */
  emitWithAck(name, payload, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new Error('not connected'));
        return;
      }
      const id = this.nextAckId++;
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error(`no answer to ${name}`));
      }, timeoutMs);
      this.acks.set(id, { resolve, reject, timer });
      if (!this.sendPacket('2' + id + JSON.stringify([name, payload]))) {
        clearTimeout(timer);
        this.acks.delete(id);
        reject(new Error('not connected'));
      }
    });
  }

  sendPacket(text) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.connected) return false;
    // Engine.IO message packet: `4` + the Socket.IO packet (`2` event, `0` connect, ...).
    ws.send('4' + text);
    return true;
  }

  failAcks(reason) {
    for (const { reject, timer } of this.acks.values()) {
      clearTimeout(timer);
      reject(new Error(reason));
    }
    this.acks.clear();
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    const ws = this.ws;
    this.watchdog = setTimeout(() => {
      // No ping for pingInterval + pingTimeout: the connection is dead.
      if (this.ws === ws && ws) ws.close(4000, 'ping timeout');
    }, this.heartbeatMs);
  }

  handleFrame(frame) {
    const ws = this.ws;
    switch (frame[0]) {
      case '0': {
        // Engine.IO open: {sid, upgrades, pingInterval, pingTimeout, maxPayload}.
        try {
          const open = JSON.parse(frame.slice(1));
          this.heartbeatMs = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
        } catch (e) {
          // Keep the defaults.
        }
        this.armWatchdog();
        ws.send(this.pid ? '40' + JSON.stringify({ pid: this.pid }) : '40');
        break;
      }
      case '1':
        ws.close();
        break;
      case '2':
        ws.send('3' + frame.slice(1));
        this.armWatchdog();
        break;
      case '4':
        this.armWatchdog();
        this.handlePacket(frame.slice(1));
        break;
      default:
        // `3` (pong), `6` (noop) and anything else: ignored.
        break;
    }
  }

  handlePacket(text) {
    const type = text[0];
    let i = 1;
    if (type === '5' || type === '6') {
      // Binary packets carry `<n>-`; the service dialect has none.
      i = text.indexOf('-', i) + 1;
    }
    if (text[i] === '/') {
      const comma = text.indexOf(',', i);
      const nsp = comma < 0 ? text.slice(i) : text.slice(i, comma);
      if (nsp !== '/') return;
      i = comma < 0 ? text.length : comma + 1;
    }
    let id = '';
    while (i < text.length && text[i] >= '0' && text[i] <= '9') id += text[i++];
    let data = null;
    if (i < text.length) {
      try {
        data = JSON.parse(text.slice(i));
      } catch (e) {
        console.warn('p2piano: unreadable packet', text);
        return;
      }
    }
    switch (type) {
      case '0': {
        const reconnect = this.everConnected;
        if (data && typeof data.pid === 'string') this.pid = data.pid;
        this.connected = true;
        this.everConnected = true;
        this.attempt = 0;
        this.onConnect(data && data.sid, reconnect);
        break;
      }
      case '1':
        this.stopped = true;
        this.connected = false;
        this.failAcks('disconnected by the server');
        this.onServerDisconnect();
        if (this.ws) this.ws.close(1000);
        break;
      case '2':
        if (Array.isArray(data) && typeof data[0] === 'string') {
          this.onEvent(data[0], data[1]);
        }
        break;
      case '3': {
        const ack = this.acks.get(Number(id));
        if (ack) {
          this.acks.delete(Number(id));
          clearTimeout(ack.timer);
          ack.resolve(Array.isArray(data) ? data[0] : data);
        }
        break;
      }
      case '4':
        this.stopped = true;
        this.connected = false;
        this.onConnectError((data && data.message) || 'connection refused');
        if (this.ws) this.ws.close(1000);
        break;
      default:
        break;
    }
  }

  handleClose(ws) {
    clearTimeout(this.watchdog);
    this.connected = false;
    if (ws && this.ws === ws) this.ws = null;
    this.failAcks('connection lost');
    if (this.stopped) return;
    const delay = SioClient.backoff(this.attempt);
    this.attempt += 1;
    this.onTransportClose(delay, this.attempt);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }
}

window.SioClient = SioClient;
