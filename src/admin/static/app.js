/*
 * admin/static/app.js - the web queue viewer: a small single-page app over
 * the admin JSON API (docs/admin.md). Pages (by URL hash): queues by
 * destination, message list with filters, one message with a per-recipient
 * timeline drawn as SVG, quarantine, event search. Actions (retry, suspend,
 * resume, delete with or without a report, release) ask for confirmation and
 * a reason, and are POSTed as JSON (the server refuses anything else).
 * Live: the page follows the server's event stream (GET /api/events/stream,
 * server-sent events): each mail event redraws what it changes — the totals,
 * the queues and message lists, the open message's tables and timeline —
 * a moment later (REDRAW_MS, so a burst of events is one redraw). No polling.
 * EventSource reconnects by itself after a drop and sends Last-Event-ID; the
 * server replays what was missed. All JSON is snake_case with ISO times.
 *
 * Untrusted input: everything the API returns (addresses, subjects, remote
 * replies) is put into the page as text nodes, never as HTML.
 */
/**
 * Redraw REDRAW_MS after the first event of a burst, at most once every
 * MIN_GAP_MS while events keep coming, and again SETTLE_MS after the last one
 * (the server reuses a queue summary for a second or more on a large queue,
 * so a redraw right after an event may show the count before it).
 */
const REDRAW_MS = 250;
const MIN_GAP_MS = 1000;
const SETTLE_MS = [1500, 6000];
const app = document.getElementById('app');
/** What is on screen: the route path, whether it follows events, and the message shown. */
const current = { path: '/', live: false, qid: null };
let redrawTimer = null;
let settleTimers = [];
let lastRedraw = 0;

/* ---------- small DOM helpers (text only, never innerHTML) ---------- */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
function age(ms) {
  if (ms < 60e3) return `${Math.max(0, Math.floor(ms / 1e3))}s`;
  if (ms < 3600e3) return `${Math.floor(ms / 60e3)}m`;
  if (ms < 86400e3) return `${Math.floor(ms / 3600e3)}h`;
  return `${Math.floor(ms / 86400e3)}d`;
}
/** nextText - an ISO next-attempt time for people: "now", "in 5m", or a dash. */
function nextText(iso, now) {
  if (!iso) return '–';
  const t = Date.parse(iso);
  return t <= now ? 'now' : `in ${age(t - now)}`;
}
const stateBadge = (state, extra = '') => h('span', { class: `state ${state}` }, state + extra);
/** tlsText - a recipient's last attempt's TLS (API last_tls): policy, connection, and why the policy failed. */
function tlsText(t) {
  if (!t) return '';
  const c = t.tls;
  const f = t.tls_failure;
  const p = c || f;
  const head = p ? `${p.policy}${p.policy_domain ? ` (${p.policy_domain})` : ''}: ` : '';
  return `${head}${c ? `${c.version} ${c.cipher}, ${c.verified ? 'verified' : 'not verified'}` : 'no TLS'}${f ? `; failed: ${f.type}: ${f.detail}` : ''}`;
}
function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  setTimeout(() => t.classList.remove('show'), 3500);
}

/* ---------- API ---------- */
async function api(path, body) {
  const init = body === undefined ? {} : { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Petrel-Viewer': '1' }, body: JSON.stringify({ operator: 'web viewer', ...body }) };
  const res = await fetch(path, { credentials: 'same-origin', ...init });
  if (res.status === 401) {
    location.href = '/login';
    throw new Error('login needed');
  }
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `error ${res.status}`);
  return data;
}

/** confirmAction - the confirmation dialog; resolves with the reason, or null when cancelled. */
function confirmAction(title, text) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  const reason = document.getElementById('confirm-reason');
  reason.value = '';
  d.returnValue = 'cancel';
  d.showModal();
  reason.focus();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok' ? reason.value : null), { once: true }));
}

/** act - confirm, POST, report, redraw. */
async function act(title, text, path, extra = {}) {
  const reason = await confirmAction(title, text);
  if (reason === null) return;
  try {
    const r = await api(path, { reason, ...extra });
    toast(`${title}: ${r.changed ?? 'done'} recipient(s) changed${r.in_flight ? `, ${r.in_flight} in delivery left alone` : ''}`);
  } catch (e) {
    toast(`${title} failed: ${e.message}`);
  }
  route();
}

/* ---------- live totals ---------- */
async function refreshTotals() {
  try {
    const q = await api('/api/queue');
    document.getElementById('totals').textContent = `${q.total.recipients} recipient(s) in ${q.total.messages} message(s) queued`;
    return q;
  } catch {
    return null;
  }
}

/* ---------- pages ---------- */
async function queuesPage() {
  const q = await refreshTotals();
  if (!q) throw new Error('cannot read the queue');
  const now = Date.now();
  const rows = q.destinations.map((d) =>
    h('tr', { 'data-destination': d.destination },
      h('td', {}, h('a', { href: `#/messages?destination=${encodeURIComponent(d.destination)}` }, d.destination)),
      h('td', { class: 'num', 'data-col': 'recipients' }, d.recipients),
      h('td', { class: 'num' }, d.messages),
      h('td', { class: 'num' }, d.deferred),
      h('td', { class: 'num' }, d.suspended),
      h('td', {}, d.recipients && d.oldest ? age(now - Date.parse(d.oldest)) : '–'),
      h('td', {}, d.held ? stateBadge('held', ': on hold') : '', d.redirect ? h('span', { class: 'muted' }, ` → ${d.redirect}`) : ''),
      h('td', { class: 'err' }, d.last_reply || ''),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { 'data-action': 'retry-destination', onclick: () => act('Retry destination', `Try every waiting recipient for ${d.destination} now?`, `/api/destinations/${encodeURIComponent(d.destination)}/retry`) }, 'Retry'),
        d.held
          ? h('button', { 'data-action': 'resume-destination', onclick: () => act('Resume destination', `Release the hold on ${d.destination}?`, `/api/destinations/${encodeURIComponent(d.destination)}/resume`) }, 'Resume')
          : h('button', { 'data-action': 'suspend-destination', onclick: () => act('Suspend destination', `Hold all mail for ${d.destination} until resumed?`, `/api/destinations/${encodeURIComponent(d.destination)}/suspend`) }, 'Suspend'))),
    ));
  return [
    h('h1', {}, 'Queues by destination'),
    rows.length
      ? h('table', { id: 'queues' }, h('thead', {}, h('tr', {}, ...['Destination', 'Recipients', 'Messages', 'Deferred', 'Held', 'Oldest', 'Note', 'Last error', ''].map((t) => h('th', {}, t)))), h('tbody', {}, rows))
      : h('p', { class: 'muted', id: 'queue-empty' }, 'The queue is empty.'),
  ];
}

function paramsOf(query) {
  return Object.fromEntries(new URLSearchParams(query));
}

async function messagesPage(query, quarantine = false) {
  const p = paramsOf(query);
  const qs = new URLSearchParams(Object.entries(p).filter(([, v]) => v)).toString();
  const data = await api(`${quarantine ? '/api/quarantine' : '/api/messages'}?${qs}`);
  const now = Date.now();
  const field = (name, label, extra = {}) => h('label', {}, label, h('input', { name, value: p[name] ?? '', ...extra }));
  const filters = quarantine ? null : h('form', { class: 'filters', id: 'filters', onsubmit: (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      location.hash = `#/messages?${new URLSearchParams([...f.entries()].filter(([, v]) => v)).toString()}`;
    } },
    field('destination', 'Destination'),
    h('label', {}, 'State', h('select', { name: 'state' }, ...['', 'queued', 'delivering', 'deferred', 'quarantined', 'delivered', 'failed', 'expired', 'removed'].map((st) => h('option', { value: st, selected: p.state === st }, st || 'any')))),
    field('sender', 'Sender'), field('recipient', 'Recipient'), field('older_than', 'Older than', { placeholder: '1h' }), field('message_id', 'Message-ID'),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'));
  const rows = data.messages.map((m) => h('tr', { 'data-queue-id': m.queue_id },
    h('td', {}, h('a', { href: `#/message/${m.queue_id}`, class: 'mono' }, m.queue_id)),
    h('td', {}, age(now - Date.parse(m.received_at))),
    h('td', {}, `<${m.sender}>`),
    h('td', {}, Object.entries(m.states).map(([st, n]) => h('span', {}, stateBadge(st, ` ${n}`), ' ')), m.suspended ? stateBadge('held', ` ${m.suspended}`) : ''),
    h('td', {}, m.destinations.join(', ')),
    h('td', {}, nextText(m.next_attempt, now)),
    h('td', {}, quarantine ? m.quarantine : m.subject),
    quarantine ? h('td', {}, h('div', { class: 'actions' },
      h('button', { 'data-action': 'release', onclick: () => act('Release', `Put ${m.queue_id} back in the queue?`, `/api/quarantine/${m.queue_id}/release`) }, 'Release'),
      h('button', { class: 'danger', 'data-action': 'quarantine-delete', onclick: () => act('Delete', `Remove ${m.queue_id} (no report)?`, `/api/quarantine/${m.queue_id}/delete`) }, 'Delete'))) : null));
  const next = data.next ? h('a', { href: `#/${quarantine ? 'quarantine' : 'messages'}?${new URLSearchParams({ ...p, after: data.next }).toString()}`, id: 'next-page' }, 'Next page →') : null;
  return [
    h('h1', {}, quarantine ? 'Quarantine' : 'Messages'),
    quarantine ? h('p', { class: 'muted' }, 'Messages whose stored copy could not be read. Nothing is deleted unless you delete it.') : filters,
    rows.length
      ? h('table', { id: 'messages' }, h('thead', {}, h('tr', {}, ...['Queue id', 'Age', 'Sender', 'Recipients', 'Destinations', 'Next attempt', quarantine ? 'Reason' : 'Subject', quarantine ? '' : null].filter((t) => t !== null).map((t) => h('th', {}, t)))), h('tbody', {}, rows))
      : h('p', { class: 'muted' }, quarantine ? 'Nothing is quarantined.' : 'No message matches.'),
    h('div', { class: 'pager' }, p.after ? h('a', { href: `#/${quarantine ? 'quarantine' : 'messages'}` }, '← First page') : null, next),
  ];
}

const COLORS = { received: '#5f6b7a', deferred: '#b86e00', delivered: '#1b7f3b', failed: '#b3261e', expired: '#b3261e', removed: '#555', quarantined: '#6b4fbb', released: '#6b4fbb', suspended: '#6b4fbb', resumed: '#6b4fbb', retry_requested: '#1f5fbf', delay_notice: '#b86e00' };

/** timeline - one row per recipient: each event a dot on a shared time axis, attempts joined by a line. */
function timeline(recipients, events) {
  const byRcpt = new Map(recipients.map((r) => [r, []]));
  for (const e of events) if (e.recipient && byRcpt.has(e.recipient)) byRcpt.get(e.recipient).push(e);
  const times = events.map((e) => Date.parse(e.ts));
  const t0 = Math.min(...times);
  const t1 = Math.max(Date.now(), ...times);
  const left = 230, width = 640, rowH = 30, top = 24;
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * width;
  const height = top + rowH * byRcpt.size + 10;
  const svg = s('svg', { width: left + width + 30, height, role: 'img', 'aria-label': 'timeline of attempts per recipient', id: 'timeline-svg' });
  svg.append(s('text', { x: left, y: 14 }, new Date(t0).toLocaleString()), s('text', { x: left + width, y: 14, 'text-anchor': 'end' }, `now (+${age(t1 - t0)})`));
  let i = 0;
  for (const [rcpt, evs] of byRcpt) {
    const y = top + rowH * i++ + rowH / 2;
    svg.append(s('text', { x: 4, y: y + 4 }, rcpt.length > 32 ? `${rcpt.slice(0, 31)}…` : rcpt));
    svg.append(s('line', { x1: left, y1: y, x2: left + width, y2: y, stroke: '#e1e6ed' }));
    if (evs.length > 1) svg.append(s('polyline', { points: evs.map((e) => `${x(Date.parse(e.ts))},${y}`).join(' '), fill: 'none', stroke: '#9aa7b8', 'stroke-width': 2 }));
    for (const e of evs) {
      const c = s('circle', { cx: x(Date.parse(e.ts)), cy: y, r: e.event === 'delivered' || e.event === 'failed' ? 7 : 5, fill: COLORS[e.event] ?? '#888', 'data-event': e.event });
      c.append(s('title', {}, `${e.ts} ${e.event}${e.attempt ? ` (attempt ${e.attempt})` : ''}${e.reply || e.error ? `: ${e.reply ?? e.error}` : ''}${e.detail ? ` — ${e.detail}` : ''}`));
      svg.append(c);
    }
  }
  // The legend is SVG too: inline styles are not allowed by the page's CSP.
  const swatches = s('svg', { width: 700, height: 16 });
  let lx = 0;
  for (const k of ['received', 'deferred', 'retry_requested', 'delivered', 'failed', 'suspended', 'removed']) {
    swatches.append(s('circle', { cx: lx + 6, cy: 8, r: 5, fill: COLORS[k] }), s('text', { x: lx + 15, y: 12 }, k));
    lx += 30 + k.length * 7;
  }
  return h('div', { class: 'timeline' }, svg, swatches);
}

async function messagePage(qid) {
  const data = await api(`/api/messages/${encodeURIComponent(qid)}`);
  const m = data.message;
  const out = [h('h1', {}, 'Message ', h('span', { class: 'mono' }, qid))];
  let recipients;
  if (m) {
    const now = Date.now();
    out.push(h('dl', { class: 'envelope' },
      h('dt', {}, 'Message-ID'), h('dd', { class: 'mono' }, m.message_id),
      h('dt', {}, 'Sender'), h('dd', {}, `<${m.sender}>`),
      h('dt', {}, 'Subject'), h('dd', {}, m.subject),
      h('dt', {}, 'Received'), h('dd', {}, `${new Date(m.received_at).toLocaleString()} (${age(now - Date.parse(m.received_at))} ago) from ${m.client}`),
      h('dt', {}, 'Size'), h('dd', {}, `${m.size} octets`),
      m.quarantine ? [h('dt', {}, 'Quarantined'), h('dd', {}, m.quarantine)] : null));
    out.push(h('div', { class: 'actions' },
      h('button', { 'data-action': 'retry', class: 'primary', onclick: () => act('Retry', `Try every waiting recipient of ${qid} now?`, `/api/messages/${qid}/retry`) }, 'Retry now'),
      h('button', { 'data-action': 'suspend', onclick: () => act('Suspend', `Hold ${qid} until resumed?`, `/api/messages/${qid}/suspend`) }, 'Suspend'),
      h('button', { 'data-action': 'resume', onclick: () => act('Resume', `Release the hold on ${qid}?`, `/api/messages/${qid}/resume`) }, 'Resume'),
      h('button', { 'data-action': 'delete-ndr', class: 'danger', onclick: () => act('Delete with report', `Remove the unfinished recipients of ${qid} and send the sender a failure report?`, `/api/messages/${qid}/delete`, { ndr: true }) }, 'Delete (with report)'),
      h('button', { 'data-action': 'delete-silent', class: 'danger', onclick: () => act('Delete silently', `Remove the unfinished recipients of ${qid} without telling the sender?`, `/api/messages/${qid}/delete`, { silent: true }) }, 'Delete (silently)'),
      m.quarantine ? h('button', { 'data-action': 'release', onclick: () => act('Release', `Put ${qid} back in the queue?`, `/api/quarantine/${qid}/release`) }, 'Release') : null));
    out.push(h('h2', {}, 'Recipients'));
    out.push(h('table', { id: 'recipients' }, h('thead', {}, h('tr', {}, ...['Recipient', 'State', 'Attempts', 'Next attempt', 'Destination', 'Last reply', 'TLS (last attempt)'].map((t) => h('th', {}, t)))),
      h('tbody', {}, data.recipients.map((r) => h('tr', { 'data-recipient': r.address },
        h('td', {}, r.address), h('td', { class: 'rstate' }, stateBadge(r.state), r.node ? h('span', { class: 'muted' }, ` by ${r.node}`) : '', r.suspended ? stateBadge('held', ' held') : ''), h('td', { class: 'num' }, r.attempts),
        h('td', {}, nextText(r.next_attempt, now)),
        h('td', {}, r.destination), h('td', { class: 'err' }, r.last_reply), h('td', { class: 'tls' }, tlsText(r.last_tls)))))));
    recipients = data.recipients.map((r) => r.address);
  } else {
    // Finished: the message has left the queue; its history tells each recipient's end.
    const last = new Map();
    for (const e of data.events) if (e.recipient) last.set(e.recipient, e);
    out.push(h('p', { class: 'note', id: 'finished' }, 'This message has left the queue: every recipient reached its end. Its history:'));
    out.push(h('table', { id: 'recipients' }, h('thead', {}, h('tr', {}, h('th', {}, 'Recipient'), h('th', {}, 'Final state'), h('th', {}, 'Reply'))),
      h('tbody', {}, [...last.values()].map((e) => h('tr', { 'data-recipient': e.recipient }, h('td', {}, e.recipient), h('td', { class: 'rstate' }, stateBadge(e.state ?? e.event)), h('td', {}, e.reply ?? e.error ?? e.detail ?? ''))))));
    recipients = [...last.keys()];
  }
  const checked = data.events.find((e) => e.event === 'received' && (e.auth || e.filter));
  if (checked) out.push(h('h2', {}, 'Checks'), checksList(checked));
  out.push(h('h2', {}, 'Timeline'), timeline(recipients, data.events));
  out.push(h('h2', {}, 'History'), eventsTable(data.events));
  return out;
}

/** checksList - the inbound checks' verdict of a received event (auth: SPF, DKIM, DMARC, ARC; filter: rspamd). */
function checksList(e) {
  const a = e.auth;
  const f = e.filter;
  return h('dl', { class: 'envelope', id: 'checks' },
    a ? [h('dt', {}, 'SPF'), h('dd', {}, a.spf), h('dt', {}, 'DKIM'), h('dd', {}, a.dkim),
      h('dt', {}, 'DMARC'), h('dd', {}, a.dmarc_policy ? `${a.dmarc} (p=${a.dmarc_policy})` : a.dmarc), h('dt', {}, 'ARC'), h('dd', {}, a.arc)] : null,
    f ? [h('dt', {}, 'rspamd'), h('dd', { 'data-filter-action': f.action }, f.error ? `${f.action} (${f.error})` : `${f.action}, score ${f.score} / ${f.required}`),
      ...(f.symbols && f.symbols.length ? [h('dt', {}, 'Symbols'), h('dd', { class: 'mono' }, f.symbols.join(' '))] : [])] : null);
}

function eventsTable(events) {
  return h('table', { class: 'events' }, h('thead', {}, h('tr', {}, ...['Time', 'Event', 'Recipient', 'State', 'Attempt', 'Remote', 'Reply / error / detail'].map((t) => h('th', {}, t)))),
    h('tbody', {}, events.map((e) => h('tr', { 'data-event': e.event },
      h('td', { class: 'mono' }, e.ts), h('td', {}, e.event), h('td', {}, e.recipient ?? ''), h('td', {}, e.state ? stateBadge(e.state) : ''),
      h('td', { class: 'num' }, e.attempt ?? ''), h('td', {}, e.remote ?? ''), h('td', {}, [e.reply ?? e.error ?? '', e.detail ? ` (${e.detail})` : ''].join(''))))));
}

async function eventsPage(query) {
  const p = paramsOf(query);
  const form = h('form', { class: 'filters', id: 'event-search', onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/events?${new URLSearchParams([...new FormData(e.target).entries()].filter(([, v]) => v)).toString()}`;
    } },
    ...[['message_id', 'Message-ID'], ['sender', 'Sender'], ['recipient', 'Recipient'], ['queue_id', 'Queue id'], ['since', 'Since (2h or a time)']].map(([n, l]) => h('label', {}, l, h('input', { name: n, value: p[n] ?? '' }))),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  const out = [h('h1', {}, 'Event search (message tracking)'), form];
  if (!p.message_id && !p.sender && !p.recipient && !p.queue_id) return [...out, h('p', { class: 'muted' }, 'Give a Message-ID, sender, recipient or queue id.')];
  const data = await api(`/api/track?${new URLSearchParams(p).toString()}`);
  if (!data.messages.length) return [...out, h('p', { class: 'muted' }, 'No message matches.')];
  for (const m of data.messages) out.push(h('h2', {}, h('a', { href: `#/message/${m.queue_id}`, class: 'mono' }, m.queue_id), ' ', m.events[0]?.message_id ?? ''), eventsTable(m.events));
  if (data.next !== null) out.push(h('a', { href: `#/events?${new URLSearchParams({ ...p, before: data.next }).toString()}` }, 'Older matches →'));
  return out;
}

/* ---------- router ---------- */
async function route(auto = false) {
  const hash = location.hash || '#/';
  const [path, query = ''] = hash.slice(1).split('?');
  let page;
  let live = false;
  let qid = null;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', hash.startsWith(a.getAttribute('href')) && (a.getAttribute('href') !== '#/' || path === '/'));
  try {
    if (path === '/' || path === '') (page = await queuesPage()), (live = true);
    else if (path === '/messages') (page = await messagesPage(query)), (live = true);
    else if (path === '/quarantine') (page = await messagesPage(query, true)), (live = true);
    else if (path.startsWith('/message/')) {
      qid = decodeURIComponent(path.slice('/message/'.length));
      page = await messagePage(qid);
      live = true;
    } else if (path === '/events') page = await eventsPage(query);
    else page = [h('h1', {}, 'Not found')];
  } catch (e) {
    page = [h('h1', {}, 'Error'), h('p', { class: 'err', id: 'error' }, e.message)];
  }
  // Never redraw under an open dialog or while someone types in a field: redraw once they are done.
  const typing = document.activeElement && app.contains(document.activeElement) && /^(INPUT|SELECT)$/.test(document.activeElement.tagName);
  if (auto && (document.getElementById('confirm').open || typing)) {
    setTimeout(() => route(true), 1000);
    return;
  }
  Object.assign(current, { path, live, qid });
  app.replaceChildren(...page.filter(Boolean));
  if (path !== '/' && path !== '') void refreshTotals();
}

/* ---------- live updates (server-sent events) ---------- */
/** onMailEvent - an event happened: redraw what it changes (the totals always; the page when it shows it). */
function onMailEvent(e) {
  const pageChanged = current.live && (current.qid === null || current.qid === e.queue_id);
  later(pageChanged);
}
let pageDirty = false;
function later(pageChanged) {
  pageDirty ||= pageChanged;
  if (!redrawTimer) redrawTimer = setTimeout(redraw, Math.max(REDRAW_MS, lastRedraw + MIN_GAP_MS - Date.now()));
  for (const t of settleTimers) clearTimeout(t);
  const page = pageDirty;
  settleTimers = SETTLE_MS.map((ms) => setTimeout(() => {
    pageDirty ||= page;
    redraw();
  }, ms));
}
function redraw() {
  clearTimeout(redrawTimer);
  redrawTimer = null;
  lastRedraw = Date.now();
  const dirty = pageDirty;
  pageDirty = false;
  if (dirty) void route(true);
  else void refreshTotals();
}
function setLive(text) {
  const el = document.getElementById('live');
  el.textContent = text;
  el.dataset.state = text === 'live' ? 'on' : 'off';
}
function connectEvents() {
  const es = new EventSource('/api/events/stream');
  es.addEventListener('open', () => {
    setLive('live');
    // After a reconnect the server replays what was missed; redraw once in any case.
    later(true);
  });
  es.addEventListener('mail', (m) => {
    try {
      onMailEvent(JSON.parse(m.data));
    } catch {
      /* not an event: ignore */
    }
  });
  es.addEventListener('reset', () => later(true));
  es.addEventListener('error', () => {
    setLive('reconnecting…');
    // EventSource retries by itself unless the server refused the stream (a 401 after a logout, a 503): then start again.
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(() => {
        void refreshTotals(); // a 401 goes to the login page
        connectEvents();
      }, 3000);
    }
  });
}

window.addEventListener('hashchange', () => route());
route();
refreshTotals();
connectEvents();
