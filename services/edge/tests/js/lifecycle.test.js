// The life of a page, with the real socket.io-client, across two edges and with the default
// grace period (5 s): a reload, a tab close, a network blip; nothing comes back to its
// sender; a page never sees itself as a peer; players who left are dropped quietly.
// Started by tests/conformance.rs, which runs the services and passes EDGE_A/EDGE_B and
// GRACE_MS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const EDGE_A = process.env.EDGE_A;
const EDGE_B = process.env.EDGE_B ?? EDGE_A;
const GRACE_MS = Number(process.env.GRACE_MS ?? 5000);
const WAIT_MS = 15000;

async function http(base, method, path, cookie) {
  const headers = {};
  if (cookie) headers.cookie = cookie;
  const res = await fetch(base + path, { method, headers });
  const setCookie = res.headers.get('set-cookie');
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, cookie: setCookie ? setCookie.split(';')[0] : cookie };
}

/** Resolves with the first `event` the socket receives; rejects after `within` ms. */
function once(socket, event, within = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${within} ms`)), within);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** Records every event a socket receives, in order, with what it carried. */
function record(socket) {
  const log = [];
  socket.onAny((name, payload) => log.push({ name, payload }));
  return log;
}

/**
 * A page of the p2piano web client: namespace /api with roomId and displayName, the session
 * cookie, websocket only. `reconnection` as the web client has it (on) unless told otherwise.
 */
function page(base, cookie, roomId, displayName, reconnection = true) {
  return io(`${base}/api`, {
    transports: ['websocket'],
    query: { roomId, displayName },
    extraHeaders: { cookie },
    reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    forceNew: true,
  });
}

/** A room with one player in it (on edge A); returns the room, its cookie and socket. */
async function roomWithPlayer(name) {
  const created = await http(EDGE_A, 'POST', '/api/room');
  assert.equal(created.status, 201);
  const roomId = created.json.roomId;
  const socket = page(EDGE_A, created.cookie, roomId, name);
  const join = await once(socket, 'ROOM_JOIN');
  return { roomId, cookie: created.cookie, socket, id: join.userId };
}

/** A second player, who looked the room up over REST first (on `base`), as the client does. */
async function joinAs(base, roomId, name, cookie) {
  const seen = await http(base, 'GET', `/api/room/${roomId}`, cookie);
  assert.equal(seen.status, 200);
  const socket = page(base, seen.cookie, roomId, name);
  const join = await once(socket, 'ROOM_JOIN');
  return { cookie: seen.cookie, socket, id: join.userId, listed: Object.keys(seen.json.users) };
}

/** `joinAs`, and waits until `listener` has heard of the join. */
async function joinSeen(listener, base, roomId, name, cookie) {
  const seen = once(listener, 'USER_CONNECT');
  const joined = await joinAs(base, roomId, name, cookie);
  assert.equal((await seen).userId, joined.id);
  return joined;
}

/** The WebSocket under a socket.io-client socket (the `ws` package in Node). */
function webSocketOf(socket) {
  return socket.io.engine.transport.ws;
}

test('a reload (close 1001, then a new page without pid) is a leave then a join', async () => {
  const alice = await roomWithPlayer('Alice');
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  const log = record(alice.socket);
  const left = once(alice.socket, 'USER_DISCONNECT', 2000);
  const started = Date.now();
  // The browser unloads the page: close 1001, no Socket.IO disconnect packet.
  bob.socket.io.reconnection(false);
  webSocketOf(bob.socket).close(1001);
  assert.equal((await left).userId, bob.id);
  // The new page loads the room over REST (it is not listed to itself), then connects
  // afresh: a new socket.io-client, so no pid.
  const joined = once(alice.socket, 'USER_CONNECT', 2000);
  const reloaded = await joinAs(EDGE_A, alice.roomId, 'Bob', bob.cookie);
  assert.equal(reloaded.id, bob.id, 'the same session');
  assert.ok(!reloaded.listed.includes(bob.id), 'the page is not its own peer');
  assert.equal((await joined).userId, bob.id);
  assert.ok(Date.now() - started < 2000, 'leave and join within 2 s');
  const membership = log.filter((e) => e.name.startsWith('USER_')).map((e) => e.name);
  assert.deepEqual(membership, ['USER_DISCONNECT', 'USER_CONNECT']);
  alice.socket.disconnect();
  reloaded.socket.disconnect();
});

test('a blip (the TCP connection dies, socket.io-client reconnects with its pid) is silent', async () => {
  const alice = await roomWithPlayer('Alice');
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  const log = record(alice.socket);
  const dropped = Date.now();
  const reconnected = once(bob.socket, 'connect');
  // No close frame: the transport is simply gone, as in a network drop.
  webSocketOf(bob.socket)._socket.destroy();
  await reconnected;
  assert.equal(bob.socket.recovered, true, 'the server recognised the page by its pid');
  const note = once(alice.socket, 'KEY_DOWN');
  bob.socket.emit('KEY_DOWN', { note: 60, velocity: 80, targetUserIds: [alice.id] });
  assert.deepEqual(await note, { note: 60, velocity: 80, userId: bob.id });
  // Proving an absence needs time to pass: a leave would be announced when the grace
  // period of the dropped socket ends, so wait that long (and a margin) on the clock.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, dropped + GRACE_MS + 1000 - Date.now())));
  // Marker: a third player's page closes; its leave is the first membership change Alice
  // hears after Bob's join.
  const carol = await joinAs(EDGE_B, alice.roomId, 'Carol');
  const carolLeft = once(alice.socket, 'USER_DISCONNECT');
  carol.socket.io.reconnection(false);
  webSocketOf(carol.socket).close(1001);
  assert.equal((await carolLeft).userId, carol.id);
  const membership = log.filter((e) => e.name.startsWith('USER_')).map((e) => [e.name, e.payload.userId]);
  assert.deepEqual(membership, [['USER_CONNECT', carol.id], ['USER_DISCONNECT', carol.id]]);
  const room = await http(EDGE_A, 'GET', `/api/room/${alice.roomId}`);
  assert.ok(room.json.users[bob.id], 'Bob is still a member');
  alice.socket.disconnect();
  bob.socket.disconnect();
});

test('a tab close is announced within 1.5 s', async () => {
  const alice = await roomWithPlayer('Alice');
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  const left = once(bob.socket, 'USER_DISCONNECT', 1500);
  alice.socket.io.reconnection(false);
  webSocketOf(alice.socket).close(1001);
  const gone = await left;
  assert.equal(gone.userId, alice.id);
  assert.ok(!gone.room.users[alice.id]);
  bob.socket.disconnect();
});

test('an event never comes back to its sender, whatever its targets', async () => {
  const alice = await roomWithPlayer('Alice');
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  const aliceLog = record(alice.socket);
  // The targets a reloaded web client uses: every listed user, itself included.
  const note = once(bob.socket, 'KEY_DOWN');
  alice.socket.emit('KEY_DOWN', { note: 61, velocity: 90, targetUserIds: [alice.id, bob.id] });
  alice.socket.emit('SUSTAIN_DOWN', { targetUserIds: [alice.id] });
  alice.socket.emit('SIGNAL', { userId: alice.id, signalData: { type: 'offer', sdp: 'v=0' } });
  assert.deepEqual(await note, { note: 61, velocity: 90, userId: alice.id });
  // Bob answers only once he has the note: whatever Alice would have got of her own events
  // would reach her before his answer.
  const answer = once(alice.socket, 'KEY_UP');
  bob.socket.emit('KEY_UP', { note: 61, targetUserIds: [alice.id] });
  assert.deepEqual(await answer, { note: 61, userId: bob.id });
  assert.deepEqual(aliceLog.map((e) => e.name), ['KEY_UP']);
  alice.socket.disconnect();
  bob.socket.disconnect();
});

test('GET /api/room never lists the caller', async () => {
  const alice = await roomWithPlayer('Alice');
  const mine = await http(EDGE_B, 'GET', `/api/room/${alice.roomId}`, alice.cookie);
  assert.deepEqual(mine.json.users, {});
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  assert.deepEqual(bob.listed, [alice.id]);
  for (const [who, cookie, other] of [[alice.id, alice.cookie, bob.id], [bob.id, bob.cookie, alice.id]]) {
    for (const base of [EDGE_A, EDGE_B]) {
      const seen = await http(base, 'GET', `/api/room/${alice.roomId}`, cookie);
      assert.deepEqual(Object.keys(seen.json.users), [other], `${who} on ${base}`);
    }
  }
  // While Bob's socket is in its grace period, his next page does not see him either.
  const dropped = once(alice.socket, 'USER_DISCONNECT', GRACE_MS + WAIT_MS);
  bob.socket.io.reconnection(false);
  webSocketOf(bob.socket)._socket.destroy();
  const during = await http(EDGE_A, 'GET', `/api/room/${alice.roomId}`, bob.cookie);
  assert.deepEqual(Object.keys(during.json.users), [alice.id]);
  assert.equal((await dropped).userId, bob.id, 'announced when the grace period ends');
  alice.socket.disconnect();
});

test('pinging a player who left brings no exception', async () => {
  const alice = await roomWithPlayer('Alice');
  const bob = await joinSeen(alice.socket, EDGE_B, alice.roomId, 'Bob');
  const left = once(alice.socket, 'USER_DISCONNECT');
  bob.socket.disconnect();
  assert.equal((await left).userId, bob.id);
  const errors = record(alice.socket);
  // The web client keeps pinging a departed peer every 500 ms for a while.
  for (let i = 0; i < 4; i++) {
    alice.socket.emit('LATENCY_PING', { pingTime: i, peerId: bob.id, targetUserIds: [bob.id] });
  }
  // A bad note after them: its exception is the first one Alice gets.
  const exception = once(alice.socket, 'exception');
  alice.socket.emit('KEY_DOWN', { note: 500, velocity: 1, targetUserIds: [bob.id] });
  const e = await exception;
  assert.equal(e.code, 400);
  assert.equal(e.event, 'KEY_DOWN');
  assert.deepEqual(errors.filter((x) => x.name === 'exception').length, 1);
  alice.socket.disconnect();
});
