// The mediator's console: sign in, say you are taking calls, see the room's queue, take a call,
// run the session (video, side room, recording flag, invitation of the other party), keep the
// case and draft the agreement. Chinese by default, English available. Plain ES module.

const TEXT = {
  zh: {
    title: '调解员工作台', signin: '登录', username: '用户名', password: '密码', room: '调解室',
    available: '在岗接听', mediators: '在岗调解员：', queue: '排队', callbacks: '回电请求',
    take: '接听', waited: '已等待', minutes: '分钟', case: '案件', recording: '● 录制中',
    rec_on: '开始录制', rec_off: '停止录制', side_to: '单独沟通：', back_to_main: '返回主会场：',
    applicant: '申请人', respondent: '被申请人', me_side: '我进入单独沟通室', me_main: '我返回主会场',
    invite: '邀请对方', category: '纠纷类别', status: '状态', step: '调解过程记录', outcome: '结果',
    save: '保存', terms: '协议条款（每行一条）', draft: '生成协议并请双方签署', end: '结束调解',
    pdf: '下载协议 PDF', confirmed: '已签署：', none: '无', empty: '暂无',
    recordings: '录像', no_recordings: '暂无录像', play: '播放', mediator: '调解员',
    participant: '参与人', side_room: '单独沟通室',
    categories: { '': '（未选）', consumer: '消费纠纷', accommodation: '住宿纠纷', catering: '餐饮纠纷',
      transport: '交通运输纠纷', tour_service: '旅游服务合同纠纷', personal_injury: '人身损害赔偿纠纷',
      property_damage: '财产损害赔偿纠纷', other: '其他纠纷' },
    statuses: { new: '新建', in_mediation: '调解中', agreed: '达成协议', not_agreed: '未达成协议',
      referred: '已移送', closed: '已结案' },
    errors: { text_unprintable: '有字符无法打印在协议上，请改写。', bad_credentials: '用户名或密码错误。', forbidden: '没有权限。',
      unauthenticated: '请先登录。', rate_limited: '尝试次数过多，请稍后再试。',
      call_not_waiting: '该来电已被接听或已离开。', no_recording_consent: '当事人未同意录制。',
      network: '网络不稳定，正在重试……' },
  },
  en: {
    title: 'Mediator console', signin: 'Sign in', username: 'Username', password: 'Password',
    room: 'Mediation room', available: 'Taking calls', mediators: 'Mediators on duty:',
    queue: 'Queue', callbacks: 'Callback requests', take: 'Take', waited: 'waited',
    minutes: 'min', case: 'Case', recording: '● Recording', rec_on: 'Start recording',
    rec_off: 'Stop recording', side_to: 'Private talk: ', back_to_main: 'Back to main: ',
    applicant: 'Applicant', respondent: 'Respondent', me_side: 'Go to the side room',
    me_main: 'Back to the main room', invite: 'Invite the other party', category: 'Category',
    status: 'Status', step: 'Note a step', outcome: 'Outcome', save: 'Save',
    terms: 'Agreement terms (one per line)', draft: 'Draft the agreement for both to sign',
    end: 'End the session', pdf: 'Download the agreement (PDF)', confirmed: 'Signed by: ',
    none: 'nobody', empty: 'nobody waiting', recordings: 'Recordings',
    no_recordings: 'No recordings yet', play: 'Play', mediator: 'Mediator',
    participant: 'Participant', side_room: 'side room',
    categories: { '': '(not set)', consumer: 'Consumer', accommodation: 'Accommodation',
      catering: 'Catering', transport: 'Transport', tour_service: 'Tour service',
      personal_injury: 'Personal injury', property_damage: 'Property damage', other: 'Other' },
    statuses: { new: 'New', in_mediation: 'In mediation', agreed: 'Agreed',
      not_agreed: 'Not agreed', referred: 'Referred', closed: 'Closed' },
    errors: { text_unprintable: 'Some characters cannot be printed in the agreement; rewrite them.',
      bad_credentials: 'Wrong username or password.', forbidden: 'Not allowed.',
      unauthenticated: 'Please sign in.', rate_limited: 'Too many attempts; wait a while.',
      call_not_waiting: 'That call was taken or left.',
      no_recording_consent: 'A party did not consent to a recording.',
      network: 'The network is unstable; retrying…' },
  },
};

let lang = localStorage.getItem('huiyan.lang') === 'en' ? 'en' : 'zh';
const t = (k) => TEXT[lang][k] ?? k;
const $ = (id) => document.getElementById(id);
const state = { me: null, room: null, queue: null, caseView: null, frameRoom: null, mePlace: 'main' };
window.mediatorConsole = state;

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw Object.assign(new Error(data?.error ?? r.statusText), { code: data?.code });
  return data;
}

function showError(e) {
  const el = $('error');
  if (!e) {
    el.hidden = true;
    return;
  }
  el.textContent = TEXT[lang].errors[e.code] ?? e.message;
  el.hidden = false;
}

function applyLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = `${lang === 'zh' ? '慧眼' : 'huiyan'} · ${t('title')}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const o of $('status').options) o.textContent = TEXT[lang].statuses[o.value];
  for (const o of $('category').options) o.textContent = TEXT[lang].categories[o.value];
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  renderQueue();
  renderCase();
  renderRecordings();
}

// ----- Sign-in and rooms -----

async function start() {
  try {
    state.me = await api('GET', '/api/v1/session');
  } catch {
    $('signin').hidden = false;
    $('console').hidden = true;
    return;
  }
  $('who').textContent = state.me.account.display_name;
  $('signin').hidden = true;
  $('console').hidden = false;
  const rooms = (await api('GET', '/api/v1/rooms'))
    .filter((r) => r.kind === 'mediation' && r.site === state.me.site);
  const options = rooms.map((r) => {
    const o = document.createElement('option');
    o.value = r.id;
    o.textContent = lang === 'zh' ? r.name_zh : r.name_en;
    return o;
  });
  $('room').replaceChildren(...options);
  state.room = params.get('room') ?? rooms[0]?.id ?? null;
  if (state.room) $('room').value = state.room;
  heartbeat();
  refresh();
}

async function heartbeat() {
  if (!state.room) return;
  try {
    await api('POST', '/api/v1/mediation/presence', {
      room: state.room, available: $('available').checked,
    });
  } catch (e) {
    showError(e);
  }
}

// ----- Queue -----

function item(call, label, onClick) {
  const li = document.createElement('li');
  const text = document.createElement('span');
  const amount = call.amount_cny != null ? ` · ¥${call.amount_cny}` : '';
  const lang = { zh: '中文', en: 'English', ko: '한국어' }[call.lang] ?? call.lang;
  text.textContent = `${t('waited')} ${Math.floor(call.waited_s / 60)} ${t('minutes')} · ${lang}${amount}`;
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'primary';
  b.textContent = label;
  b.dataset.call = call.call;
  b.addEventListener('click', onClick);
  li.append(text, b);
  return li;
}

function renderQueue() {
  const q = state.queue;
  if (!q) return;
  $('mediators').textContent = String(q.mediators);
  const empty = () => {
    const li = document.createElement('li');
    li.textContent = t('empty');
    return li;
  };
  const waiting = q.waiting.map((c) => item(c, t('take'), () => take(c.call)));
  const callbacks = q.callbacks.map((c) => item(c, t('take'), () => take(c.call)));
  $('queue').replaceChildren(...(waiting.length ? waiting : [empty()]));
  $('callbacks').replaceChildren(...(callbacks.length ? callbacks : [empty()]));
}

async function refresh() {
  if (!state.room) return;
  try {
    state.queue = await api('GET', `/api/v1/mediation/queue?room=${encodeURIComponent(state.room)}`);
    renderQueue();
    if (state.caseView) {
      state.caseView = await api('GET', `/api/v1/mediation/cases/${state.caseView.case.case}`);
      renderCase();
      await refreshRecordings();
    }
    showError(null);
  } catch (e) {
    showError(e);
  }
}

async function take(call) {
  try {
    state.caseView = await api('POST', `/api/v1/mediation/calls/${encodeURIComponent(call)}/take`);
    state.mePlace = 'main';
    fillCaseForm();
    await joinRoom('main');
    refresh();
  } catch (e) {
    showError(e);
  }
}

// ----- The case -----

async function joinRoom(place) {
  const c = state.caseView.case;
  const j = await api('POST', `/api/v1/mediation/cases/${c.case}/join?room=${place}`);
  state.mePlace = place;
  state.frameRoom = j.media_room;
  $('call').src = `/call.html?token=${encodeURIComponent(j.media_token)}&lang=${lang}`;
  renderCase();
}

function fillCaseForm() {
  const c = state.caseView.case;
  const name = (role) => c.parties.find((p) => p.role === role)?.name ?? '';
  $('applicant').value = name('applicant');
  $('respondent').value = name('respondent');
  $('category').value = c.category;
  $('status').value = c.status;
  $('outcome').value = c.outcome;
  $('step').value = '';
}

function renderCase() {
  const v = state.caseView;
  $('case').hidden = !v;
  if (!v) return;
  const c = v.case;
  $('case-number').textContent = c.number;
  $('case-what').textContent = v.form
    ? `${v.form.what_happened} — ${v.form.other_party}${v.form.amount_cny != null ? ` · ¥${v.form.amount_cny}` : ''}`
    : c.claim;
  $('rec-badge').hidden = !c.recording;
  $('rec').textContent = c.recording ? t('rec_off') : t('rec_on');
  for (const role of ['applicant', 'respondent']) {
    const party = c.parties.find((p) => p.role === role);
    const b = $(`side-${role}`);
    b.hidden = !party;
    if (party) {
      b.textContent = (party.place === 'side' ? t('back_to_main') : t('side_to')) + t(role);
    }
  }
  $('me-side').textContent = state.mePlace === 'side' ? t('me_main') : t('me_side');
  const a = v.agreement;
  $('agreement-state').textContent = a
    ? `v${a.version} · ${t('confirmed')}${a.confirmed.map((r) => t(r)).join('、') || t('none')}`
    : '';
  $('pdf').hidden = !(a && a.complete);
  $('pdf').href = `/api/v1/mediation/cases/${c.case}/agreement.pdf`;
}

// The case's recordings: re-drawn only when the list changes, and loaded only when played
// (every playback is audited).
let recordingsKey = null;
let recordingsList = [];

function renderRecordings() {
  const items = recordingsList.map((r) => {
    const li = document.createElement('li');
    const when = new Date(r.started_ms).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB');
    const secs = Math.round(r.duration_ms / 1000);
    const where = r.room === 'side' ? ` · ${t('side_room')}` : '';
    const span = document.createElement('span');
    span.textContent = `${t(r.role)}${where} · ${when} · ${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, '0')}`;
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = t('play');
    b.dataset.sha256 = r.sha256;
    b.addEventListener('click', () => {
      const v = $('player');
      v.hidden = false;
      v.src = `/api/v1/mediation/cases/${encodeURIComponent(r.case)}/recordings/${r.sha256}`;
      v.play().catch(() => {});
    });
    li.append(span, b);
    return li;
  });
  if (!items.length) {
    const li = document.createElement('li');
    li.textContent = t('no_recordings');
    items.push(li);
  }
  $('recordings').replaceChildren(...items);
}

async function refreshRecordings() {
  const c = state.caseView?.case;
  if (!c) return;
  const list = await api('GET', `/api/v1/mediation/cases/${encodeURIComponent(c.case)}/recordings`);
  const key = `${c.case}:${list.map((r) => r.sha256).join(',')}`;
  if (key === recordingsKey) return;
  recordingsKey = key;
  recordingsList = list;
  renderRecordings();
}

async function patchCase(change) {
  try {
    state.caseView = await api('PATCH', `/api/v1/mediation/cases/${state.caseView.case.case}`, change);
    renderCase();
  } catch (e) {
    showError(e);
  }
}

// ----- Wiring -----

const params = new URLSearchParams(location.search);
for (const b of document.querySelectorAll('[data-lang]')) {
  b.addEventListener('click', () => {
    lang = b.dataset.lang;
    localStorage.setItem('huiyan.lang', lang);
    applyLang();
  });
}
$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    await api('POST', '/api/v1/session', { username: $('username').value, password: $('password').value });
    showError(null);
    start();
  } catch (err) {
    showError(err);
  }
});
$('room').addEventListener('change', () => {
  state.room = $('room').value;
  heartbeat();
  refresh();
});
$('available').addEventListener('change', heartbeat);
$('rec').addEventListener('click', () => patchCase({ recording: !state.caseView.case.recording }));
for (const role of ['applicant', 'respondent']) {
  $(`side-${role}`).addEventListener('click', () => {
    const party = state.caseView.case.parties.find((p) => p.role === role);
    patchCase({ place: { role, place: party.place === 'side' ? 'main' : 'side' } });
  });
}
$('me-side').addEventListener('click', () => joinRoom(state.mePlace === 'side' ? 'main' : 'side'));
$('invite').addEventListener('click', async () => {
  try {
    const inv = await api('POST', `/api/v1/mediation/cases/${state.caseView.case.case}/invite`);
    $('invite-link').textContent = new URL(inv.link, location.href).href;
    $('invite-link').hidden = false;
  } catch (e) {
    showError(e);
  }
});
$('save').addEventListener('click', () => {
  const parties = [];
  for (const role of ['applicant', 'respondent']) {
    const name = $(role).value.trim();
    if (name) parties.push({ role, name, phone: null });
  }
  const change = {
    status: $('status').value,
    category: $('category').value,
    outcome: $('outcome').value,
    parties,
  };
  const step = $('step').value.trim();
  if (step) change.step = step;
  $('step').value = '';
  patchCase(change);
});
$('draft').addEventListener('click', async () => {
  const terms = $('terms').value.split('\n').map((s) => s.trim()).filter(Boolean);
  try {
    state.caseView = await api('POST', `/api/v1/mediation/cases/${state.caseView.case.case}/agreement`, { terms });
    renderCase();
  } catch (e) {
    showError(e);
  }
});
$('end').addEventListener('click', async () => {
  try {
    await api('POST', `/api/v1/mediation/cases/${state.caseView.case.case}/end`);
    $('call').src = 'about:blank';
    state.frameRoom = null;
  } catch (e) {
    showError(e);
  }
});

applyLang();
start();
setInterval(refresh, 2000);
setInterval(heartbeat, 20000);
