// A small polyphonic synth on Web Audio: per note two detuned oscillators through a gain
// envelope. The AudioContext is created (or resumed) on a user gesture, as browsers require.
'use strict';

class Synth {
  constructor() {
    this.ctx = null;
    this.out = null;
    this.voices = new Map();
  }

  /** Creates or resumes the AudioContext; call from a user gesture. Never throws. */
  unlock() {
    try {
      if (!this.ctx) {
        const Ctx = window.AudioContext || window.webkitAudioContext;
        if (!Ctx) return;
        this.ctx = new Ctx();
        const comp = this.ctx.createDynamicsCompressor();
        const master = this.ctx.createGain();
        master.gain.value = 0.5;
        master.connect(comp);
        comp.connect(this.ctx.destination);
        this.out = master;
      }
      if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    } catch (e) {
      console.warn('p2piano: no audio', e);
      this.ctx = null;
    }
  }

  static frequency(note) {
    return 440 * 2 ** ((note - 69) / 12);
  }

  /** Starts `note` (MIDI 0–127) for `source` (who plays it) at `velocity` (1–127). */
  noteOn(source, note, velocity) {
    if (!this.ctx) return;
    const key = source + ':' + note;
    this.noteOff(source, note);
    try {
      const ctx = this.ctx;
      const t = ctx.currentTime;
      const peak = 0.05 + 0.3 * (Math.max(1, Math.min(127, velocity)) / 127);
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0, t);
      gain.gain.linearRampToValueAtTime(peak, t + 0.008);
      gain.gain.exponentialRampToValueAtTime(peak * 0.45, t + 0.4);
      gain.gain.exponentialRampToValueAtTime(peak * 0.2, t + 3);
      const filter = ctx.createBiquadFilter();
      filter.type = 'lowpass';
      filter.frequency.value = 1200 + 30 * velocity;
      filter.connect(gain);
      gain.connect(this.out);
      const f = Synth.frequency(note);
      const oscs = [
        ['triangle', 0],
        ['sawtooth', 7],
      ].map(([type, detune]) => {
        const osc = ctx.createOscillator();
        osc.type = type;
        osc.frequency.value = f;
        osc.detune.value = detune;
        const g = ctx.createGain();
        g.gain.value = type === 'sawtooth' ? 0.25 : 1;
        osc.connect(g);
        g.connect(filter);
        osc.start(t);
        return osc;
      });
      this.voices.set(key, { gain, oscs });
    } catch (e) {
      console.warn('p2piano: note failed', e);
    }
  }

  /** Releases `note` of `source`, if it sounds. */
  noteOff(source, note) {
    const key = source + ':' + note;
    const voice = this.voices.get(key);
    if (!voice || !this.ctx) return;
    this.voices.delete(key);
    try {
      const t = this.ctx.currentTime;
      const g = voice.gain.gain;
      g.cancelScheduledValues(t);
      g.setValueAtTime(Math.max(g.value, 0.0001), t);
      g.exponentialRampToValueAtTime(0.0001, t + 0.3);
      for (const osc of voice.oscs) osc.stop(t + 0.35);
      setTimeout(() => voice.gain.disconnect(), 500);
    } catch (e) {
      // The context went away.
    }
  }

  /** Releases every note of `source`. */
  releaseAll(source) {
    for (const key of [...this.voices.keys()]) {
      const i = key.lastIndexOf(':');
      if (key.slice(0, i) === source) this.noteOff(source, Number(key.slice(i + 1)));
    }
  }
}

window.Synth = Synth;
