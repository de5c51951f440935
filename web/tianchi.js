// 天池和 (Tianchi Harmony): the tourist's phone app for a mediation room. Opened from the room's
// signboard QR code (/m/<room>) or from an invitation link (/tianchi.html?call=..#invite=..).
// Chinese by default, English and Korean always available. Plain ES module, no dependencies.
//
// Flow: room info -> (closed: alternative room or callback) -> form and consent -> queue
// (position, expected wait) -> session (the call page in a frame) -> agreement (name and drawn
// signature) -> done. State lives on the node; this page polls it every 2 s.

const TEXT = {
  zh: {
    brand: '天池和 · 长白山旅游纠纷视频调解',
    form_intro: '请简要说明情况，调解员会通过视频与您联系。',
    what_happened: '发生了什么？', other_party: '对方是谁？（商家、司机、酒店等）',
    amount: '争议金额（元，可不填）', your_name: '您的姓名（可不填）', phone: '手机号码（可不填）',
    consent_online: '我同意通过在线视频进行调解。',
    consent_recording: '我同意调解过程被录音录像，并随案件保存。',
    start_call: '开始视频调解', waiting_title: '已进入排队，请稍候。', position: '您前面还有：',
    expected_wait: '预计等待：', minutes: '分钟', less_than_minute: '不到 1 分钟',
    leave: '离开排队', callback_note: '我们会尽快给您回电。',
    recording: '● 录制中', side_room: '调解员正在与您单独沟通。',
    agreement_title: '调解协议', sign_name: '请输入您的姓名', sign_here: '请在下方签名',
    clear: '重写', confirm: '确认并签署', signed_wait: '您已签署，等待对方签署。',
    signed_done: '双方已签署，协议已随案件保存。', ended: '调解已结束，感谢您的耐心。',
    invite_intro: '您被邀请参加一场视频调解。', join_session: '加入调解',
    call_alternative: '转接长白山调解中心', ask_callback: '请求回电',
    reason_unstaffed: '该调解室目前没有调解员在岗。',
    reason_unreachable: '目前无法连接该调解室（山区网络中断）。',
    errors: {
      consent_required: '请先同意在线视频调解。', what_happened_missing: '请说明发生了什么。',
      other_party_missing: '请填写对方。', amount_invalid: '金额无效。',
      phone_invalid: '手机号码无效。', phone_required: '请求回电需要手机号码。',
      rate_limited: '请求过于频繁，请稍后再试。', not_found: '找不到该调解室，请重新扫码。',
      name_missing: '请输入姓名。', name_unprintable: '姓名中有无法打印的字符，请改写。', signature_invalid: '请在签名框内签名。',
      agreement_changed: '协议已更新，请重新阅读。', room_unstaffed: '该调解室目前无人值守。',
      room_unreachable: '目前无法连接该调解室。', bad_call_token: '本次通话已失效，请重新开始。',
      network: '网络不稳定，正在重试……',
    },
  },
  en: {
    brand: 'Tianchi Harmony · Changbaishan tourist dispute mediation by video',
    form_intro: 'Tell us briefly what happened; a mediator will see you by video.',
    what_happened: 'What happened?', other_party: 'Who is the other party? (shop, driver, hotel...)',
    amount: 'Amount in dispute (yuan, optional)', your_name: 'Your name (optional)',
    phone: 'Phone number (optional)',
    consent_online: 'I agree to mediation by online video.',
    consent_recording: 'I agree that the session is recorded and kept with the case.',
    start_call: 'Start video mediation', waiting_title: 'You are in the queue. Please wait.',
    position: 'Your place in the queue:', expected_wait: 'Expected wait:', minutes: 'min',
    less_than_minute: 'under 1 min', leave: 'Leave the queue',
    callback_note: 'We will call you back as soon as we can.',
    recording: '● Recording', side_room: 'The mediator is speaking with you privately.',
    agreement_title: 'Mediation agreement', sign_name: 'Your full name',
    sign_here: 'Sign below', clear: 'Clear', confirm: 'Confirm and sign',
    signed_wait: 'You have signed. Waiting for the other party.',
    signed_done: 'Both parties have signed; the agreement is kept with the case.',
    ended: 'The mediation has ended. Thank you for your patience.',
    invite_intro: 'You are invited to a video mediation session.', join_session: 'Join',
    call_alternative: 'Call the Changbaishan Mediation Centre', ask_callback: 'Ask for a callback',
    reason_unstaffed: 'No mediator is on duty in this room right now.',
    reason_unreachable: 'This room cannot be reached right now (the mountain link is down).',
    errors: {
      consent_required: 'Please agree to mediation by online video first.',
      what_happened_missing: 'Please say what happened.',
      other_party_missing: 'Please name the other party.', amount_invalid: 'The amount is not valid.',
      phone_invalid: 'The phone number is not valid.',
      phone_required: 'A callback needs a phone number.',
      rate_limited: 'Too many requests; please try again later.',
      not_found: 'This room was not found; please scan the signboard again.',
      name_missing: 'Please type your name.',
      name_unprintable: 'Your name has characters the agreement cannot print; please rewrite it.', signature_invalid: 'Please sign in the box.',
      agreement_changed: 'The agreement changed; please read it again.',
      room_unstaffed: 'No mediator is on duty in this room.',
      room_unreachable: 'This room cannot be reached right now.',
      bad_call_token: 'This call has expired; please start again.',
      network: 'The network is unstable; retrying…',
    },
  },
  ko: {
    brand: '천지화 · 장백산 관광 분쟁 화상 조정',
    form_intro: '상황을 간단히 알려 주세요. 조정위원이 화상으로 연결해 드립니다.',
    what_happened: '무슨 일이 있었나요?', other_party: '상대방은 누구인가요? (상점, 기사, 호텔 등)',
    amount: '분쟁 금액 (위안, 선택)', your_name: '성함 (선택)', phone: '전화번호 (선택)',
    consent_online: '온라인 화상 조정에 동의합니다.',
    consent_recording: '조정 과정의 녹화 및 사건 기록 보관에 동의합니다.',
    start_call: '화상 조정 시작', waiting_title: '대기열에 등록되었습니다. 잠시 기다려 주세요.',
    position: '내 앞의 대기 인원:', expected_wait: '예상 대기 시간:', minutes: '분',
    less_than_minute: '1분 미만', leave: '대기 취소',
    callback_note: '최대한 빨리 전화드리겠습니다.',
    recording: '● 녹화 중', side_room: '조정위원이 귀하와 따로 이야기하고 있습니다.',
    agreement_title: '조정 합의서', sign_name: '성함을 입력하세요', sign_here: '아래에 서명하세요',
    clear: '다시 쓰기', confirm: '확인 및 서명', signed_wait: '서명했습니다. 상대방의 서명을 기다립니다.',
    signed_done: '양측이 서명했으며 합의서는 사건과 함께 보관됩니다.',
    ended: '조정이 끝났습니다. 기다려 주셔서 감사합니다.',
    invite_intro: '화상 조정에 초대되었습니다.', join_session: '참여하기',
    call_alternative: '장백산 조정센터로 연결', ask_callback: '회신 전화 요청',
    reason_unstaffed: '지금 이 조정실에 근무 중인 조정위원이 없습니다.',
    reason_unreachable: '지금 이 조정실에 연결할 수 없습니다 (산간 통신 장애).',
    errors: {
      consent_required: '먼저 온라인 화상 조정에 동의해 주세요.',
      what_happened_missing: '무슨 일이 있었는지 적어 주세요.',
      other_party_missing: '상대방을 적어 주세요.', amount_invalid: '금액이 올바르지 않습니다.',
      phone_invalid: '전화번호가 올바르지 않습니다.', phone_required: '회신 전화에는 전화번호가 필요합니다.',
      rate_limited: '요청이 너무 많습니다. 잠시 후 다시 시도하세요.',
      not_found: '조정실을 찾을 수 없습니다. 다시 스캔해 주세요.',
      name_missing: '성함을 입력하세요.', name_unprintable: '합의서에 인쇄할 수 없는 문자가 있습니다. 다시 입력하세요.', signature_invalid: '서명란에 서명해 주세요.',
      agreement_changed: '합의서가 변경되었습니다. 다시 읽어 주세요.',
      room_unstaffed: '이 조정실은 지금 비어 있습니다.',
      room_unreachable: '지금 이 조정실에 연결할 수 없습니다.',
      bad_call_token: '통화가 만료되었습니다. 다시 시작하세요.',
      network: '네트워크가 불안정합니다. 다시 시도 중…',
    },
  },
};

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
const saved = localStorage.getItem('huiyan.tianchi.lang');
let lang = [params.get('lang'), saved].find((l) => l && l in TEXT) || 'zh';
const t = (key) => TEXT[lang][key] ?? TEXT.en[key] ?? key;

const state = {
  room: null,          // RoomInfo
  info: null,          // PublicRoom
  call: params.get('call') || sessionStorage.getItem('tianchi.call'),
  token: hash.get('invite') || sessionStorage.getItem('tianchi.token'),
  invited: hash.has('invite'),
  view: null,          // CallView
  frameToken: null,
  signedVersion: null,
};
// For tests and diagnostics.
window.tianchi = state;

const $ = (id) => document.getElementById(id);

function show(...ids) {
  for (const s of ['closed', 'form-screen', 'invite-screen', 'waiting', 'session', 'agreement',
    'ended']) {
    $(s).hidden = !ids.includes(s);
  }
}

function showError(code, message) {
  const el = $('error');
  if (!code) {
    el.hidden = true;
    return;
  }
  el.textContent = TEXT[lang].errors[code] ?? message ?? code;
  el.hidden = false;
}

function roomName(room) {
  if (!room) return '…';
  if (lang === 'ko') return room.name_ko || room.name_en;
  return lang === 'zh' ? room.name_zh : room.name_en;
}

function applyLang() {
  document.documentElement.lang = { zh: 'zh-CN', en: 'en', ko: 'ko' }[lang];
  document.title = `${t('brand').split(' · ')[0]} · ${roomName(state.room)}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  $('room-name').textContent = roomName(state.room);
  if (state.info) renderRoom();
  if (state.view) renderCall();
}

async function api(method, path, body) {
  const headers = { 'content-type': 'application/json' };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw Object.assign(new Error(data?.error ?? r.statusText), { code: data?.code });
  return data;
}

// ----- Room and form -----

function renderRoom() {
  const info = state.info;
  if (state.call) return;
  if (info.closed_reason) {
    $('closed-reason').textContent = t(`reason_${info.closed_reason}`);
    $('go-alternative').hidden = !info.alternative;
    show('closed');
  } else {
    show('form-screen');
  }
}

async function loadRoom(id) {
  try {
    state.info = await api('GET', `/api/v1/rooms/${encodeURIComponent(id)}`);
    state.room = state.info.room;
    applyLang();
  } catch (e) {
    showError(e.code ?? 'network', e.message);
  }
}

function formData() {
  const value = (id) => $(id).value.trim();
  const amount = value('amount');
  return {
    what_happened: value('what'),
    other_party: value('other'),
    amount_cny: amount === '' ? null : Number(amount),
    name: value('name') || null,
    phone: value('phone') || null,
  };
}

async function placeCall(extra = {}) {
  showError(null);
  const body = {
    room: state.room.id,
    lang,
    form: formData(),
    consent: { online: $('consent-online').checked, recording: $('consent-recording').checked },
    ...extra,
  };
  if (!body.consent.online) {
    showError('consent_required');
    return;
  }
  try {
    const placed = await api('POST', '/api/v1/mediation/calls', body);
    state.call = placed.call;
    state.token = placed.token;
    sessionStorage.setItem('tianchi.call', placed.call);
    sessionStorage.setItem('tianchi.token', placed.token);
    poll();
  } catch (e) {
    showError(e.code ?? 'network', e.message);
  }
}

// ----- The call -----

function minutes(seconds) {
  if (seconds < 60) return t('less_than_minute');
  return `${Math.round(seconds / 60)} ${t('minutes')}`;
}

function renderCall() {
  const v = state.view;
  if (!v) return;
  if (v.status === 'waiting' || v.status === 'callback') {
    $('position').textContent = String(Math.max(0, (v.position ?? 1) - 1));
    $('wait').textContent = minutes(v.expected_wait_s);
    $('callback-note').hidden = v.status !== 'callback';
    show('waiting');
    return;
  }
  if (v.status === 'left' || v.status === 'done') {
    if (v.agreement && !v.agreement.complete) {
      renderAgreement(v.agreement);
      show('agreement');
    } else {
      show('ended');
    }
    return;
  }
  const sections = ['session'];
  const s = v.session;
  if (s) {
    $('case-number').textContent = s.number;
    $('recording').hidden = !s.recording;
    $('side-note').hidden = s.place !== 'side';
    if (state.frameRoom !== s.media_room) {
      // A new room (the session started, or the party moved to the side room and back).
      state.frameRoom = s.media_room;
      $('call').src = `/call.html?token=${encodeURIComponent(s.media_token)}&lang=${lang === 'zh' ? 'zh' : 'en'}`;
    }
  }
  if (v.agreement) {
    renderAgreement(v.agreement);
    sections.push('agreement');
  }
  show(...sections);
}

function renderAgreement(a) {
  // The whole agreement as it will be printed, when the node sends it; else the terms.
  const doc = a.document;
  const items = doc
    ? [doc.title, doc.number, doc.notice, ...doc.sections.flatMap((s) => [s.heading, ...s.paragraphs])]
      .filter(Boolean)
      .map((text) => {
        const p = document.createElement('p');
        p.textContent = text;
        return p;
      })
    : a.terms.map((term) => {
      const li = document.createElement('li');
      li.textContent = term;
      return li;
    });
  $('terms').replaceChildren(...items);
  const mine = a.confirmed.includes(state.view.role);
  $('sign').hidden = mine;
  $('signed').hidden = !mine && !a.complete;
  $('signed').textContent = a.complete ? t('signed_done') : t('signed_wait');
}

async function poll() {
  if (!state.call || !state.token) return;
  try {
    state.view = await api('GET', `/api/v1/mediation/calls/${encodeURIComponent(state.call)}`);
    showError(null);
    if (!state.room) await loadRoom(state.view.room);
    renderCall();
  } catch (e) {
    if (e.code === 'bad_call_token') {
      sessionStorage.clear();
      state.call = null;
      state.token = null;
    }
    showError(e.code ?? 'network', e.message);
  }
}

// ----- Signature pad -----

function setUpPad() {
  const pad = $('pad');
  const ctx = pad.getContext('2d');
  ctx.lineWidth = 3;
  ctx.lineCap = 'round';
  ctx.strokeStyle = '#10233a';
  let drawing = false;
  state.inked = false;
  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener('pointerdown', (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    ctx.beginPath();
    ctx.moveTo(...point(e));
  });
  pad.addEventListener('pointermove', (e) => {
    if (!drawing) return;
    ctx.lineTo(...point(e));
    ctx.stroke();
    state.inked = true;
  });
  pad.addEventListener('pointerup', () => { drawing = false; });
  $('clear-pad').addEventListener('click', () => {
    ctx.clearRect(0, 0, pad.width, pad.height);
    state.inked = false;
  });
}

async function confirmAgreement() {
  const a = state.view?.agreement;
  if (!a) return;
  if (!state.inked) {
    showError('signature_invalid');
    return;
  }
  try {
    await api('POST', `/api/v1/mediation/calls/${encodeURIComponent(state.call)}/confirm`, {
      version: a.version,
      name: $('sign-name').value.trim(),
      signature_png: $('pad').toDataURL('image/png'),
    });
    poll();
  } catch (e) {
    showError(e.code ?? 'network', e.message);
  }
}

// ----- Start -----

for (const b of document.querySelectorAll('[data-lang]')) {
  b.addEventListener('click', () => {
    lang = b.dataset.lang;
    localStorage.setItem('huiyan.tianchi.lang', lang);
    applyLang();
  });
}
$('call-form').addEventListener('submit', (e) => {
  e.preventDefault();
  placeCall();
});
$('go-alternative').addEventListener('click', async () => {
  const from = state.room.id;
  await loadRoom(state.info.alternative.id);
  state.reroutedFrom = from;
  show('form-screen');
  $('call-form').onsubmit = (e) => {
    e.preventDefault();
    e.stopImmediatePropagation();
    placeCall({ rerouted_from: from });
  };
});
$('ask-callback').addEventListener('click', () => {
  $('phone').value = $('callback-phone').value;
  $('consent-online').checked = true;
  if (!$('what').value.trim()) $('what').value = '-';
  if (!$('other').value.trim()) $('other').value = '-';
  placeCall({ callback: true });
});
$('accept-invite').addEventListener('click', async () => {
  if (!$('invite-consent-online').checked) {
    showError('consent_required');
    return;
  }
  // The node keeps the consent: the session opens with it, and recording needs it.
  try {
    await api('POST', `/api/v1/mediation/calls/${encodeURIComponent(state.call)}/consent`, {
      online: true, recording: $('invite-consent-recording').checked,
    });
  } catch (e) {
    showError(e.code ?? 'network', e.message);
    return;
  }
  showError(null);
  sessionStorage.setItem('tianchi.call', state.call);
  sessionStorage.setItem('tianchi.token', state.token);
  state.invited = false;
  poll();
});
$('leave').addEventListener('click', async () => {
  try {
    await api('DELETE', `/api/v1/mediation/calls/${encodeURIComponent(state.call)}`);
  } catch (e) {
    showError(e.code ?? 'network', e.message);
  }
  sessionStorage.clear();
  show('ended');
  state.call = null;
});
$('confirm').addEventListener('click', confirmAgreement);
setUpPad();
applyLang();

const roomId = location.pathname.startsWith('/m/')
  ? decodeURIComponent(location.pathname.slice(3))
  : params.get('room');
if (state.invited) {
  show('invite-screen');
} else if (state.call && state.token) {
  poll();
} else if (roomId) {
  loadRoom(roomId);
} else {
  showError('not_found');
}
setInterval(() => {
  if (!state.invited) poll();
}, 2000);
