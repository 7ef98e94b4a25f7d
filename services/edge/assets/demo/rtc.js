// WebRTC data channels between the members of a room, one RTCPeerConnection per remote
// member, signaled through the edge (`webrtc-signal`). No STUN/TURN: peers on one host or
// one LAN connect directly; anyone else keeps using the server relay.
//
// Who offers: a member who joins offers (and opens the 'notes' channel) to every member
// already in the room; members answer the offers they get. If both sides offer at once
// (after a reconnect), the member with the smaller user id keeps its offer and the other
// answers it.
'use strict';

const RTC_CONFIG = { iceServers: [] };

class PeerManager {
  /**
   * @param {object} hooks
   *   myId(): my user id
   *   sendSignal(to, signal): sends `webrtc-signal {to, signal}` through the server
   *   onMessage(from, message): a parsed data channel message
   *   onChange(peerId): a peer's connection or channel state changed
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.peers = new Map();
    this.supported = typeof window.RTCPeerConnection === 'function';
  }

  /** `new` | `connecting` | `open` | `closed`: the state of the channel to `id`. */
  channelState(id) {
    const peer = this.peers.get(id);
    if (!peer) return 'new';
    if (peer.closed) return 'closed';
    if (!peer.dc) return 'new';
    switch (peer.dc.readyState) {
      case 'open':
        return 'open';
      case 'connecting':
        return 'connecting';
      default:
        return 'closed';
    }
  }

  /** The peer connection's state, for display. */
  connectionState(id) {
    const peer = this.peers.get(id);
    return peer && !peer.closed ? peer.pc.connectionState : 'none';
  }

  /** Whether the connection to `id` exists and is not failed or closed. */
  isAlive(id) {
    const peer = this.peers.get(id);
    if (!peer || peer.closed) return false;
    const s = peer.pc.connectionState;
    return s !== 'failed' && s !== 'closed' && s !== 'disconnected';
  }

  /** Sends `message` (an object) over the open channel to `id`; false if there is none. */
  send(id, message) {
    const peer = this.peers.get(id);
    if (!peer || peer.closed || !peer.dc || peer.dc.readyState !== 'open') return false;
    try {
      peer.dc.send(JSON.stringify(message));
      return true;
    } catch (e) {
      return false;
    }
  }

  /** Opens a connection to `id` as the offerer (replacing any previous one). */
  connect(id) {
    if (!this.supported) return;
    this.close(id, true);
    const peer = this.create(id, true);
    const dc = peer.pc.createDataChannel('notes', { ordered: true });
    this.attachChannel(peer, dc);
    this.offer(peer);
  }

  async offer(peer) {
    try {
      const offer = await peer.pc.createOffer();
      if (!this.current(peer)) return;
      await peer.pc.setLocalDescription(offer);
      if (!this.current(peer)) return;
      this.hooks.sendSignal(peer.id, { type: 'offer', sdp: peer.pc.localDescription.sdp });
    } catch (e) {
      console.warn('p2piano: offer failed', e);
      this.fail(peer);
    }
  }

  /** Handles a `webrtc-signal` from `from`. */
  async handleSignal(from, signal) {
    if (!this.supported || !signal || typeof signal !== 'object') return;
    if (signal.type === 'offer' && typeof signal.sdp === 'string') {
      const existing = this.peers.get(from);
      if (existing && !existing.closed && existing.pc.signalingState === 'have-local-offer') {
        // Both offered: the smaller id's offer wins.
        if (this.hooks.myId() < from) return;
      }
      this.close(from, true);
      const peer = this.create(from, false);
      try {
        await peer.pc.setRemoteDescription({ type: 'offer', sdp: signal.sdp });
        if (!this.current(peer)) return;
        await this.flushCandidates(peer);
        const answer = await peer.pc.createAnswer();
        if (!this.current(peer)) return;
        await peer.pc.setLocalDescription(answer);
        if (!this.current(peer)) return;
        this.hooks.sendSignal(from, { type: 'answer', sdp: peer.pc.localDescription.sdp });
      } catch (e) {
        console.warn('p2piano: answering failed', e);
        this.fail(peer);
      }
    } else if (signal.type === 'answer' && typeof signal.sdp === 'string') {
      const peer = this.peers.get(from);
      if (!peer || peer.closed || peer.pc.signalingState !== 'have-local-offer') return;
      try {
        await peer.pc.setRemoteDescription({ type: 'answer', sdp: signal.sdp });
        if (this.current(peer)) await this.flushCandidates(peer);
      } catch (e) {
        console.warn('p2piano: answer failed', e);
        this.fail(peer);
      }
    } else if (signal.type === 'candidate' && signal.candidate) {
      const peer = this.peers.get(from);
      if (!peer || peer.closed) return;
      if (!peer.pc.remoteDescription) {
        peer.pending.push(signal.candidate);
        return;
      }
      try {
        await peer.pc.addIceCandidate(signal.candidate);
      } catch (e) {
        console.warn('p2piano: candidate refused', e);
      }
    }
  }

  async flushCandidates(peer) {
    const pending = peer.pending.splice(0);
    for (const c of pending) {
      try {
        await peer.pc.addIceCandidate(c);
      } catch (e) {
        console.warn('p2piano: candidate refused', e);
      }
    }
  }

  create(id, initiator) {
    const pc = new RTCPeerConnection(RTC_CONFIG);
    const peer = { id, pc, dc: null, initiator, pending: [], closed: false };
    this.peers.set(id, peer);
    pc.onicecandidate = (e) => {
      if (e.candidate && this.current(peer)) {
        this.hooks.sendSignal(id, { type: 'candidate', candidate: e.candidate.toJSON() });
      }
    };
    pc.onconnectionstatechange = () => {
      if (!this.current(peer)) return;
      if (pc.connectionState === 'failed') this.fail(peer);
      this.hooks.onChange(id);
    };
    pc.ondatachannel = (e) => {
      if (this.current(peer) && e.channel.label === 'notes') this.attachChannel(peer, e.channel);
    };
    this.hooks.onChange(id);
    return peer;
  }

  attachChannel(peer, dc) {
    peer.dc = dc;
    const changed = () => {
      if (this.current(peer)) this.hooks.onChange(peer.id);
    };
    dc.onopen = changed;
    dc.onclose = changed;
    dc.onerror = changed;
    dc.onmessage = (e) => {
      if (!this.current(peer) || typeof e.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      if (msg && typeof msg === 'object') this.hooks.onMessage(peer.id, msg);
    };
    changed();
  }

  current(peer) {
    return !peer.closed && this.peers.get(peer.id) === peer;
  }

  /** A connection that cannot work: closed, but kept as `closed` for display. */
  fail(peer) {
    if (peer.closed) return;
    peer.closed = true;
    try {
      peer.pc.close();
    } catch (e) {
      // Already closed.
    }
    if (this.peers.get(peer.id) === peer) this.hooks.onChange(peer.id);
  }

  /** Closes the connection to `id`; `quiet` skips the change notification. */
  close(id, quiet = false) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.closed = true;
    try {
      if (peer.dc) peer.dc.close();
      peer.pc.close();
    } catch (e) {
      // Already closed.
    }
    if (!quiet) this.hooks.onChange(id);
  }

  /** Closes every connection. */
  closeAll() {
    for (const id of [...this.peers.keys()]) this.close(id);
  }

  ids() {
    return [...this.peers.keys()];
  }
}

window.PeerManager = PeerManager;
