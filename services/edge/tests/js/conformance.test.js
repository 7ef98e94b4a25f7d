// Conformance of the edge with the real socket.io-client, in both dialects, across two
// edges. Started by tests/conformance.rs, which runs the services and passes EDGE_A/EDGE_B.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const EDGE_A = process.env.EDGE_A;
const EDGE_B = process.env.EDGE_B ?? EDGE_A;
const WAIT_MS = 15000;

async function http(base, method, path, cookie, body) {
  const headers = { 'content-type': 'application/json' };
  if (cookie) headers.cookie = cookie;
  const res = await fetch(base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const setCookie = res.headers.get('set-cookie');
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, cookie: setCookie ? setCookie.split(';')[0] : cookie };
}

/** Resolves with the first `event` the socket receives; rejects after WAIT_MS. */
function once(socket, event) {
  return new Promise((resolve, reject) => {
    // A deadline, not a pause: the wait ends as soon as the event comes.
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${WAIT_MS} ms`)), WAIT_MS);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** The p2piano web client's way of joining: namespace /api with roomId and displayName. */
function webClient(base, cookie, roomId, displayName) {
  return io(`${base}/api`, {
    transports: ['websocket'],
    query: { roomId, displayName },
    extraHeaders: { cookie },
    reconnection: false,
    forceNew: true,
  });
}

test('client dialect: join, notes, signals, updates and leave across two edges', async () => {
  const created = await http(EDGE_A, 'POST', '/api/room');
  assert.equal(created.status, 201);
  const roomId = created.json.roomId;
  assert.match(roomId, /^[abcdefghjkmnpqrstuvwxyz23456789]{5}$/);
  const seen = await http(EDGE_B, 'GET', `/api/room/${roomId}`);
  assert.equal(seen.status, 200);
  assert.equal(seen.json.roomId, roomId);

  const a = webClient(EDGE_A, created.cookie, roomId, 'Alice');
  const joinA = await once(a, 'ROOM_JOIN');
  assert.ok(joinA.room.users[joinA.userId]);
  assert.equal(joinA.room.users[joinA.userId].displayName, 'Alice');

  const b = webClient(EDGE_B, seen.cookie, roomId, 'Bob');
  const connectSeen = once(a, 'USER_CONNECT');
  const joinB = await once(b, 'ROOM_JOIN');
  assert.equal(Object.keys(joinB.room.users).length, 2);
  assert.equal((await connectSeen).userId, joinB.userId);

  const note = once(b, 'KEY_DOWN');
  a.emit('KEY_DOWN', { note: 64, velocity: 90, targetUserIds: [joinB.userId] });
  assert.deepEqual(await note, { note: 64, velocity: 90, userId: joinA.userId });

  const signal = once(a, 'SIGNAL');
  b.emit('SIGNAL', { userId: joinA.userId, signalData: { type: 'candidate', candidate: { candidate: 'x' } } });
  assert.deepEqual(await signal, { signalData: { type: 'candidate', candidate: { candidate: 'x' } }, userId: joinB.userId });

  // The metronome controls of the web client of July 2025, relayed like a tick.
  for (const [name, payload] of [['METRONOME_START', {}], ['SET_BPM', { bpm: 96 }], ['METRONOME_STOP', {}]]) {
    const got = once(b, name);
    a.emit(name, { ...payload, targetUserIds: [joinB.userId] });
    assert.deepEqual(await got, { ...payload, userId: joinA.userId });
  }

  const sync = once(b, 'AUTOMERGE_PROTOCOL');
  a.emit('AUTOMERGE_PROTOCOL', { syncMessage: [1, 2, 255], targetUserIds: [joinB.userId] });
  assert.deepEqual(await sync, { syncMessage: [1, 2, 255], userId: joinA.userId });

  const updated = Promise.all([once(a, 'USER_UPDATE'), once(b, 'USER_UPDATE')]);
  a.emit('USER_UPDATE', { userId: joinA.userId, displayName: 'Alicia', color: '#123456', instrument: 'SYNTH' });
  for (const u of await updated) {
    assert.equal(u.userId, joinA.userId);
    assert.equal(u.room.users[joinA.userId].displayName, 'Alicia');
  }

  const refused = once(a, 'exception');
  a.emit('USER_UPDATE', { userId: joinB.userId, displayName: 'Hijack' });
  const e = await refused;
  assert.equal(e.status, 'error');
  assert.equal(e.code, 403);

  const gone = once(b, 'USER_DISCONNECT');
  a.disconnect();
  assert.equal((await gone).userId, joinA.userId);
  b.disconnect();
});

test('client dialect: no session or unknown room is a connect_error', async () => {
  const s = webClient(EDGE_A, '', 'zzzzz', 'X');
  const err = await once(s, 'connect_error');
  assert.equal(err.message, 'Session required');
  s.close();
  const { cookie } = await http(EDGE_A, 'POST', '/api/room');
  const t = webClient(EDGE_A, cookie, 'zzzzz', 'X');
  assert.equal((await once(t, 'connect_error')).message, 'Room not found');
  t.close();
});

test('client dialect: a second socket of the session replaces the first', async () => {
  const created = await http(EDGE_A, 'POST', '/api/room');
  const first = webClient(EDGE_A, created.cookie, created.json.roomId, 'One');
  await once(first, 'ROOM_JOIN');
  const newer = once(first, 'NEWER_CONNECTION');
  const dropped = once(first, 'disconnect');
  const second = webClient(EDGE_B, created.cookie, created.json.roomId, 'One');
  await once(second, 'ROOM_JOIN');
  await newer;
  // socket.io-client passes (reason, details); the reason is what matters.
  const [reason] = [].concat(await dropped);
  assert.equal(reason, 'io server disconnect');
  second.disconnect();
});

test('service dialect: join-room, peer-message, webrtc-signal, user-update, leave-room', async () => {
  const created = await http(EDGE_A, 'POST', '/rooms', undefined, { settings: { name: 'Jam' } });
  assert.equal(created.status, 201);
  const code = created.json.code;
  assert.equal(created.json.settings.name, 'Jam');
  const other = await http(EDGE_B, 'GET', `/rooms/${code}`);
  const a = io(`${EDGE_A}/`, { transports: ['websocket'], extraHeaders: { cookie: created.cookie }, reconnection: false, forceNew: true });
  const b = io(`${EDGE_B}/`, { transports: ['websocket'], extraHeaders: { cookie: other.cookie }, reconnection: false, forceNew: true });
  await Promise.all([once(a, 'connect'), once(b, 'connect')]);

  const ja = await a.timeout(WAIT_MS).emitWithAck('join-room', { code, displayName: 'Ann' });
  assert.equal(ja.ok, true);
  assert.equal(ja.room.code, code);
  const joined = once(a, 'user-joined');
  const jb = await b.timeout(WAIT_MS).emitWithAck('join-room', { code, instrument: 'SYNTH' });
  assert.equal(jb.you.instrument, 'SYNTH');
  assert.equal((await joined).user.id, jb.you.id);

  const msg = once(b, 'peer-message');
  a.emit('peer-message', { type: 'KEY_DOWN', data: { note: 10, velocity: 20 } });
  assert.deepEqual(await msg, { from: ja.you.id, type: 'KEY_DOWN', data: { note: 10, velocity: 20 } });

  const sig = once(b, 'webrtc-signal');
  assert.deepEqual(await a.timeout(WAIT_MS).emitWithAck('webrtc-signal', { to: jb.you.id, signal: { type: 'offer' } }), { ok: true });
  assert.deepEqual(await sig, { from: ja.you.id, signal: { type: 'offer' } });

  const bad = await a.timeout(WAIT_MS).emitWithAck('webrtc-signal', { to: '00000000-0000-4000-8000-000000000000', signal: {} });
  assert.equal(bad.ok, false);
  assert.equal(bad.error.code, 'forbidden');

  const left = once(a, 'user-left');
  assert.deepEqual(await b.timeout(WAIT_MS).emitWithAck('leave-room', {}), { ok: true });
  assert.equal((await left).userId, jb.you.id);
  a.disconnect();
  b.disconnect();
});
