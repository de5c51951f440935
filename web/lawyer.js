// The duty lawyer's console of the legal-advice hotline (/lawyer.html): sign in, set one's state
// (available, break, signed out), accept the offered call before it runs out, talk (call.html in
// a frame, or the number to call back), note the call afterwards, answer the questions left
// outside duty hours; and the supervisors' figures (/lawyer.html#stats). Chinese by default,
// English on one tap. Plain ES module. The desk is polled every 2 s, which is also the lawyer's
// heartbeat (docs/hotline.md); the figures every 5 s.

const TEXT = {
  zh: {
    title: '值班律师工作台', signin: '登录', username: '用户名', password: '密码', tab_desk: '工作台',
    tab_stats: '统计', my_state: '我的状态', go_available: '开始接听', go_break: '暂停接听', signout: '签退',
    missed_offer: '（错过来电，已自动暂停）', off_shift: '现在不在您的值班时间。',
    after_call_left: '话后整理，{s} 秒后自动恢复接听。', hotline_open: '热线开放中',
    hotline_closed: '热线已关闭（非值班时间）', offer: '新来电', offer_left: '请在 {s} 秒内接听',
    accept: '接听', callback_request: '回电请求', current: '当前通话', talking: '已通话 {dur}',
    call_back: '请拨打来电人的电话：', end: '结束通话', note: '通话记录', ended_at: '结束于 {when}',
    category: '类别', note_text: '记录（要点、建议、后续）', save_note: '保存记录', queue: '排队',
    lawyers: '值班律师', questions: '留言', send_answer: '发送答复', answered: '已答复：',
    nobody: '无人排队', none: '暂无', no_topic: '未选类别', waited: '已等待 {t}',
    offered_to: '已分配给 {who}', me: '（我）', idle: '空闲 {t}', unreachable: '无法连接',
    asked: '{when} · {topic} · {lang} · 电话 {phone}', stats: '热线统计', stats_since: '自 {when} 起',
    stats_waiting: '正在排队', stats_answered: '已接听', stats_abandoned: '放弃', stats_avg_wait: '平均等待',
    stats_p90_wait: '90% 的等待不超过', stats_service_level: '服务水平（60 秒内接听）', lawyer: '律师',
    avg_talk: '平均通话时长', avg_rating: '平均评分',
    states: { available: '可接听', break: '暂停', after_call: '话后整理', offline: '离线', on_call: '通话中' },
    queue_status: { waiting: '等待中', callback: '等待回电', dropped: '掉线' },
    errors: {
      network: '网络不稳定，正在重试……', bad_credentials: '用户名或密码错误。', forbidden: '没有权限。',
      unauthenticated: '请先登录。', rate_limited: '尝试次数过多，请稍后再试。',
      off_shift: '现在不在您的值班时间，不能接听。', offer_gone: '该来电已转给其他律师。',
      unknown_topic: '没有这个类别。', not_found: '找不到该来电或留言。', text_missing: '请填写答复。',
      note_missing: '请填写通话记录。', text_too_long: '内容太长，请精简。', on_call: '请先结束当前通话。',
      not_in_call: '该通话已经结束。', already_answered: '该留言已有律师答复。', bad_state: '无效的状态。',
      starting: '服务正在启动，请稍候。', internal: '服务出错，请稍后再试。',
    },
  },
  en: {
    title: 'Duty lawyer console', signin: 'Sign in', username: 'Username', password: 'Password',
    tab_desk: 'Console', tab_stats: 'Figures', my_state: 'My state', go_available: 'Available',
    go_break: 'Break', signout: 'Sign out', missed_offer: '(missed a call; paused)',
    off_shift: 'You are not on a duty shift now.', after_call_left: 'After-call work; available again in {s} s.',
    hotline_open: 'The hotline is open', hotline_closed: 'The hotline is closed (off hours)',
    offer: 'Incoming call', offer_left: 'Accept within {s} s', accept: 'Accept',
    callback_request: 'callback request', current: 'Current call', talking: 'Talking for {dur}',
    call_back: 'Call the caller back on:', end: 'End the call', note: 'Call note', ended_at: 'ended {when}',
    category: 'Category', note_text: 'Note (points, advice, follow-up)', save_note: 'Save the note',
    queue: 'Queue', lawyers: 'Duty lawyers', questions: 'Questions', send_answer: 'Send the answer',
    answered: 'Answered: ', nobody: 'Nobody waiting', none: 'None', no_topic: 'no topic',
    waited: 'waited {t}', offered_to: 'offered to {who}', me: ' (me)', idle: 'idle {t}',
    unreachable: 'unreachable', asked: '{when} · {topic} · {lang} · phone {phone}',
    stats: 'Hotline figures', stats_since: 'since {when}', stats_waiting: 'Waiting now',
    stats_answered: 'Answered', stats_abandoned: 'Abandoned', stats_avg_wait: 'Average wait',
    stats_p90_wait: '90th percentile wait', stats_service_level: 'Service level (answered in 60 s)',
    lawyer: 'Lawyer', avg_talk: 'Average talk time', avg_rating: 'Average rating',
    states: { available: 'Available', break: 'On break', after_call: 'After-call work', offline: 'Offline',
      on_call: 'On a call' },
    queue_status: { waiting: 'waiting', callback: 'callback', dropped: 'dropped' },
    errors: {
      network: 'The network is unstable; retrying…', bad_credentials: 'Wrong username or password.',
      forbidden: 'Not allowed.', unauthenticated: 'Please sign in.',
      rate_limited: 'Too many attempts; wait a while.',
      off_shift: 'You are not on a duty shift now, so you cannot take calls.',
      offer_gone: 'The call went to another lawyer.', unknown_topic: 'There is no such category.',
      not_found: 'That call or question was not found.', text_missing: 'Please write the answer.',
      note_missing: 'Please write the note.', text_too_long: 'The text is too long; please shorten it.',
      on_call: 'End the current call first.', not_in_call: 'The call has already ended.',
      already_answered: 'Another lawyer has answered this question.', bad_state: 'Not a valid state.',
      starting: 'The service is starting; please wait.', internal: 'The service failed; please try again later.',
    },
  },
};
const LANGS = { zh: '中文', en: 'English', ko: '한국어' };

let lang = localStorage.getItem('huiyan.lang') === 'en' ? 'en' : 'zh';
const t = (k) => TEXT[lang][k] ?? k;
const fmt = (text, vars) => text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const state = {
  me: null,            // GET /api/v1/session
  desk: null,          // GET /api/v1/hotline/desk
  deskDenied: false,   // not a duty lawyer (a supervisor): figures only
  stats: null,         // GET /api/v1/hotline/stats
  skew: 0,             // the node's clock minus this terminal's, when they differ by > 2 s
  actions: 0,          // desk answers that began before the last action are dropped
  frameCall: null,     // the call the frame was opened for
  noteCall: null,      // the call the note form was filled for
  topicsKey: null, questionsKey: null, error: null, errorFromPoll: false,
};
// For tests and diagnostics.
window.lawyerConsole = state;

async function api(method, path, body) {
  let r;
  try {
    r = await fetch(path, {
      method, cache: 'no-store', headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw Object.assign(new Error('network'), { code: 'network' });
  }
  // Countdowns run on the node's clock (from the Date header, to a second).
  const date = Date.parse(r.headers.get('date') ?? '');
  if (!Number.isNaN(date)) {
    const skew = date + 500 - Date.now();
    state.skew = Math.abs(skew) > 2000 ? skew : 0;
  }
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    const code = data?.code ?? (r.status >= 500 ? 'network' : undefined);
    throw Object.assign(new Error(data?.error ?? r.statusText), { code, status: r.status });
  }
  return data;
}

// An error from a poll goes away with the next good poll; one from an action stays until the
// next action.
function showError(e, fromPoll = false) {
  Object.assign(state, { error: e, errorFromPoll: Boolean(e) && fromPoll });
  $('error').hidden = !e;
  if (e) $('error').textContent = TEXT[lang].errors[e.code] ?? e.message ?? e.code;
}

const clearPollError = () => state.errorFromPoll && showError(null);
const serverNow = () => Date.now() + state.skew;
const secondsTo = (ms) => Math.max(0, Math.ceil((ms - serverNow()) / 1000));
const langLabel = (l) => LANGS[l] ?? l;
const tab = () => (location.hash === '#stats' ? 'stats' : 'desk');

function duration(s) {
  if (s == null) return '—';
  const n = Math.max(0, Math.round(s));
  const mmss = `${Math.floor((n % 3600) / 60)}:${String(n % 60).padStart(2, '0')}`;
  return n >= 3600 ? `${Math.floor(n / 3600)}:${mmss.padStart(5, '0')}` : mmss;
}

function when(ms) {
  return new Date(ms).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB',
    { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

function topicLabel(id) {
  const topic = id && state.desk?.topics?.find((x) => x.id === id);
  return topic ? topic[lang] ?? topic.en : id || t('no_topic');
}

// A new element: properties, data attributes and children.
function el(tag, { data, ...props } = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  Object.assign(e.dataset, data);
  e.append(...children);
  return e;
}

// ----- Sign-in and tabs -----

async function start() {
  try {
    state.me = await api('GET', '/api/v1/session');
  } catch (e) {
    signedOut();
    if (e.code === 'network') showError(e);
    return;
  }
  $('who').textContent = `· ${state.me.account.display_name}`;
  state.deskDenied = false;
  route();
  refreshDesk();
}

function signedOut() {
  Object.assign(state, { me: null, desk: null, stats: null });
  closeFrame();
  $('who').textContent = '';
  route();
}

function route() {
  const signedIn = Boolean(state.me);
  $('signin').hidden = signedIn;
  $('tabs').hidden = !signedIn;
  $('desk').hidden = !signedIn || tab() !== 'desk';
  $('stats').hidden = !signedIn || tab() !== 'stats';
  $('offer').hidden = !state.desk?.offer;
  for (const a of document.querySelectorAll('[data-tab]')) {
    a.setAttribute('aria-current', a.dataset.tab === tab() ? 'page' : 'false');
  }
  if (signedIn && tab() === 'stats') refreshStats();
}

function applyLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  for (const e of document.querySelectorAll('[data-i18n-placeholder]')) {
    e.placeholder = t(e.dataset.i18nPlaceholder);
  }
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  if (state.error) showError(state.error, state.errorFromPoll);
  renderDesk();
  renderStats();
}

// ----- The desk -----

let deskBusy = false;
async function refreshDesk() {
  if (!state.me || state.deskDenied || deskBusy) return;
  deskBusy = true;
  const actions = state.actions;
  try {
    const desk = await api('GET', '/api/v1/hotline/desk');
    if (actions !== state.actions) return;  // an action changed the desk meanwhile
    state.desk = desk;
    clearPollError();
    renderDesk();
  } catch (e) {
    if (e.status === 401) {
      signedOut();
      showError(e);
    } else if (e.status === 403) {
      state.deskDenied = true;  // admins and viewers: the figures only
      if (tab() !== 'stats') location.hash = '#stats';
    } else {
      showError(e, true);
    }
  } finally {
    deskBusy = false;
  }
}

const what = (x) => [topicLabel(x.topic), langLabel(x.lang), x.callback ? t('callback_request') : null]
  .filter(Boolean).join(' · ');

function renderDesk() {
  const d = state.desk;
  $('offer').hidden = !d?.offer;
  if (d) {
    const me = d.me;
    $('state').dataset.state = me.state;
    $('state').textContent = TEXT[lang].states[me.state] ?? me.state;
    $('state-reason').textContent = me.reason === 'missed_offer' ? t('missed_offer') : '';
    $('available').setAttribute('aria-pressed', String(me.state === 'available'));
    $('break').setAttribute('aria-pressed', String(me.state === 'break'));
    $('shift-note').hidden = me.on_shift;
    $('hotline-open').textContent = d.open ? t('hotline_open') : t('hotline_closed');
    if (d.offer) $('offer-what').textContent = what(d.offer);
    renderCurrent(d.current);
    renderNote(d);
    renderQueue(d);
    renderLawyers(d);
    renderQuestions(d);
  }
  clock();
}

function closeFrame() {
  if (state.frameCall) $('call').src = 'about:blank';
  state.frameCall = null;
}

function renderCurrent(c) {
  $('current').hidden = !c;
  if (!c) return closeFrame();
  $('current-what').textContent = what(c);
  $('call').hidden = c.callback;
  $('callback-box').hidden = !c.callback;
  if (c.callback) {
    $('phone-link').textContent = c.phone ?? '—';
    $('phone-link').href = c.phone ? `tel:${c.phone}` : '#';
  } else if (c.media_token && state.frameCall !== c.call) {
    state.frameCall = c.call;  // opened once per call, never reloaded by a poll
    $('call').src = `/call.html?token=${enc(c.media_token)}&lang=${lang}`;
  }
}

function renderNote(d) {
  const n = d.to_note;
  $('note').hidden = !n;
  const key = `${lang}:${JSON.stringify(d.topics)}`;
  if (key !== state.topicsKey) {
    state.topicsKey = key;
    const sel = $('note-category');
    const value = sel.value;
    sel.replaceChildren(...d.topics.map((x) => new Option(x[lang] ?? x.en, x.id)));
    if (value) sel.value = value;
  }
  if (n && state.noteCall !== n.call) {
    // A new call to note: start from the caller's topic and an empty note.
    $('note-category').value = n.topic ?? (d.topics.some((x) => x.id === 'other') ? 'other' : '');
    $('note-text').value = '';
  }
  state.noteCall = n?.call ?? null;
  if (n) {
    $('note-what').textContent = `${topicLabel(n.topic)} · ${fmt(t('ended_at'), { when: when(n.ended_ms) })}`;
  }
}

function renderQueue(d) {
  const items = d.queue.map((q) => {
    const parts = [fmt(t('waited'), { t: duration(q.waited_s) }), topicLabel(q.topic),
      langLabel(q.lang), TEXT[lang].queue_status[q.status] ?? q.status];
    if (q.offered_to) parts.push(fmt(t('offered_to'), { who: q.offered_to }));
    return el('li', { textContent: parts.join(' · '), data: { call: q.call, status: q.status } });
  });
  $('queue').replaceChildren(...(items.length ? items : [el('li', { textContent: t('nobody') })]));
}

function renderLawyers(d) {
  const items = d.lawyers.map((l) => {
    const parts = [`${l.username}${l.username === d.me.username ? t('me') : ''} (${l.site})`,
      TEXT[lang].states[l.state] ?? l.state];
    if (l.idle_s != null) parts.push(fmt(t('idle'), { t: duration(l.idle_s) }));
    if (!l.reachable) parts.push(t('unreachable'));
    return el('li', { textContent: parts.join(' · '), className: l.reachable ? '' : 'bad',
      data: { username: l.username, state: l.state } });
  });
  $('lawyers').replaceChildren(...(items.length ? items : [el('li', { textContent: t('none') })]));
}

// Rebuilt only when the questions or their answers change, keeping what was being typed.
function renderQuestions(d) {
  const key = lang + JSON.stringify(d.questions.map((q) => [q.question, q.answer]));
  if (key === state.questionsKey) return;
  state.questionsKey = key;
  const drafts = new Map([...$('questions').querySelectorAll('textarea')]
    .map((a) => [a.dataset.question, a.value]));
  const items = d.questions.map((q) => {
    const meta = fmt(t('asked'),
      { when: when(q.asked_ms), topic: topicLabel(q.topic), lang: langLabel(q.lang), phone: q.phone });
    const li = el('li', { data: { question: q.question } },
      el('p', { className: 'hint', textContent: meta }),
      el('p', { className: 'answer', textContent: q.text }));
    if (q.answer != null) {
      li.append(el('p', { className: 'answer hint', textContent: t('answered') + q.answer }));
    } else {
      const area = el('textarea', { value: drafts.get(q.question) ?? '', data: { question: q.question } });
      const send = el('button', { type: 'button', textContent: t('send_answer') });
      send.addEventListener('click', () => answer(q.question, area));
      li.append(area, send);
    }
    return li;
  });
  $('questions').replaceChildren(...(items.length ? items : [el('li', { textContent: t('none') })]));
}

// Countdowns and the call's length, every second between polls.
function clock() {
  const d = state.desk;
  const base = `${lang === 'zh' ? '慧眼' : 'huiyan'} · ${t('title')}`;
  document.title = d?.offer ? `【${t('offer')}】${base}` : base;
  if (!d) return;
  if (d.offer) $('offer-countdown').textContent = fmt(t('offer_left'), { s: secondsTo(d.offer.expires_ms) });
  const afterCall = d.me.state === 'after_call' && d.me.after_call_until_ms != null;
  $('after-call').hidden = !afterCall;
  if (afterCall) {
    $('after-call').textContent = fmt(t('after_call_left'), { s: secondsTo(d.me.after_call_until_ms) });
  }
  if (d.current) {
    const dur = duration((serverNow() - d.current.started_ms) / 1000);
    $('current-time').textContent = fmt(t('talking'), { dur });
  }
}

// ----- Actions -----

// Runs an action against the node, then shows the desk as it is now.
async function act(method, path, body, after) {
  try {
    const result = await api(method, path, body);
    state.actions += 1;
    showError(null);
    if (state.desk) after?.(result, state.desk);
  } catch (e) {
    state.actions += 1;
    showError(e);
    if (e.status === 401) signedOut();
  }
  renderDesk();
  await refreshDesk();
}

const setState = (s) => act('POST', '/api/v1/hotline/state', { state: s }, (_, d) => {
  d.me.state = s;
});

async function accept() {
  const o = state.desk?.offer;
  if (!o) return;
  $('accept').disabled = true;
  await act('POST', `/api/v1/hotline/offers/${enc(o.offer)}/accept`, undefined, (current, d) => {
    Object.assign(d, { offer: null, current });
    if (tab() !== 'desk') location.hash = '#desk';
  });
  if (state.error?.code === 'offer_gone' && state.desk?.offer?.offer === o.offer) {
    state.desk.offer = null;  // until the next poll says what is offered now
    renderDesk();
  }
  $('accept').disabled = false;
}

async function endCall() {
  const c = state.desk?.current;
  if (c) await act('POST', `/api/v1/hotline/calls/${enc(c.call)}/end`, undefined, (_, d) => { d.current = null; });
}

async function saveNote() {
  const n = state.desk?.to_note;
  if (!n) return;
  const body = { category: $('note-category').value, note: $('note-text').value.trim() };
  await act('POST', `/api/v1/hotline/calls/${enc(n.call)}/note`, body, (_, d) => {
    $('note-text').value = '';
    d.to_note = null;
  });
}

async function answer(question, area) {
  const text = area.value.trim();
  if (!text) showError({ code: 'text_missing' });
  else await act('POST', `/api/v1/hotline/questions/${enc(question)}/answer`, { text }, () => { area.value = ''; });
}

async function signOut() {
  // Offline first (not during a call); should that fail otherwise, the node marks a silent
  // console offline after 60 s.
  try {
    await api('POST', '/api/v1/hotline/state', { state: 'offline' });
  } catch (e) {
    if (e.code === 'on_call') return showError(e);
  }
  await api('DELETE', '/api/v1/session').catch(showError);
  signedOut();
}

// ----- Figures -----

async function refreshStats() {
  if (!state.me || tab() !== 'stats') return;
  try {
    state.stats = await api('GET', '/api/v1/hotline/stats');
    clearPollError();
    renderStats();
  } catch (e) {
    if (e.status === 401) signedOut();
    showError(e, e.status !== 401);
  }
}

function renderStats() {
  const s = state.stats;
  if (!s) return;
  const figures = {
    since: fmt(t('stats_since'), { when: when(s.since_ms) }), waiting: s.waiting,
    answered: s.answered, abandoned: s.abandoned, 'avg-wait': duration(s.avg_wait_s),
    'p90-wait': duration(s.p90_wait_s),
    'service-level': s.service_level == null ? '—' : `${Math.round(s.service_level * 100)}%`,
  };
  for (const [k, v] of Object.entries(figures)) $(`stats-${k}`).textContent = String(v);
  $('stats-lawyers').replaceChildren(...s.lawyers.map((l) => el('tr', { data: { username: l.username } },
    ...[l.username, String(l.answered), duration(l.avg_talk_s),
      l.avg_rating == null ? '—' : `${l.avg_rating.toFixed(1)} ★`]
      .map((text) => el('td', { textContent: text })))));
}

// ----- Wiring -----

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
    $('password').value = '';
    showError(null);
    start();
  } catch (err) {
    showError(err);
  }
});
window.addEventListener('hashchange', route);
$('available').addEventListener('click', () => setState('available'));
$('break').addEventListener('click', () => setState('break'));
$('signout').addEventListener('click', signOut);
$('accept').addEventListener('click', accept);
$('end').addEventListener('click', endCall);
$('save-note').addEventListener('click', saveNote);

applyLang();
start();
setInterval(refreshDesk, 2000);
setInterval(refreshStats, 5000);
setInterval(clock, 1000);
