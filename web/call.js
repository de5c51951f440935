// The call page: joins a room of this node over /ws, publishes the camera and microphone with
// three simulcast layers, and shows every other publisher. Signaling protocol:
// huiyan_media::signal (see docs/media.md). Plain ES module, no dependencies.
//
// URL parameters: room (a room of this site, or `site/room` for a room of another site: the
// node relays the call), sub (caller id), role (owner|speaker|viewer), token (instead of
// room/sub/role), audio_only=1, max_height=N, lang=en.

import { TEXT as SHARED } from './i18n.js';

const TEXT = {
  zh: {
    title: '视频通话', me: '我', mute: '静音', unmute: '取消静音', cameraOff: '关闭摄像头',
    cameraOn: '打开摄像头', hangup: '挂断', lang: 'English', connecting: '正在连接…',
    connected: '通话中', reconnecting: '网络中断，正在重新连接…', failed: '连接失败，正在重试…',
    ended: '通话已结束', error: '错误：', waiting: '等待对方加入…', good: '良好', fair: '一般',
    poor: '较差', participant: '参与者',
  },
  en: {
    title: 'Video call', me: 'Me', mute: 'Mute', unmute: 'Unmute', cameraOff: 'Camera off',
    cameraOn: 'Camera on', hangup: 'Hang up', lang: '中文', connecting: 'Connecting…',
    connected: 'In call', reconnecting: 'Network lost, reconnecting…',
    failed: 'Connection failed, retrying…', ended: 'Call ended', error: 'Error: ',
    waiting: 'Waiting for others to join…', good: 'Good', fair: 'Fair', poor: 'Poor',
    participant: 'Participant',
  },
};

const params = new URLSearchParams(location.search);
let lang = params.get('lang') === 'en' ? 'en' : 'zh';
const t = (key) => TEXT[lang][key] ?? SHARED[lang][key] ?? key;

const state = {
  ws: null,
  participant: null,
  mayPublish: false,
  local: null,            // MediaStream
  publish: null,          // RTCPeerConnection
  subs: new Map(),        // publisher id -> { pc, tile, quality }
  status: 'connecting',
  statusDetail: '',
  muted: false,
  cameraOff: false,
  hungUp: false,
  retry: 0,
  lastHeard: 0,           // when the node last sent anything (ms since the page loaded)
  reconnects: 0,          // how often the page lost the call and got it back, for tests
};
// For tests and diagnostics.
window.huiyanCall = state;

// ----- UI -----

function render() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = `${lang === 'zh' ? '慧眼' : 'huiyan'} · ${t('title')}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  document.getElementById('lang').textContent = t('lang');
  const mute = document.getElementById('mute');
  mute.textContent = state.muted ? t('unmute') : t('mute');
  mute.setAttribute('aria-pressed', String(state.muted));
  const camera = document.getElementById('camera');
  camera.textContent = state.cameraOff ? t('cameraOn') : t('cameraOff');
  camera.setAttribute('aria-pressed', String(state.cameraOff));
  const status = document.getElementById('status');
  status.dataset.state = state.status;
  let text = state.status === 'error' ? t('error') + state.statusDetail : t(state.status);
  if (state.status === 'connected' && state.subs.size === 0) text = t('waiting');
  status.textContent = text;
  for (const [id, sub] of state.subs) {
    const site = sub.site ? ` · ${sub.site}` : '';
    sub.tile.querySelector('figcaption').textContent =
      `${t('participant')} ${sub.name ?? id}${site}`;
    // Video held back between sites: say why the picture stopped.
    const notice = sub.tile.querySelector('.notice');
    notice.hidden = !sub.videoLimited;
    notice.textContent = sub.videoLimited ? t('relay_audio_only') : '';
    const q = sub.tile.querySelector('.quality');
    q.dataset.q = sub.quality ?? '';
    q.textContent = sub.quality ? t(sub.quality) : '';
  }
}

function setStatus(status, detail = '') {
  state.status = status;
  state.statusDetail = detail;
  render();
}

document.getElementById('lang').onclick = () => {
  lang = lang === 'zh' ? 'en' : 'zh';
  render();
};
document.getElementById('mute').onclick = () => {
  state.muted = !state.muted;
  state.local?.getAudioTracks().forEach((track) => { track.enabled = !state.muted; });
  render();
};
document.getElementById('camera').onclick = () => {
  state.cameraOff = !state.cameraOff;
  state.local?.getVideoTracks().forEach((track) => { track.enabled = !state.cameraOff; });
  render();
};
document.getElementById('hangup').onclick = () => {
  state.hungUp = true;
  send({ type: 'leave' });
  state.ws?.close();
  teardown();
  setStatus('ended');
};

function tileFor(publisher) {
  const fig = document.createElement('figure');
  fig.dataset.publisher = String(publisher);
  fig.innerHTML = '<video autoplay playsinline></video><figcaption></figcaption>' +
    '<span class="quality"></span><p class="notice" role="status" hidden></p>';
  document.getElementById('grid').append(fig);
  return fig;
}

// ----- signaling -----

function send(msg) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

async function token() {
  if (params.get('token')) return params.get('token');
  const res = await fetch('/api/v1/media/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      room: params.get('room') ?? '',
      sub: params.get('sub') ?? `guest-${Math.random().toString(36).slice(2, 8)}`,
      role: params.get('role') ?? 'speaker',
    }),
  });
  const body = await res.json();
  if (!res.ok) {
    const err = new Error(body.error ?? res.statusText);
    err.refused = true;
    throw err;
  }
  return body.token;
}

// The node sends a keepalive every 5 s (huiyan_media::signal::KEEPALIVE_SECONDS); a socket
// that brought nothing for four times as long died without closing (the network dropped).
const SOCKET_SILENCE_MS = 20_000;

async function connect() {
  if (state.hungUp) return;
  let joinToken;
  try {
    joinToken = await token();
  } catch (err) {
    if (err.refused) {
      // The node said no (unknown room, ...): retrying would not help.
      setStatus('error', err.message);
    } else {
      // No answer: the network is still down. Try again, with the same backoff.
      setStatus(state.participant === null ? 'connecting' : 'reconnecting');
      setTimeout(connect, Math.min(8000, 500 * 2 ** state.retry++));
    }
    return;
  }
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.lastHeard = performance.now();
    ws.send(JSON.stringify({ type: 'join', token: joinToken }));
  };
  ws.onmessage = (event) => {
    state.lastHeard = performance.now();
    onMessage(JSON.parse(event.data)).catch((err) => {
      console.error(err);
      setStatus('error', err.message);
    });
  };
  ws.onclose = () => socketLost(ws);
}

// The node or the network went away: drop the connections and rejoin with backoff.
function socketLost(ws) {
  if (state.ws !== ws || state.hungUp) return;
  state.ws = null;
  ws.onclose = null;
  ws.onmessage = null;
  ws.close();
  teardown();
  setStatus('reconnecting');
  const delay = Math.min(8000, 500 * 2 ** state.retry++);
  setTimeout(connect, delay);
}

async function onMessage(msg) {
  switch (msg.type) {
    case 'joined':
      if (state.participant !== null) state.reconnects += 1;
      state.retry = 0;
      state.participant = msg.participant;
      state.mayPublish = msg.may_publish;
      setStatus('connected');
      if (msg.may_publish) await publish();
      for (const peer of msg.peers) await subscribe(peer);
      break;
    case 'published':
      await subscribe(msg);
      break;
    case 'left':
      dropSub(msg.participant);
      render();
      break;
    case 'answer': {
      const pc = msg.pc === 'publish' ? state.publish : state.subs.get(pubOf(msg.pc))?.pc;
      if (pc) await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      break;
    }
    case 'connection':
      onConnectionState(msg.pc, msg.state);
      break;
    case 'quality': {
      const sub = state.subs.get(msg.publisher);
      if (sub) {
        sub.layer = msg.layer;
        sub.estimateKbps = msg.estimate_kbps;
      }
      break;
    }
    case 'relay': {
      const sub = state.subs.get(msg.publisher);
      if (sub) {
        sub.videoLimited = msg.video_limited;
        render();
      }
      break;
    }
    case 'error':
      setStatus('error', msg.message);
      break;
    default:
      break;
  }
}

const pubOf = (label) => Number(label.slice('sub:'.length));
const pcOf = (label) => (label === 'publish' ? state.publish : state.subs.get(pubOf(label))?.pc);

// What the node says about one of our connections: it may fail on its side first.
function onConnectionState(label, pcState) {
  if (pcState === 'failed') restartIce(label);
  refreshStatus();
}

// The call's status from every connection as this browser sees it: the page shows that the
// network is lost as soon as the browser notices, not only when the node can tell it.
function refreshStatus() {
  if (state.hungUp || state.status === 'error' || !state.ws) return;
  if (state.participant === null) return;
  const pcs = [state.publish, ...[...state.subs.values()].map((sub) => sub.pc)].filter(Boolean);
  const states = pcs.map((pc) => pc.connectionState);
  if (states.includes('failed')) setStatus('failed');
  else if (states.includes('disconnected')) setStatus('reconnecting');
  else if (states.every((s) => s === 'connected' || s === 'new' || s === 'connecting')) {
    if (state.status !== 'connected') setStatus('connected');
  }
}

async function restartIce(label) {
  const pc = pcOf(label);
  if (!pc || pc.signalingState !== 'stable' || state.ws?.readyState !== WebSocket.OPEN) return;
  const offer = await pc.createOffer({ iceRestart: true });
  await pc.setLocalDescription(offer);
  send({ type: 'restart', pc: label, sdp: offer.sdp });
}

// ----- media -----

async function publish() {
  if (!state.local) {
    state.local = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 1280, height: 720, frameRate: 30 },
    });
    document.getElementById('local-video').srcObject = state.local;
  }
  const pc = new RTCPeerConnection();
  state.publish = pc;
  const [audio] = state.local.getAudioTracks();
  const [video] = state.local.getVideoTracks();
  if (audio) pc.addTransceiver(audio, { direction: 'sendonly' });
  if (video) {
    pc.addTransceiver(video, {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'f', maxBitrate: 1_500_000 },
      ],
    });
  }
  // Under CPU or bandwidth pressure, lower the resolution before the frame rate: a
  // conversation needs smooth faces and lips more than detail.
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind !== 'video') continue;
    const parameters = sender.getParameters();
    parameters.degradationPreference = 'maintain-framerate';
    await sender.setParameters(parameters).catch(() => {});
  }
  watch(pc, 'publish');
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const height = video?.getSettings().height ?? 720;
  send({
    type: 'publish',
    sdp: offer.sdp,
    layer_heights: [Math.round(height / 4), Math.round(height / 2), height],
  });
}

async function subscribe(peer) {
  if (peer.participant === state.participant || state.subs.has(peer.participant)) return;
  const audioOnly = params.get('audio_only') === '1';
  const pc = new RTCPeerConnection();
  const tile = tileFor(peer.participant);
  const stream = new MediaStream();
  tile.querySelector('video').srcObject = stream;
  state.subs.set(peer.participant, {
    pc, tile, name: peer.sub, site: peer.site ?? null, quality: null, videoLimited: false,
  });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  if (!audioOnly && peer.video) pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = (event) => stream.addTrack(event.track);
  watch(pc, `sub:${peer.participant}`);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const maxHeight = Number(params.get('max_height')) || undefined;
  send({
    type: 'subscribe',
    publisher: peer.participant,
    sdp: offer.sdp,
    audio_only: audioOnly,
    max_height: maxHeight,
  });
  render();
}

function watch(pc, label) {
  pc.onconnectionstatechange = () => {
    if (pc !== pcOf(label)) return;
    if (pc.connectionState === 'failed') restartIce(label);
    refreshStatus();
  };
  pc.onicecandidate = (event) => {
    if (event.candidate) {
      send({
        type: 'candidate', pc: label, candidate: event.candidate.candidate,
        sdp_mid: event.candidate.sdpMid, sdp_mline_index: event.candidate.sdpMLineIndex,
      });
    }
  };
}

function dropSub(publisher) {
  const sub = state.subs.get(publisher);
  if (!sub) return;
  sub.pc.close();
  sub.tile.remove();
  state.subs.delete(publisher);
}

function teardown() {
  state.publish?.close();
  state.publish = null;
  for (const id of [...state.subs.keys()]) dropSub(id);
}

// Connection quality: loss and frame rate of what we receive, every 2 s.
async function measure() {
  for (const sub of state.subs.values()) {
    const stats = await sub.pc.getStats();
    let lost = 0;
    let received = 0;
    let fps = null;
    stats.forEach((report) => {
      if (report.type === 'inbound-rtp') {
        lost += report.packetsLost ?? 0;
        received += report.packetsReceived ?? 0;
        if (report.kind === 'video') fps = report.framesPerSecond ?? 0;
      }
    });
    const lossDelta = lost - (sub.lastLost ?? 0);
    const recvDelta = received - (sub.lastReceived ?? 0);
    sub.lastLost = lost;
    sub.lastReceived = received;
    const loss = recvDelta + lossDelta > 0 ? lossDelta / (recvDelta + lossDelta) : 0;
    if (recvDelta === 0) sub.quality = 'poor';
    else if (loss > 0.05 || (fps !== null && fps < 10)) sub.quality = 'poor';
    else if (loss > 0.01 || (fps !== null && fps < 20)) sub.quality = 'fair';
    else sub.quality = 'good';
  }
  render();
}
setInterval(() => { measure().catch(() => {}); }, 2000);

// Every 2 s: a silent socket is dead; a connection still failed after its ICE restart (or that
// could not restart while the socket was down) restarts again.
setInterval(() => {
  if (state.ws?.readyState === WebSocket.OPEN
      && performance.now() - state.lastHeard > SOCKET_SILENCE_MS) {
    socketLost(state.ws);
    return;
  }
  const labels = [['publish', state.publish],
    ...[...state.subs.entries()].map(([id, sub]) => [`sub:${id}`, sub.pc])];
  for (const [label, pc] of labels) {
    if (pc?.connectionState === 'failed') restartIce(label);
  }
}, 2000);

render();
connect();
