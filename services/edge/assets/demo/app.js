// The demo page: create or join a room, see who is there, play the keyboard together.
// Notes go to each member over a WebRTC data channel when one is open, else through the
// server (`peer-message`). Plain DOM (createElement, textContent): the edge's CSP allows
// no inline script or style, and no data is ever parsed as HTML.
'use strict';

(() => {
  const LOW = 60; // C4
  const HIGH = 83; // B5
  const MAX_RECEIVED = 50;
  const DEFAULT_VELOCITY = 100;
  const CODE_RE = /^[abcdefghjkmnpqrstuvwxyz23456789]{5}$/;
  const COLOR_RE = /^#(?:[0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})$/i;
  const NOTE_NAMES = ['C', 'C♯', 'D', 'D♯', 'E', 'F', 'F♯', 'G', 'G♯', 'A', 'A♯', 'B'];
  const BLACK = new Set([1, 3, 6, 8, 10]);
  // Computer keys (by position, whatever the layout): A row = white keys, row above = black.
  const KEY_CODES = {
    KeyA: 60, KeyW: 61, KeyS: 62, KeyE: 63, KeyD: 64, KeyF: 65, KeyT: 66, KeyG: 67,
    KeyY: 68, KeyH: 69, KeyU: 70, KeyJ: 71, KeyK: 72, KeyO: 73, KeyL: 74, KeyP: 75,
    Semicolon: 76, Quote: 77, BracketRight: 78, Backslash: 79,
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    name: $('name'),
    create: $('create'),
    code: $('code'),
    join: $('join'),
    leave: $('leave'),
    form: $('join-form'),
    status: $('status'),
    room: $('room'),
    roomCode: $('room-code'),
    copyLink: $('copy-link'),
    members: $('members'),
    peers: $('peers'),
    keyboard: $('keyboard'),
    received: $('received'),
    midiStatus: $('midi-status'),
  };

  const state = {
    code: null, // the room this page is in (or joining)
    me: null, // my public user id
    myColor: '#4a7dff',
    displayName: '',
    participants: [],
    sio: null,
    replaced: false,
    busy: false,
  };

  // ---- small helpers ----

  function noteName(note) {
    return NOTE_NAMES[note % 12] + (Math.floor(note / 12) - 1);
  }

  function safeColor(c, fallback = '#888888') {
    return typeof c === 'string' && COLOR_RE.test(c) ? c : fallback;
  }

  function isNote(n) {
    return Number.isInteger(n) && n >= 0 && n <= 127;
  }

  function clampVelocity(v) {
    const n = Math.round(Number(v));
    if (!Number.isFinite(n)) return DEFAULT_VELOCITY;
    return Math.max(0, Math.min(127, n));
  }

  function setState(s, status) {
    document.body.dataset.state = s;
    if (status !== undefined) setStatus(status);
  }

  function setStatus(text) {
    ui.status.textContent = text;
  }

  function member(id) {
    return state.participants.find((p) => p.id === id);
  }

  function memberName(id) {
    const m = member(id);
    return m ? m.displayName : id === state.me ? 'me' : 'someone';
  }

  function others() {
    return state.participants.filter((p) => p.id !== state.me).map((p) => p.id);
  }

  // ---- audio ----

  const synth = new Synth();

  // ---- keyboard display ----

  const keyEls = new Map(); // note → element
  const holders = new Map(); // note → Map(source → colour)

  function buildKeyboard() {
    let white = 0;
    for (let note = LOW; note <= HIGH; note++) {
      const black = BLACK.has(note % 12);
      const key = document.createElement('div');
      key.className = 'key ' + (black ? 'black' : 'white');
      key.dataset.note = String(note);
      key.setAttribute('role', 'button');
      key.setAttribute('aria-label', noteName(note));
      if (black) {
        // Sits on the line between the white keys `white - 1` and `white`.
        key.style.setProperty('--pos', String(white));
      } else {
        if (note % 12 === 0) {
          const label = document.createElement('span');
          label.className = 'key-label';
          label.textContent = noteName(note);
          key.append(label);
        }
        white += 1;
      }
      wirePointer(key, note);
      keyEls.set(note, key);
      ui.keyboard.append(key);
    }
    ui.keyboard.style.setProperty('--whites', String(white));
  }

  function hold(note, source, colour) {
    let h = holders.get(note);
    if (!h) holders.set(note, (h = new Map()));
    h.delete(source);
    h.set(source, colour);
    paintKey(note);
  }

  function unhold(note, source) {
    const h = holders.get(note);
    if (!h) return;
    h.delete(source);
    if (!h.size) holders.delete(note);
    paintKey(note);
  }

  function unholdAll(source) {
    for (const note of [...holders.keys()]) unhold(note, source);
  }

  function paintKey(note) {
    const key = keyEls.get(note);
    if (!key) return;
    const h = holders.get(note);
    if (!h || !h.size) {
      key.classList.remove('down', 'remote');
      key.style.removeProperty('--hl');
      return;
    }
    const [source, colour] = [...h.entries()].pop();
    key.classList.add('down');
    key.classList.toggle('remote', source !== 'me');
    key.style.setProperty('--hl', colour);
  }

  // ---- playing and sending ----

  const paths = new Map(); // `${peer}:${note}` → 'p2p' | 'server' of the last KEY_DOWN

  function broadcast(type, note, velocity) {
    if (!state.me || document.body.dataset.state === 'idle') return;
    const viaServer = [];
    for (const id of others()) {
      const pathKey = id + ':' + note;
      // A KEY_UP follows its KEY_DOWN's path, so that the two stay in order.
      const downPath = paths.get(pathKey);
      let sent = false;
      if (type === 'KEY_DOWN') {
        sent = peers.send(id, { type, note, velocity });
        paths.set(pathKey, sent ? 'p2p' : 'server');
      } else {
        paths.delete(pathKey);
        if (downPath !== 'server') sent = peers.send(id, { type, note });
      }
      if (!sent) viaServer.push(id);
    }
    if (viaServer.length && state.sio && state.sio.connected) {
      const data = type === 'KEY_DOWN' ? { note, velocity } : { note };
      state.sio.emit('peer-message', { to: viaServer, type, data });
    }
  }

  function localDown(note, velocity = DEFAULT_VELOCITY) {
    if (!isNote(note)) return;
    const v = clampVelocity(velocity);
    synth.unlock();
    synth.noteOn('me', note, Math.max(1, v));
    hold(note, 'me', state.myColor);
    broadcast('KEY_DOWN', note, v);
  }

  function localUp(note) {
    if (!isNote(note)) return;
    synth.noteOff('me', note);
    unhold(note, 'me');
    broadcast('KEY_UP', note);
  }

  function remoteNote(from, kind, note, velocity, via) {
    if (!isNote(note) || !from || from === state.me) return;
    const colour = safeColor(member(from) && member(from).color);
    if (kind === 'down') {
      const v = clampVelocity(velocity === undefined ? DEFAULT_VELOCITY : velocity);
      synth.noteOn(from, note, Math.max(1, v));
      hold(note, from, colour);
    } else {
      synth.noteOff(from, note);
      unhold(note, from);
    }
    logReceived(from, kind, note, velocity, via, colour);
  }

  function logReceived(from, kind, note, velocity, via, colour) {
    const li = document.createElement('li');
    li.dataset.note = String(note);
    li.dataset.from = from;
    li.dataset.via = via;
    li.dataset.kind = kind;
    li.style.setProperty('--c', colour);
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = memberName(from);
    const what = document.createElement('span');
    what.className = 'what';
    what.textContent =
      (kind === 'down' ? ' ▼ ' : ' ▲ ') +
      noteName(note) +
      (kind === 'down' && velocity !== undefined ? ` vel ${velocity}` : '');
    const how = document.createElement('span');
    how.className = 'via';
    how.textContent = via;
    li.append(who, what, how);
    ui.received.append(li);
    while (ui.received.children.length > MAX_RECEIVED) ui.received.firstElementChild.remove();
    ui.received.scrollTop = ui.received.scrollHeight;
  }

  // ---- pointer, computer keys, MIDI ----

  const pointerNotes = new Map(); // pointerId → note

  function wirePointer(key, note) {
    const press = (e) => {
      const held = pointerNotes.get(e.pointerId);
      if (held === note) return;
      if (held !== undefined) localUp(held);
      pointerNotes.set(e.pointerId, note);
      localDown(note, DEFAULT_VELOCITY);
    };
    const release = (e) => {
      if (pointerNotes.get(e.pointerId) !== note) return;
      pointerNotes.delete(e.pointerId);
      localUp(note);
    };
    key.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      // Touch captures the pointer implicitly; release it so that sliding works.
      if (key.hasPointerCapture && key.hasPointerCapture(e.pointerId)) {
        key.releasePointerCapture(e.pointerId);
      }
      synth.unlock();
      press(e);
    });
    key.addEventListener('pointerenter', (e) => {
      if (e.buttons & 1) press(e); // glissando
    });
    key.addEventListener('pointerup', release);
    key.addEventListener('pointerleave', release);
    key.addEventListener('pointercancel', release);
    key.addEventListener('contextmenu', (e) => e.preventDefault());
  }

  const keysDown = new Map(); // KeyboardEvent.code → note

  function typing(e) {
    const t = e.target;
    return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || (t && t.isContentEditable);
  }

  document.addEventListener('keydown', (e) => {
    if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    const note = KEY_CODES[e.code];
    if (note === undefined || keysDown.has(e.code)) return;
    e.preventDefault();
    keysDown.set(e.code, note);
    localDown(note, DEFAULT_VELOCITY);
  });

  document.addEventListener('keyup', (e) => {
    const note = keysDown.get(e.code);
    if (note === undefined) return;
    keysDown.delete(e.code);
    localUp(note);
  });

  window.addEventListener('blur', () => {
    for (const note of keysDown.values()) localUp(note);
    keysDown.clear();
    for (const note of pointerNotes.values()) localUp(note);
    pointerNotes.clear();
  });

  function setupMidi() {
    if (typeof navigator.requestMIDIAccess !== 'function') return;
    const onMidi = (e) => {
      const [status, note, velocity] = e.data;
      const cmd = status & 0xf0;
      if (cmd === 0x90 && velocity > 0) localDown(note, velocity);
      else if (cmd === 0x80 || cmd === 0x90) localUp(note);
    };
    navigator.requestMIDIAccess().then(
      (access) => {
        const attach = () => {
          const names = [];
          for (const input of access.inputs.values()) {
            input.onmidimessage = onMidi;
            names.push(input.name || 'MIDI input');
          }
          ui.midiStatus.textContent = names.length ? `MIDI: ${names.join(', ')}.` : '';
        };
        attach();
        access.onstatechange = attach;
      },
      () => {
        // Denied or unavailable: the other inputs still work.
      },
    );
  }

  // ---- members and peers ----

  /** Updates `ul` in place to one `li` per item, keyed by `attr`. */
  function reconcile(ul, items, attr, keyOf, update) {
    const existing = new Map();
    for (const li of [...ul.children]) existing.set(li.getAttribute(attr), li);
    const wanted = [];
    for (const item of items) {
      const key = keyOf(item);
      let li = existing.get(key);
      existing.delete(key);
      if (!li) {
        li = document.createElement('li');
        li.setAttribute(attr, key);
      }
      update(li, item);
      wanted.push(li);
    }
    for (const li of existing.values()) li.remove();
    wanted.forEach((li, i) => {
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
  }

  function renderMembers() {
    reconcile(ui.members, state.participants, 'data-user-id', (p) => p.id, (li, p) => {
      if (li.textContent !== p.displayName) li.textContent = p.displayName;
      li.classList.toggle('me', p.id === state.me);
      li.style.setProperty('--c', safeColor(p.color));
      li.title = `${p.displayName} · ${p.instrument || ''}`.trim();
    });
  }

  function renderPeers() {
    const list = state.participants.filter((p) => p.id !== state.me);
    reconcile(ui.peers, list, 'data-peer', (p) => p.id, (li, p) => {
      const channel = peers.channelState(p.id);
      li.dataset.channel = channel;
      li.style.setProperty('--c', safeColor(p.color));
      const text = `${p.displayName}: ${channel} (${peers.connectionState(p.id)})`;
      if (li.textContent !== text) li.textContent = text;
    });
  }

  function applyRoom(room) {
    if (!room || !Array.isArray(room.participants)) return;
    if (state.code && room.code && room.code !== state.code) return;
    state.participants = room.participants.filter((p) => p && typeof p.id === 'string');
    const me = member(state.me);
    if (me) state.myColor = safeColor(me.color, state.myColor);
    const ids = new Set(state.participants.map((p) => p.id));
    for (const id of peers.ids()) {
      if (!ids.has(id)) dropMember(id);
    }
    renderMembers();
    renderPeers();
  }

  function dropMember(id) {
    peers.close(id, true);
    synth.releaseAll(id);
    unholdAll(id);
    for (const key of [...paths.keys()]) if (key.startsWith(id + ':')) paths.delete(key);
    retries.delete(id);
  }

  // ---- WebRTC ----

  const retries = new Map(); // peer id → failed attempts since the channel was last open

  const peers = new PeerManager({
    myId: () => state.me || '',
    sendSignal: (to, signal) => {
      if (!state.sio || !state.sio.connected) return;
      state.sio.emitWithAck('webrtc-signal', { to, signal }).then(
        (ack) => {
          if (ack && ack.ok === false) console.warn('p2piano: signal refused', ack.error);
        },
        () => {},
      );
    },
    onMessage: (from, msg) => {
      if (msg.type === 'KEY_DOWN') remoteNote(from, 'down', msg.note, msg.velocity, 'p2p');
      else if (msg.type === 'KEY_UP') remoteNote(from, 'up', msg.note, undefined, 'p2p');
    },
    onChange: (id) => {
      const channel = peers.channelState(id);
      if (channel === 'open') retries.delete(id);
      if (channel === 'closed') scheduleRetry(id);
      renderPeers();
    },
  });

  /**
   * A channel to a member who is still here closed (the member came back after the grace
   * period, or the network changed): offer again, a few times. The smaller id goes first;
   * the other waits longer, so that both rarely offer at once (and that case resolves).
   */
  function scheduleRetry(id) {
    if (!member(id) || document.body.dataset.state !== 'joined') return;
    const n = retries.get(id) || 0;
    if (n >= 3) return;
    retries.set(id, n + 1);
    const delay = (state.me < id ? 1000 : 4000) * (n + 1);
    setTimeout(() => {
      if (member(id) && document.body.dataset.state === 'joined' && peers.channelState(id) === 'closed') {
        peers.connect(id);
      }
    }, delay);
  }

  // ---- the socket ----

  function onServerEvent(name, payload) {
    const p = payload && typeof payload === 'object' ? payload : {};
    switch (name) {
      case 'user-joined':
        applyRoom(p.room);
        if (p.user) setStatus(`${p.user.displayName} joined.`);
        break;
      case 'user-left':
        if (typeof p.userId === 'string') dropMember(p.userId);
        applyRoom(p.room);
        break;
      case 'user-updated':
      case 'room-updated':
        applyRoom(p.room);
        break;
      case 'webrtc-signal':
        // The server only relays signals between members of one room.
        if (typeof p.from === 'string' && p.from !== state.me) peers.handleSignal(p.from, p.signal);
        break;
      case 'peer-message':
        if (p.type === 'KEY_DOWN' || p.type === 'KEY_UP') {
          const d = p.data && typeof p.data === 'object' ? p.data : {};
          const kind = p.type === 'KEY_DOWN' ? 'down' : 'up';
          remoteNote(p.from, kind, d.note, kind === 'down' ? d.velocity : undefined, 'server');
        }
        break;
      case 'session-replaced':
        state.replaced = true;
        leaveLocally();
        setState('error', 'This session was opened elsewhere.');
        break;
      case 'error':
        console.warn('p2piano: server refused', p);
        if (p.event !== 'peer-message') setStatus(`The server refused ${p.event || 'a request'}: ${p.message}`);
        break;
      default:
        break;
    }
  }

  async function sendJoin() {
    const sio = state.sio;
    const code = state.code;
    const payload = { code };
    if (state.displayName) payload.displayName = state.displayName;
    let ack;
    try {
      ack = await sio.emitWithAck('join-room', payload);
    } catch (e) {
      // The connection dropped: the reconnect joins again. Still connected: no answer.
      if (sio === state.sio && sio.connected) setState('error', `Could not join the room: ${e.message}`);
      return;
    }
    if (sio !== state.sio || code !== state.code) return;
    if (!ack || ack.ok !== true || !ack.room || !ack.you) {
      const err = (ack && ack.error) || {};
      const message =
        err.code === 'not_found' ? 'Room not found' : `Could not join the room: ${err.message || 'no answer'}`;
      stopSocket();
      leaveLocally();
      setState('error', message);
      return;
    }
    if (state.me && state.me !== ack.you.id) peers.closeAll();
    state.me = ack.you.id;
    document.body.dataset.me = state.me;
    state.myColor = safeColor(ack.you.color, state.myColor);
    state.displayName = ack.you.displayName || state.displayName;
    applyRoom(ack.room);
    setState('joined', `In room ${code} as ${ack.you.displayName}.`);
    ui.leave.hidden = false;
    // Connect to everyone already here (on a reconnect: to whoever has no live connection).
    for (const p of state.participants) {
      if (p.id !== state.me && !peers.isAlive(p.id)) peers.connect(p.id);
    }
  }

  function openSocket() {
    stopSocket();
    const sio = new SioClient(SioClient.defaultUrl());
    state.sio = sio;
    state.replaced = false;
    sio.onConnect = () => {
      if (state.sio === sio) sendJoin();
    };
    sio.onConnectError = (message) => {
      if (state.sio !== sio) return;
      leaveLocally();
      setState('error', `Could not connect: ${message}`);
    };
    sio.onServerDisconnect = () => {
      if (state.sio !== sio) return;
      leaveLocally();
      setState(
        'error',
        state.replaced ? 'This session was opened elsewhere.' : 'The server ended the connection.',
      );
    };
    sio.onTransportClose = (delay) => {
      if (state.sio !== sio) return;
      setState('connecting', `Connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    };
    sio.onEvent = (name, payload) => {
      if (state.sio === sio) onServerEvent(name, payload);
    };
    sio.open();
  }

  function stopSocket() {
    if (state.sio) {
      const sio = state.sio;
      state.sio = null;
      sio.close();
    }
  }

  /** Forgets the room locally: connections, sounding notes, lists. */
  function leaveLocally() {
    peers.closeAll();
    for (const p of state.participants) {
      synth.releaseAll(p.id);
      unholdAll(p.id);
    }
    paths.clear();
    retries.clear();
    state.participants = [];
    renderMembers();
    renderPeers();
    ui.leave.hidden = true;
  }

  function enterRoom(code) {
    leaveLocally();
    state.code = code;
    ui.roomCode.textContent = code;
    ui.room.hidden = false;
    try {
      history.replaceState(null, '', '#' + code);
    } catch (e) {
      // Not important.
    }
    setState('connecting', `Connecting to room ${code}…`);
    if (state.sio && state.sio.connected) {
      sendJoin();
    } else {
      openSocket();
    }
  }

  // ---- the form ----

  function readName() {
    const name = ui.name.value.trim().slice(0, 50);
    state.displayName = name;
    try {
      localStorage.setItem('p2piano.name', name);
    } catch (e) {
      // Private mode.
    }
    return name;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.message) return body.message;
    } catch (e) {
      // Not JSON.
    }
    return `HTTP ${response.status}`;
  }

  async function guarded(work) {
    if (state.busy) return;
    state.busy = true;
    ui.create.disabled = true;
    ui.join.disabled = true;
    try {
      await work();
    } finally {
      state.busy = false;
      ui.create.disabled = false;
      ui.join.disabled = false;
    }
  }

  ui.create.addEventListener('click', () =>
    guarded(async () => {
      synth.unlock();
      readName();
      setState('connecting', 'Creating a room…');
      let room;
      try {
        const r = await fetch('/rooms', { method: 'POST', credentials: 'same-origin' });
        if (!r.ok) throw new Error(await errorText(r));
        room = await r.json();
      } catch (e) {
        setState('error', `Could not create a room: ${e.message}`);
        return;
      }
      ui.code.value = room.code;
      enterRoom(room.code);
    }),
  );

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(async () => {
      synth.unlock();
      readName();
      const code = ui.code.value.trim().toLowerCase();
      ui.code.value = code;
      if (!CODE_RE.test(code)) {
        setState('error', 'A room code is 5 letters or digits.');
        return;
      }
      setState('connecting', `Looking up room ${code}…`);
      try {
        const r = await fetch('/rooms/' + encodeURIComponent(code), { credentials: 'same-origin' });
        if (r.status === 404) {
          setState('error', 'Room not found');
          return;
        }
        if (!r.ok) throw new Error(await errorText(r));
      } catch (e) {
        setState('error', `Could not look up the room: ${e.message}`);
        return;
      }
      enterRoom(code);
    });
  });

  ui.leave.addEventListener('click', async () => {
    const sio = state.sio;
    if (sio && sio.connected) {
      try {
        await sio.emitWithAck('leave-room', {}, 3000);
      } catch (e) {
        // Closing the socket leaves too, after the grace period.
      }
    }
    stopSocket();
    leaveLocally();
    state.code = null;
    ui.room.hidden = true;
    ui.roomCode.textContent = '';
    try {
      history.replaceState(null, '', location.pathname);
    } catch (e) {
      // Not important.
    }
    setState('idle', 'Left the room. Create a room or enter a room code.');
  });

  ui.copyLink.addEventListener('click', async () => {
    if (!state.code) return;
    const link = `${location.origin}/#${state.code}`;
    try {
      await navigator.clipboard.writeText(link);
      ui.copyLink.textContent = 'Copied';
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(ui.roomCode);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      ui.copyLink.textContent = 'Press Ctrl+C';
    }
    setTimeout(() => {
      ui.copyLink.textContent = 'Copy link';
    }, 1500);
  });

  // ---- start ----

  buildKeyboard();
  setupMidi();
  try {
    ui.name.value = localStorage.getItem('p2piano.name') || '';
  } catch (e) {
    // Private mode.
  }
  const fromHash = location.hash.slice(1).toLowerCase();
  if (CODE_RE.test(fromHash)) ui.code.value = fromHash;
  setState('idle');

  /** Test hooks: play a note as if from the keyboard. */
  window.p2piano = Object.freeze({
    sendNote(note, velocity = DEFAULT_VELOCITY) {
      localDown(Number(note), velocity);
    },
    releaseNote(note) {
      localUp(Number(note));
    },
  });
})();
