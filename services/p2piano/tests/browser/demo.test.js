// End-to-end test of the edge's demo page (`/`) in a real Chromium: two users in two
// separate browser contexts (two sessions, two cookie jars), possibly on two different
// edges, create and join a room, see each other, play a note (through the server or over
// the data channel, whichever is open by then), open a WebRTC data channel, and play a note
// over it.
//
// Run by in-netns.sh inside a fresh network namespace, which services/p2piano/tests/it/browser.rs
// (or a person, as root) starts with `unshare -n bash in-netns.sh all|cluster`. The ICE
// candidates must be on loopback or on the namespace's veth pair (10.77.0.0/24), so run by
// hand outside such a namespace, against running edges, it fails at the ICE check:
//   P2PIANO_URL_A=http://127.0.0.1:3001 P2PIANO_URL_B=http://127.0.0.1:3002 \
//   SHOTS_DIR=/tmp/shots node demo.test.js
//
// Uses the system Chromium (/usr/bin/chromium, or CHROMIUM_PATH): playwright-core never
// downloads a browser, and the machines that run this cannot fetch one anyway.
// SHOTS_DIR defaults to ./shots. Exit status 0 on success (and SHOTS_DIR/demo.png written), 1 on any failure (with
// full-page screenshots of both pages named after the failed step, and their console logs).

import { mkdirSync } from 'node:fs';
import { BlockList } from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';

const URL_A = process.env.P2PIANO_URL_A;
const URL_B = process.env.P2PIANO_URL_B || URL_A;
const SHOTS_DIR = path.resolve(process.env.SHOTS_DIR || 'shots');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Generous for a loaded 2-core CI machine; every wait is on a condition, so the happy path
// takes as long as the page needs and no more.
const WAIT_MS = 20_000;
// The whole run must end even if something hangs outside a bounded wait (a browser that
// never starts, a screenshot that never returns).
const OVERALL_MS = 150_000;

if (!URL_A) {
  console.error('P2PIANO_URL_A is not set (the base URL of the edge, e.g. http://127.0.0.1:3001)');
  process.exit(2);
}
for (const u of [URL_A, URL_B]) {
  // The test must never reach anything but this machine.
  const host = new URL(u).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) {
    console.error(`refusing a non-loopback URL: ${u}`);
    process.exit(2);
  }
}

// Chromium keeps only the last `--disable-features` on its command line, so ours must repeat
// the features that playwright-core (1.65.1, pinned) disables in its own default switch,
// several of which stop requests to Google services at start-up.
const PLAYWRIGHT_DISABLED_FEATURES = [
  'AvoidUnnecessaryBeforeUnloadCheckSync',
  'DestroyProfileOnBrowserClose',
  'HttpsUpgrades',
  'HttpsFirstBalancedModeAutoEnable',
  'LensOverlay',
  'MediaRouter',
  'PaintHolding',
  'ThirdPartyStoragePartitioning',
  'AvoidCorsURLLoaderRestartOnRedirect',
  'TcpPortRandomizationWin',
  'OptimizationHints',
  'NetworkTimeServiceQuerying',
  'AimEnabled',
  'PreconnectToSearch',
  'msForceBrowserSignIn',
  'msEdgeUpdateLaunchServicesPreferredVersion',
];

// Flags that keep a headless Chromium quiet and local: no sandbox (containers run as root),
// no GPU, no QUIC, and no background traffic to Google services. Without mDNS hiding, ICE
// candidates carry plain addresses, which two contexts on one host reach directly (an
// `.local` name would need an mDNS responder). --no-proxy-server: a proxy set in the
// environment must not see the page's traffic. --host-resolver-rules: Chromium resolves no
// host name but localhost (`*` matches IP literals too, hence 127.0.0.1); the switches above
// do not stop it from looking up accounts.google.com, content-autofill.googleapis.com and
// update.googleapis.com, queries addressed to the resolver of /etc/resolv.conf, outside the
// test's network namespace.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--disable-features=${['WebRtcHideLocalIpsWithMdns', ...PLAYWRIGHT_DISABLED_FEATURES].join(',')}`,
  '--no-proxy-server',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
];

// Keeps every RTCPeerConnection the page makes in `window.__peerConnections`, so that the
// test can read the ICE candidates from getStats. A subclass: the page sees the same API.
function trackPeerConnections() {
  const Native = window.RTCPeerConnection;
  if (typeof Native !== 'function') return;
  const all = [];
  Object.defineProperty(window, '__peerConnections', { value: all });
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      all.push(this);
    }
  };
}

/**
 * The only addresses an ICE candidate may have: loopback, and the veth pair that in-netns.sh
 * puts in the test's own network namespace (both ends inside it). Anything else, such as the
 * host's own interfaces, could carry the data channel's packets out of that namespace.
 */
const ICE_ALLOWED = new BlockList();
ICE_ALLOWED.addSubnet('127.0.0.0', 8, 'ipv4');
ICE_ALLOWED.addAddress('::1', 'ipv6');
ICE_ALLOWED.addSubnet('10.77.0.0', 24, 'ipv4');
const ICE_ALLOWED_TEXT = '127.0.0.0/8, ::1 or 10.77.0.0/24';

function iceAddressAllowed(address) {
  if (typeof address !== 'string') return false;
  const type = address.includes(':') ? 'ipv6' : 'ipv4';
  try {
    return ICE_ALLOWED.check(address, type);
  } catch {
    return false; // not an IP address (an mDNS `.local` name, say)
  }
}

/** One browser page with its console messages and uncaught errors, kept for the report. */
class Side {
  constructor(label, page) {
    this.label = label;
    this.page = page;
    this.logs = [];
    this.errors = [];
    page.on('console', (m) => this.logs.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => {
      this.errors.push(e);
      this.logs.push(`[pageerror] ${e.stack || e.message}`);
    });
    page.on('requestfailed', (r) =>
      this.logs.push(`[requestfailed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
    );
    // Membership events the page's sockets receive (`42["user-left",{...}]`), in order.
    this.membership = [];
    page.on('websocket', (ws) =>
      ws.on('framereceived', ({ payload }) => {
        const m = typeof payload === 'string' && /^42(\[.*)$/s.exec(payload);
        if (!m) return;
        try {
          const [name, data] = JSON.parse(m[1]);
          if (name === 'user-joined') this.membership.push(`${name}:${data.user.id}`);
          if (name === 'user-left') this.membership.push(`${name}:${data.userId}`);
        } catch {
          // Not an event of ours.
        }
      }),
    );
  }

  /** Waits until `document.body.dataset.state` is `want`; fails at once on `error`. */
  async waitState(want) {
    const handle = await this.page.waitForFunction(
      (w) => {
        const s = document.body.dataset.state;
        return s === w || s === 'error' ? s : false;
      },
      want,
      { timeout: WAIT_MS },
    );
    const got = await handle.jsonValue();
    if (got !== want) {
      const status = await this.page.locator('#status').textContent();
      throw new Error(`${this.label}: state ${got} instead of ${want}: ${status}`);
    }
  }

  /** The page's own public user id (set once joined). */
  me() {
    return this.page.evaluate(() => document.body.dataset.me || '');
  }

  /** Waits for an element matching `selector` to be attached to the DOM. */
  async waitFor(selector) {
    await this.page.locator(selector).first().waitFor({ state: 'attached', timeout: WAIT_MS });
  }
}

/** Polls `cond` (a condition of the test process, every 50 ms) until it holds, for WAIT_MS. */
async function until(cond, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let step = 'start';
let sides = [];
let browser = null;

async function main() {
  mkdirSync(SHOTS_DIR, { recursive: true });
  const started = Date.now();

  step = 'launch';
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
  const context = async () => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    await ctx.addInitScript(trackPeerConnections);
    return ctx;
  };
  const [ctxA, ctxB] = await Promise.all([context(), context()]);
  const a = new Side('A', await ctxA.newPage());
  const b = new Side('B', await ctxB.newPage());
  sides = [a, b];

  step = 'open';
  await Promise.all([a.page.goto(URL_A), b.page.goto(URL_B)]);
  await Promise.all([a.waitState('idle'), b.waitState('idle')]);

  step = 'create';
  await a.page.locator('#name').fill('Alice');
  await a.page.locator('#create').click();
  await a.waitState('joined');
  const code = (await a.page.locator('#room-code').textContent()).trim();
  if (!/^[abcdefghjkmnpqrstuvwxyz23456789]{5}$/.test(code)) {
    throw new Error(`A shows no room code: ${JSON.stringify(code)}`);
  }
  const idA = await a.me();
  if (!idA) throw new Error('A has joined but has no user id (body.dataset.me)');

  step = 'join';
  await b.page.locator('#name').fill('Bob');
  await b.page.locator('#code').fill(code);
  await b.page.locator('#join').click();
  await b.waitState('joined');
  const idB = await b.me();
  if (!idB || idB === idA) throw new Error(`B's user id ${JSON.stringify(idB)} (A's is ${idA})`);

  step = 'members';
  // Both lists converge on the same two members: the joiner gets the room in its join
  // ack, the creator through `user-joined` (possibly relayed from the other edge).
  for (const [side, mine, theirs] of [
    [a, idA, idB],
    [b, idB, idA],
  ]) {
    await side.page.waitForFunction(
      ([mine, theirs]) => {
        const lis = [...document.querySelectorAll('#members li[data-user-id]')];
        const me = lis.filter((li) => li.classList.contains('me'));
        return (
          lis.length === 2 &&
          me.length === 1 &&
          me[0].dataset.userId === mine &&
          lis.some((li) => li.dataset.userId === theirs && !li.classList.contains('me'))
        );
      },
      [mine, theirs],
      { timeout: WAIT_MS },
    );
  }

  step = 'note-a-to-b';
  // A real mouse press on middle C: pointerdown plays and sends KEY_DOWN, pointerup sends
  // KEY_UP. Over the server or the data channel, whichever is open: B must get both, from A.
  const key = a.page.locator('#keyboard [data-note="60"]');
  await key.hover();
  await a.page.mouse.down();
  await b.waitFor(`#received li[data-note="60"][data-from="${idA}"][data-kind="down"]`);
  const via = await b.page
    .locator(`#received li[data-note="60"][data-from="${idA}"][data-kind="down"]`)
    .first()
    .getAttribute('data-via');
  console.log(`A's note reached B via ${via}`);
  await a.page.mouse.up();
  await b.waitFor(`#received li[data-note="60"][data-from="${idA}"][data-kind="up"]`);

  step = 'data-channel';
  // The joiner offers a data channel to the creator through `webrtc-signal`.
  await Promise.all([
    a.waitFor(`#peers li[data-peer="${idB}"][data-channel="open"]`),
    b.waitFor(`#peers li[data-peer="${idA}"][data-channel="open"]`),
  ]);

  step = 'ice-candidates';
  // No STUN or TURN (the page's iceServers is empty). Both ends of every candidate pair
  // either page has (checked, in use or selected), and every candidate it knows, must be on
  // loopback or on the namespace's veth pair: then no packet of the data channel leaves the
  // test's namespace.
  for (const side of sides) {
    const { selected, candidates, pairs } = await side.page.evaluate(async () => {
      const selected = [];
      const candidates = [];
      const pairs = [];
      for (const pc of window.__peerConnections || []) {
        if (pc.connectionState === 'closed') continue;
        const stats = await pc.getStats();
        const byId = new Map([...stats.values()].map((s) => [s.id, s]));
        const brief = (c) =>
          c
            ? { type: c.type, candidateType: c.candidateType, address: c.address, port: c.port }
            : { type: 'missing' };
        for (const s of stats.values()) {
          if (s.type === 'local-candidate' || s.type === 'remote-candidate') candidates.push(brief(s));
          if (s.type === 'candidate-pair') {
            pairs.push({
              state: s.state,
              nominated: !!s.nominated,
              local: brief(byId.get(s.localCandidateId)),
              remote: brief(byId.get(s.remoteCandidateId)),
            });
          }
          if (s.type === 'transport' && s.selectedCandidatePairId && pc.connectionState === 'connected') {
            const pair = byId.get(s.selectedCandidatePairId);
            selected.push(brief(byId.get(pair.localCandidateId)), brief(byId.get(pair.remoteCandidateId)));
          }
        }
      }
      return { selected, candidates, pairs };
    });
    if (!selected.length) throw new Error(`${side.label}: no selected ICE candidate pair`);
    // Chromium also lists a local host candidate on the unspecified IPv6 address `::` (its
    // "any address" network, when no IPv6 route gives it a default address). It is never
    // signalled to the other page nor paired, so it can send nothing: the one exception.
    const paired = pairs.flatMap((p) => [p.local, p.remote]);
    const placeholder = (c) =>
      c.type === 'local-candidate' &&
      (c.address === '::' || c.address === '0.0.0.0') &&
      !paired.some((p) => p.address === c.address && p.port === c.port);
    const ends = [...candidates.filter((c) => !placeholder(c)), ...selected, ...paired];
    for (const c of ends) {
      // host: an interface of the namespace; prflx: learned from a connectivity check the
      // other page sent, so also one of the namespace's. Never srflx or relay: there is no
      // STUN or TURN server.
      if (!['host', 'prflx'].includes(c.candidateType) || !iceAddressAllowed(c.address)) {
        throw new Error(
          `${side.label}: an ICE candidate outside ${ICE_ALLOWED_TEXT} (or not host/prflx): ` +
            `${JSON.stringify(c)}; candidates ${JSON.stringify(candidates)}; pairs ${JSON.stringify(pairs)}`,
        );
      }
    }
    const at = (c) => `${c.address}:${c.port}`;
    const candidate = (c) =>
      `${c.type === 'local-candidate' ? 'local' : 'remote'} ${c.candidateType} ${at(c)}` +
      (placeholder(c) ? ' (unpaired placeholder)' : '');
    console.log(
      `${side.label}: data channel over ${selected.map(at).join(' <-> ')}, ` +
        `all pairs in ${ICE_ALLOWED_TEXT}: ` +
        `${pairs.map((p) => `${at(p.local)} <-> ${at(p.remote)} ${p.state}`).join(', ')}; ` +
        `candidates: ${candidates.map(candidate).join(', ')}`,
    );
  }

  step = 'note-b-to-a-p2p';
  // With the channel open, B's notes go over it, not through the server.
  await b.page.evaluate(() => window.p2piano.sendNote(64, 90));
  await a.waitFor(
    `#received li[data-note="64"][data-from="${idB}"][data-kind="down"][data-via="p2p"]`,
  );
  // The picture for the README: the room, both members, the open channel, and B's note
  // sounding on A's keyboard.
  await a.page.locator('#keyboard [data-note="64"].down.remote').waitFor({ timeout: WAIT_MS });
  const shot = path.join(SHOTS_DIR, 'demo.png');
  await a.page.screenshot({ path: shot, fullPage: true });
  await b.page.evaluate(() => window.p2piano.releaseNote(64));
  await a.waitFor(`#received li[data-note="64"][data-from="${idB}"][data-kind="up"][data-via="p2p"]`);

  step = 'reload';
  // B reloads its page: the browser closes the socket (1001) and the new page joins the same
  // room again with the same session. A hears a leave and a join, drops its link to B's old
  // page, and the new page connects to A over WebRTC again.
  a.membership.length = 0;
  const connectionsOfA = () => a.page.evaluate(() => (window.__peerConnections || []).length);
  const before = await connectionsOfA();
  await b.page.reload();
  await b.waitState('idle');
  if ((await b.page.locator('#code').inputValue()) !== code) {
    throw new Error('the reloaded page did not keep the room code from its address');
  }
  await b.page.locator('#join').click();
  await b.waitState('joined');
  if ((await b.me()) !== idB) throw new Error('the reloaded page has another user id');
  // A hears of B's new page, and builds a new peer connection to it (B's new page offers).
  await until(() => a.membership.includes(`user-joined:${idB}`), `A hearing B join again`);
  await a.page.waitForFunction((n) => (window.__peerConnections || []).length > n, before, {
    timeout: WAIT_MS,
  });
  await Promise.all([
    a.waitFor(`#peers li[data-peer="${idB}"][data-channel="open"]`),
    b.waitFor(`#peers li[data-peer="${idA}"][data-channel="open"]`),
  ]);
  const seenByA = a.membership;
  if (seenByA.join(',') !== `user-left:${idB},user-joined:${idB}`) {
    throw new Error(`A heard ${JSON.stringify(seenByA)} for B's reload, not a leave then a join`);
  }

  step = 'note-after-reload';
  // One note from the new page over the new channel, then a second one as a marker: once
  // the marker is in, the first note has arrived exactly once.
  await b.page.evaluate(() => window.p2piano.sendNote(65, 80));
  await b.page.evaluate(() => window.p2piano.sendNote(67, 80));
  await a.waitFor(
    `#received li[data-note="67"][data-from="${idB}"][data-kind="down"][data-via="p2p"]`,
  );
  const copies = await a.page
    .locator(`#received li[data-note="65"][data-from="${idB}"][data-kind="down"]`)
    .count();
  if (copies !== 1) throw new Error(`A received B's note ${copies} times after the reload`);
  const via65 = await a.page
    .locator(`#received li[data-note="65"][data-from="${idB}"][data-kind="down"]`)
    .getAttribute('data-via');
  if (via65 !== 'p2p') throw new Error(`B's note after the reload came via ${via65}, not p2p`);
  await b.page.evaluate(() => {
    window.p2piano.releaseNote(65);
    window.p2piano.releaseNote(67);
  });

  step = 'no-page-errors';
  for (const side of sides) {
    if (side.errors.length) {
      throw new Error(`${side.label}: uncaught page error: ${side.errors[0].message}`);
    }
  }

  console.log(`demo page test passed in ${((Date.now() - started) / 1000).toFixed(1)} s: ${shot}`);
}

/** Screenshots of both pages named after the failed step, and their console logs. */
async function report(err) {
  console.error(`FAILED at step "${step}": ${err && err.stack ? err.stack : err}`);
  for (const side of sides) {
    const file = path.join(SHOTS_DIR, `fail-${step}-${side.label}.png`);
    try {
      await side.page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
      console.error(`screenshot of ${side.label}: ${file}`);
    } catch (e) {
      console.error(`no screenshot of ${side.label}: ${e.message}`);
    }
    try {
      const s = await side.page.evaluate(() => ({
        state: document.body.dataset.state,
        me: document.body.dataset.me,
        status: document.getElementById('status')?.textContent,
        members: [...document.querySelectorAll('#members li')].map((li) => li.outerHTML),
        peers: [...document.querySelectorAll('#peers li')].map((li) => li.outerHTML),
        received: [...document.querySelectorAll('#received li')].map((li) => li.outerHTML),
      }));
      console.error(`page ${side.label} (${side.page.url()}): ${JSON.stringify(s, null, 2)}`);
    } catch (e) {
      console.error(`page ${side.label}: state unreadable: ${e.message}`);
    }
    console.error(`--- console of page ${side.label} ---`);
    for (const line of side.logs) console.error(line);
  }
}

const watchdog = setTimeout(() => {
  console.error(`FAILED: the test did not finish within ${OVERALL_MS / 1000} s (step "${step}")`);
  process.exit(1);
}, OVERALL_MS);

let code = 0;
try {
  await main();
} catch (err) {
  code = 1;
  await report(err);
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
process.exit(code);
