// The legal-advice video hotline: the caller's phone app (/hotline.html). Chinese by default,
// English and Korean on one tap. Plain ES module, no dependencies. See docs/hotline.md.
//
// Flow: the hotline's state -> (open) optional topic and "call a lawyer"; (closed) the reason
// and a question to leave -> queue (position, expected wait; or a callback request) -> the call
// (call.html in a frame, or the lawyer calling back by phone) -> rating. The page polls every
// 2 s, which is also the caller's heartbeat. The call's and the question's tokens stay in
// localStorage, so a reload or a dropped connection gets the caller's place back.

const TEXT = {
  zh: {
    title: '法律咨询视频热线', topic: '咨询类别（可不选）', no_topic: '（不选）', join: '呼叫律师',
    open_info: '在线律师 {lawyers} 位，排队 {waiting} 人，预计等待 {wait}。',
    off_hours_at: '现在不是律师值班时间，热线将于 {when} 开放。', off_hours: '现在不是律师值班时间。',
    unreachable: '本站点目前无法连接热线，请稍后再试，或先留言。', question_title: '留言咨询',
    question_intro: '留下您的问题和手机号码，值班律师上班后会答复您。', question_text: '您的问题',
    phone: '手机号码', ask: '提交留言', my_question: '我的留言', asked_at: '提交于 {when}',
    answer: '律师答复', no_answer: '律师尚未答复，请稍后再来查看。', question_done: '不再显示这条留言',
    position: '您的排队位置：', expected_wait: '预计等待：', minutes: '分钟', less_than_minute: '不到 1 分钟',
    callback_phone: '不想在线等？留下手机号码，律师按排队顺序给您回电：', callback: '改为等待回电',
    callback_note: '已登记回电。律师会按排队顺序给您打电话，请保持手机畅通。', leave: '离开排队',
    hangup: '挂断', phone_note: '律师正在通过电话给您回电，请留意来电。', ended: '通话已结束。',
    rate: '请为本次咨询评分：', thanks: '感谢您的评价！', again: '再次咨询', star: '{n} 星',
    notices: { left: '您已离开排队。', abandoned: '您离开太久，排队已失效，请重新呼叫。',
      asked: '留言已提交，律师会尽快答复。' },
    status: { loading: '正在连接热线…', resuming: '正在恢复您的排队…', open: '热线开放中',
      closed: '热线暂停接听', waiting: '排队中', callback: '等待律师回电', dropped: '网络中断过，正在恢复您的位置…',
      offered: '正在为您接通律师…', connecting: '正在接通视频…', connected: '通话中',
      phone: '律师正在电话回拨您', ended: '通话已结束' },
    errors: {
      network: '网络不稳定，正在重试……', unknown_topic: '没有这个咨询类别。', already_in_queue: '您已经在排队中。',
      hotline_closed: '热线现在暂停接听。', phone_required: '请填写手机号码。', phone_invalid: '手机号码无效。',
      text_missing: '请填写您的问题。', text_too_long: '内容太长，请精简。', not_waiting: '您已不在排队中。',
      not_ended: '通话结束后才能评分。', already_rated: '您已经评过分了。', stars_invalid: '请选择 1 到 5 星。',
      bad_call_token: '本次呼叫已失效，请重新呼叫。',
      rate_limited: '请求过于频繁，请稍后再试。', not_found: '找不到这次呼叫或留言。',
      starting: '服务正在启动，请稍候。', internal: '服务出错，请稍后再试。',
    },
  },
  en: {
    title: 'Legal advice video hotline', topic: 'Topic (optional)', no_topic: '(none)', join: 'Call a lawyer',
    open_info: 'Lawyers on duty: {lawyers}. Waiting: {waiting}. Expected wait: {wait}.',
    off_hours_at: 'Outside duty hours. The hotline opens at {when}.', off_hours: 'Outside duty hours.',
    unreachable: 'This site cannot reach the hotline now. Try again later, or leave a question.',
    question_title: 'Leave a question',
    question_intro: 'Leave your question and phone number; a duty lawyer answers when on duty.',
    question_text: 'Your question', phone: 'Phone number', ask: 'Send the question',
    my_question: 'My question', asked_at: 'Sent {when}', answer: "The lawyer's answer",
    no_answer: 'No answer yet; please look again later.', question_done: 'Stop showing it',
    position: 'Your place in the queue:', expected_wait: 'Expected wait:', minutes: 'min',
    less_than_minute: 'under 1 min',
    callback_phone: 'Rather not wait online? Leave your number and a lawyer calls you back in turn:',
    callback: 'Request a callback instead',
    callback_note: 'Callback requested. A lawyer will call you in turn; keep your phone at hand.',
    leave: 'Leave the queue', hangup: 'Hang up', phone_note: 'A lawyer is calling you back by phone now.',
    ended: 'The call has ended.', rate: 'Please rate the advice:', thanks: 'Thank you for rating!',
    again: 'Ask again', star: '{n} stars',
    notices: { left: 'You left the queue.', abandoned: 'You were away too long and lost your place; please call again.',
      asked: 'Your question was sent; a lawyer will answer soon.' },
    status: { loading: 'Connecting to the hotline…', resuming: 'Getting your place back…',
      open: 'The hotline is open', closed: 'The hotline is closed', waiting: 'In the queue',
      callback: 'Waiting for a callback', dropped: 'Connection lost; getting your place back…',
      offered: 'Connecting you to a lawyer…', connecting: 'Connecting the video…', connected: 'In the call',
      phone: 'A lawyer is calling you back by phone', ended: 'Call ended' },
    errors: {
      network: 'The network is unstable; retrying…', unknown_topic: 'There is no such topic.',
      already_in_queue: 'You are already in the queue.', hotline_closed: 'The hotline is closed now.',
      phone_required: 'Please give a phone number.', phone_invalid: 'The phone number is not valid.',
      text_missing: 'Please write your question.', text_too_long: 'The text is too long; please shorten it.',
      not_waiting: 'You are no longer waiting in the queue.', not_ended: 'You can rate once the call has ended.',
      already_rated: 'You have rated this call already.', stars_invalid: 'Choose one to five stars.',
      bad_call_token: 'This call has expired; please call again.',
      rate_limited: 'Too many requests; please try again later.', not_found: 'This call or question was not found.',
      starting: 'The service is starting; please wait.', internal: 'The service failed; please try again later.',
    },
  },
  ko: {
    title: '법률 상담 영상 핫라인', topic: '상담 분야 (선택)', no_topic: '(선택 안 함)', join: '변호사 연결',
    open_info: '상담 중인 변호사: {lawyers}명. 대기: {waiting}명. 예상 대기 시간: {wait}.',
    off_hours_at: '지금은 변호사 당직 시간이 아닙니다. 핫라인은 {when}에 열립니다.',
    off_hours: '지금은 변호사 당직 시간이 아닙니다.',
    unreachable: '이 지점에서 지금 핫라인에 연결할 수 없습니다. 잠시 후 다시 시도하거나 질문을 남겨 주세요.',
    question_title: '질문 남기기',
    question_intro: '질문과 전화번호를 남기시면 당직 변호사가 근무 시간에 답변해 드립니다.',
    question_text: '질문 내용', phone: '전화번호', ask: '질문 보내기',
    my_question: '내 질문', asked_at: '{when}에 보냄', answer: '변호사 답변',
    no_answer: '아직 답변이 없습니다. 나중에 다시 확인해 주세요.', question_done: '이 질문 숨기기',
    position: '대기 순서:', expected_wait: '예상 대기 시간:', minutes: '분',
    less_than_minute: '1분 미만',
    callback_phone: '온라인으로 기다리기 어려우신가요? 전화번호를 남기시면 순서대로 변호사가 전화드립니다:',
    callback: '전화 회신으로 바꾸기',
    callback_note: '전화 회신이 접수되었습니다. 순서대로 변호사가 전화드리니 전화를 받을 수 있게 해 주세요.',
    leave: '대기 취소', hangup: '통화 종료', phone_note: '변호사가 지금 전화로 연락드리고 있습니다.',
    ended: '통화가 끝났습니다.', rate: '이번 상담을 평가해 주세요:', thanks: '평가해 주셔서 감사합니다!',
    again: '다시 상담하기', star: '{n}점',
    notices: { left: '대기를 취소했습니다.', abandoned: '오래 자리를 비워 대기 순서가 없어졌습니다. 다시 연결해 주세요.',
      asked: '질문을 보냈습니다. 변호사가 곧 답변해 드립니다.' },
    status: { loading: '핫라인에 연결하는 중…', resuming: '대기 순서를 되찾는 중…',
      open: '핫라인 운영 중', closed: '핫라인 운영 시간이 아닙니다', waiting: '대기 중',
      callback: '전화 회신 대기 중', dropped: '연결이 끊겼습니다. 대기 순서를 되찾는 중…',
      offered: '변호사에게 연결하는 중…', connecting: '영상을 연결하는 중…', connected: '통화 중',
      phone: '변호사가 전화로 연락드리고 있습니다', ended: '통화 종료' },
    errors: {
      network: '네트워크가 불안정합니다. 다시 시도하는 중…', unknown_topic: '그런 상담 분야는 없습니다.',
      already_in_queue: '이미 대기 중입니다.', hotline_closed: '지금은 핫라인이 운영되지 않습니다.',
      phone_required: '전화번호를 입력해 주세요.', phone_invalid: '전화번호가 올바르지 않습니다.',
      text_missing: '질문을 입력해 주세요.', text_too_long: '내용이 너무 깁니다. 줄여 주세요.',
      not_waiting: '더 이상 대기 중이 아닙니다.', not_ended: '통화가 끝난 뒤에 평가할 수 있습니다.',
      already_rated: '이미 평가하셨습니다.', stars_invalid: '1점에서 5점 중에서 선택해 주세요.',
      bad_call_token: '이 연결은 만료되었습니다. 다시 연결해 주세요.',
      rate_limited: '요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.', not_found: '이 통화나 질문을 찾을 수 없습니다.',
      starting: '서비스를 시작하는 중입니다. 잠시 기다려 주세요.', internal: '서비스 오류입니다. 잠시 후 다시 시도해 주세요.',
    },
  },
};

const KEY = {
  lang: 'huiyan.hotline.lang', call: 'huiyan.hotline.call', token: 'huiyan.hotline.token',
  question: 'huiyan.hotline.question',
  questionToken: 'huiyan.hotline.question_token',
};
const params = new URLSearchParams(location.search);
let lang = [params.get('lang'), localStorage.getItem(KEY.lang)].find((l) => l && l in TEXT) ?? 'zh';
const t = (key) => TEXT[lang][key] ?? TEXT.en[key] ?? key;
const fmt = (text, vars) => text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const state = {
  hotline: null,       // GET /api/v1/hotline
  view: null,          // GET /api/v1/hotline/calls/{call}
  call: localStorage.getItem(KEY.call),
  token: localStorage.getItem(KEY.token),
  question: localStorage.getItem(KEY.question),
  questionToken: localStorage.getItem(KEY.questionToken),
  questionView: null,  // GET /api/v1/hotline/questions/{question}
  questionPolled: 0,
  frameCall: null,     // the call the frame was opened for: opened once, never reloaded by a poll
  notice: null,        // why the caller is back at the start (left, abandoned, asked)
  seq: 0,              // bumped by every action on the call: older poll answers are dropped
  topicsKey: null, rated: false, error: null, errorFromPoll: false,
};
// For tests and diagnostics.
window.hotline = state;

async function api(method, path, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let r;
  try {
    r = await fetch(path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw Object.assign(new Error('network'), { code: 'network' });
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

function setStatus(key) {
  $('status').dataset.status = key;
  $('status').textContent = TEXT[lang].status[key];
}

function show(screen) {
  for (const s of ['start', 'waiting', 'in-call', 'ended']) $(s).hidden = s !== screen;
  $('my-question').hidden = !(screen === 'start' && state.questionView);
}

function minutes(seconds) {
  if (seconds == null || seconds < 60) return t('less_than_minute');
  return `${Math.round(seconds / 60)} ${t('minutes')}`;
}

function localTime(ms) {
  return new Date(ms).toLocaleString({ zh: 'zh-CN', en: 'en-GB', ko: 'ko-KR' }[lang], {
    weekday: 'short', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
}

// ----- Storage -----

// Sets values in `state`, and keeps those named in KEY in the browser's storage (null or false:
// forgets them).
function keep(values) {
  Object.assign(state, values);
  for (const [k, v] of Object.entries(values)) {
    if (!(k in KEY)) continue;
    if (v == null || v === false) localStorage.removeItem(KEY[k]);
    else localStorage.setItem(KEY[k], String(v));
  }
}

function forgetCall() {
  closeFrame();
  keep({ call: null, token: null, view: null, rated: false });
}

const forgetQuestion = () => keep({ question: null, questionToken: null, questionView: null });

function closeFrame() {
  if (state.frameCall) $('call').src = 'about:blank';
  state.frameCall = null;
}

// ----- Rendering -----

function fillTopics() {
  const topics = state.hotline?.topics ?? [];
  const key = `${lang}:${JSON.stringify(topics)}`;
  if (key === state.topicsKey) return;  // rebuilding would close an open picker
  state.topicsKey = key;
  const sel = $('topic');
  const value = sel.value;
  const options = [new Option(t('no_topic'), '')];
  for (const topic of topics) options.push(new Option(topic[lang] ?? topic.en, topic.id));
  sel.replaceChildren(...options);
  sel.value = topics.some((x) => x.id === value) ? value : '';
}

function renderStart() {
  const h = state.hotline;
  $('notice').hidden = !state.notice;
  $('notice').textContent = state.notice ? TEXT[lang].notices[state.notice] : '';
  renderQuestion();
  if (!h) {
    setStatus('loading');
    show(null);
    return;
  }
  fillTopics();
  if (h.open) {
    $('hotline-state').textContent = fmt(t('open_info'), {
      lawyers: h.lawyers_available, waiting: h.waiting, wait: minutes(h.expected_wait_s),
    });
  } else if (h.closed_reason === 'unreachable') {
    $('hotline-state').textContent = t('unreachable');
  } else {
    $('hotline-state').textContent = h.next_open_ms != null
      ? fmt(t('off_hours_at'), { when: localTime(h.next_open_ms) })
      : t('off_hours');
  }
  setStatus(h.open ? 'open' : 'closed');
  $('join').hidden = !h.open;
  $('question-form').hidden = h.open;
  show('start');
}

function renderQuestion() {
  const q = state.questionView;
  if (!q) return;
  $('question-asked').textContent = fmt(t('asked_at'), { when: localTime(q.asked_ms) });
  $('question-body').textContent = q.text;
  $('question-answer').textContent = q.answer ?? t('no_answer');
  $('question-answer').className = q.answer ? 'answer' : 'hint';
}

function renderCall(v) {
  switch (v.status) {
    case 'waiting':
    case 'callback':
    case 'dropped': {
      $('position').textContent = v.position == null ? '–' : String(v.position);
      $('wait').textContent = minutes(v.expected_wait_s);
      $('callback-note').hidden = !v.callback;
      $('callback-form').hidden = v.callback;
      setStatus(v.offered ? 'offered' : v.status);
      show('waiting');
      break;
    }
    case 'connected': {
      // A callback request is answered by phone; a video call has its media token.
      const byPhone = v.callback;
      $('call').hidden = byPhone;
      $('hangup').hidden = byPhone;
      $('phone-note').hidden = !byPhone;
      if (!byPhone && v.media_token && state.frameCall !== v.call) {
        state.frameCall = v.call;
        // The call page speaks Chinese and English (as for the 天池和 app).
        $('call').src = `/call.html?token=${enc(v.media_token)}&lang=${lang === 'zh' ? 'zh' : 'en'}`;
      }
      setStatus(byPhone ? 'phone' : v.media_token ? 'connected' : 'connecting');
      show('in-call');
      break;
    }
    case 'ended': {
      closeFrame();
      const rated = v.rated || state.rated;
      $('rate').hidden = rated;
      $('thanks').hidden = !rated;
      setStatus('ended');
      show('ended');
      break;
    }
    default: // left, abandoned: back to the start, saying why
      state.notice = v.status === 'abandoned' ? 'abandoned' : 'left';
      forgetCall();
      renderStart();
  }
}

function render() {
  if (state.call && state.view) renderCall(state.view);
  else if (state.call) {
    setStatus('resuming');
    show('waiting');
  } else renderStart();
}

function applyLang() {
  document.documentElement.lang = { zh: 'zh-CN', en: 'en', ko: 'ko' }[lang];
  document.title = `${lang === 'zh' ? '慧眼' : 'huiyan'} · ${t('title')}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.setAttribute('aria-pressed', String(b.dataset.lang === lang));
  }
  for (const b of document.querySelectorAll('#stars button')) {
    b.setAttribute('aria-label', fmt(t('star'), { n: b.dataset.stars }));
  }
  if (state.error) showError(state.error, state.errorFromPoll);
  render();
}

// ----- Polling -----

async function pollCall() {
  const seq = state.seq;
  try {
    const view = await api('GET', `/api/v1/hotline/calls/${enc(state.call)}`, undefined, state.token);
    if (seq !== state.seq) return;
    state.view = view;
    clearPollError();
  } catch (e) {
    if (seq !== state.seq) return;
    // A call not yet known at this node (404) may still arrive; a refused token will not.
    if (e.status !== 401 && e.status !== 403) return showError(e, true);
    forgetCall();  // the call is gone: start afresh
    showError(e);
    return pollHotline();
  }
  render();
}

async function pollQuestion() {
  state.questionPolled = Date.now();
  try {
    state.questionView = await api('GET', `/api/v1/hotline/questions/${enc(state.question)}`,
      undefined, state.questionToken);
  } catch (e) {
    if (e.status === 401) forgetQuestion();  // 404: not replicated here yet
  }
}

async function pollHotline() {
  try {
    state.hotline = await api('GET', '/api/v1/hotline');
    clearPollError();
  } catch (e) {
    showError(e, true);
  }
  if (state.question && Date.now() - state.questionPolled > 15000) await pollQuestion();
  render();
}

let busy = false;
async function tick() {
  if (busy) return;
  busy = true;
  try {
    // An ended call needs no more polls; its page stays until the caller rates or moves on.
    if (state.call && state.view?.status !== 'ended') await pollCall();
    else await pollHotline();
  } finally {
    busy = false;
  }
}

// ----- Actions -----

async function join() {
  showError(null);
  state.notice = null;
  try {
    const r = await api('POST', '/api/v1/hotline/calls',
      { topic: $('topic').value || null, lang, callback: false, phone: null }, state.token);
    state.seq += 1;
    keep({ call: r.call, token: r.token, rated: false, view: {
      call: r.call, status: r.status, offered: false, position: r.position,
      expected_wait_s: r.expected_wait_s, callback: false, media_token: null, rated: false,
    } });
    render();
  } catch (e) {
    if (e.code === 'already_in_queue' && state.call) {
      state.view = null;  // the stored call is live: pick it up again
      render();
      await tick();
      return;
    }
    showError(e);
    if (e.code === 'hotline_closed') await pollHotline();
  }
}

async function askCallback() {
  const phone = $('callback-phone').value.trim();
  if (!phone) return showError({ code: 'phone_required' });
  try {
    await api('POST', `/api/v1/hotline/calls/${enc(state.call)}/callback`, { phone }, state.token);
    state.seq += 1;
    showError(null);
    await pollCall();
  } catch (e) {
    showError(e);
  }
}

async function leave() {
  try {
    await api('DELETE', `/api/v1/hotline/calls/${enc(state.call)}`, undefined, state.token);
  } catch (e) {
    if (e.code !== 'bad_call_token') return showError(e);
  }
  state.seq += 1;
  forgetCall();
  state.notice = 'left';
  showError(null);
  render();
  await pollHotline();
}

async function hangUp() {
  try {
    await api('DELETE', `/api/v1/hotline/calls/${enc(state.call)}`, undefined, state.token);
    state.seq += 1;
    closeFrame();
    showError(null);
    await pollCall();
  } catch (e) {
    showError(e);
  }
}

async function rate(stars) {
  try {
    await api('POST', `/api/v1/hotline/calls/${enc(state.call)}/rating`, { stars }, state.token);
    state.seq += 1;
    state.rated = true;
    showError(null);
    render();
  } catch (e) {
    showError(e);
  }
}

async function ask() {
  const text = $('question-text').value.trim();
  const phone = $('question-phone').value.trim();
  if (!text || !phone) return showError({ code: text ? 'phone_required' : 'text_missing' });
  try {
    const r = await api('POST', '/api/v1/hotline/questions',
      { topic: $('topic').value || null, text, phone, lang });
    keep({ question: r.question, questionToken: r.token });
    $('question-text').value = '';
    state.notice = 'asked';
    showError(null);
    await pollQuestion();
    render();
  } catch (e) {
    showError(e);
  }
}

// ----- Start -----

for (const b of document.querySelectorAll('[data-lang]')) {
  b.addEventListener('click', () => {
    lang = b.dataset.lang;
    localStorage.setItem(KEY.lang, lang);
    applyLang();
  });
}
$('join').addEventListener('click', join);
$('callback').addEventListener('click', askCallback);
$('leave').addEventListener('click', leave);
$('hangup').addEventListener('click', hangUp);
for (const b of document.querySelectorAll('#stars button')) {
  b.addEventListener('click', () => rate(Number(b.dataset.stars)));
}
$('again').addEventListener('click', () => {
  state.seq += 1;
  forgetCall();
  state.notice = null;
  render();
  tick();
});
$('ask').addEventListener('click', ask);
$('question-done').addEventListener('click', () => { forgetQuestion(); render(); });

applyLang();
tick();
setInterval(tick, 2000);
