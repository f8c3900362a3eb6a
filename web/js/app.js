// app.js - the Parley web client: screens, state, and the protocol's rules
// as a client keeps them (docs/protocol.md).
//
// Everything a user or another user wrote reaches the page through
// textContent or an attribute, never as HTML.
//
// Every refusal the server gives, as an error frame or a REST error, is
// shown where it happened: on the message a send was, in the dialog that
// asked, or else in a passing notice; a rate_limited one says when to try
// again (refusal() below).
//
// Notifications (notify.js, sw.js): a message from someone else that
// arrives while the tab is hidden shows one and beeps; a click on one,
// or #conv=ID in the address, opens that chat (openFromOutside).

import * as api from './api.js';
import * as notify from './notify.js';
import { Live } from './socket.js';
import * as store from './store.js';

const $ = (id) => document.getElementById(id);

const ACK_TIMEOUT_MS = 10000;   // a send not acked by then shows a retry
const RECEIPT_FLUSH_MS = 1000;  // receipts go out at most once a second
const TYPING_EVERY_MS = 2000;   // "typing on" repeats no more often than this
const TYPING_IDLE_MS = 4000;    // ... and stops after this without a key
const TYPING_SHOWN_MS = 7000;   // a peer's typing fades if its "off" is lost
const PAGE = 50;

const S = {
  me: null,                 // { token, user_id, username, device_id }
  convs: new Map(),         // conv id -> conversation (see addConv)
  names: new Map(),         // user id -> username
  presence: new Map(),      // user id -> { state, last_seen }
  open: null,               // the conversation on screen
  live: null,
  seqs: {},                 // conv id -> highest seq held with no gap below
  outbox: [],               // sends not yet acked: { cmid, conv, body, at, state, error, reply_to? }
  events: new Map(),        // cmid -> an edit, delete or reaction sent and not yet acked
  replyTo: null,            // the composer answers this message: { conv, seq }
  editing: null,            // the composer edits this message instead: { conv, seq }
  pendingDelivered: new Map(),
  pendingRead: new Map(),
  receiptTimer: null,
  typingSentAt: 0,
  typingConv: null,
  typingStopTimer: null,
  loadingOlder: false,
  lastGapResume: 0,
  resuming: false,          // a resume is out: its replay may jump seqs
  redoTimer: null,          // resume/watch/receipts again after a refusal (redoLater)
  learning: new Map(),      // conv id -> the fetch of a conversation new to us (learnConv)
  wantOpen: null,           // a conv to open once signed in and loaded (openFromOutside)
  previews: true,           // settings push_previews: notifications show sender and text
};

// ---- conversations -------------------------------------------------------

function addConv(e) {
  let c = S.convs.get(e.conversation_id);
  if (!c) {
    c = {
      id: e.conversation_id, msgs: new Map(), loaded: false, has_more: true, floor: 0,
      peerDelivered: 0, peerRead: 0, counts: new Map(), typing: new Map(),
      last_seq: 0, read_seq: 0, unread: 0, last_message: null, activity: 0,
      contact: true, blocked: false, muted: false,
    };
    S.convs.set(c.id, c);
  }
  c.kind = e.kind;
  c.title = e.title;
  c.members = e.members || [];
  c.admins = e.admins || [];
  // Direct chats only. contact: the user has written here (a chat with
  // contact false and messages in it is a stranger's first message);
  // once true it stays so, whatever a list fetched before the ack says.
  if (e.contact !== undefined) c.contact = e.contact || c.wrote === true;
  if (e.contact) c.wrote = true;
  if (e.blocked !== undefined) c.blocked = e.blocked;
  if (e.muted !== undefined) c.muted = e.muted === true;
  if (e.last_seq !== undefined && e.last_seq >= c.last_seq) {
    c.last_seq = e.last_seq;
    c.last_message = e.last_message || c.last_message;
    c.read_seq = e.read_seq || 0;
    c.unread = e.unread || 0;
  }
  if (c.last_message) c.activity = Math.max(c.activity, c.last_message.ts);
  // A device new to this conversation starts at its head: what came
  // before is history, loaded when the chat is opened.
  if (S.seqs[c.id] === undefined) S.seqs[c.id] = c.last_seq;
  return c;
}

function peerOf(c) {
  return c.kind === 'direct' ? c.members.find((m) => m !== S.me.user_id) : undefined;
}

function nameOf(id) {
  return id === S.me.user_id ? 'You' : S.names.get(id) || `user ${id}`;
}

function convName(c) {
  if (c.kind === 'group') return c.title || 'Group';
  const p = peerOf(c);
  return p ? nameOf(p) : 'Just you';
}

// A direct chat whose other member wrote first and the user never
// answered: a stranger's first message, shown with Block and Reply.
function isStranger(c) {
  return c.kind === 'direct' && !c.contact && !c.blocked && c.last_seq > 0 && peerOf(c) !== undefined;
}

// The direct chat with a user, if there is one.
function directWith(userId) {
  for (const c of S.convs.values()) if (c.kind === 'direct' && peerOf(c) === userId) return c;
  return undefined;
}

async function learnNames(ids) {
  const missing = [...new Set(ids)].filter((id) => !S.names.has(id));
  if (!missing.length) return;
  try {
    for (const u of await api.usersById(missing)) S.names.set(u.user_id, u.username);
  } catch (e) {
    // Names stay "user N" until the next try; nothing else depends on them.
  }
}

async function fetchConv(id) {
  const e = await api.conversation(id);
  const c = addConv(e);
  await learnNames(c.members);
  return c;
}

// A conversation new to this device, as its messages arrive: one request
// however many of them come meanwhile (a burst of 100 would otherwise be
// 100 requests, some of them refused under load).
function learnConv(id) {
  let p = S.learning.get(id);
  if (!p) {
    p = fetchConv(id).finally(() => S.learning.delete(id));
    S.learning.set(id, p);
  }
  return p;
}

function dropConv(id) {
  S.convs.delete(id);
  delete S.seqs[id];
  store.flushSeqs(S.me.user_id, S.seqs);
  if (S.open === id) closeChat();
}

// ---- notifications ---------------------------------------------------------

// A message from someone else while the tab is hidden: titled as the
// list names the chat; in a group, the body says who wrote, as the
// server's pushes do.
function alertOf(c, m) {
  // Previews off: as the server's pushes then, neither sender nor text.
  notify.notifyMessage({
    conv: c.id,
    seq: m.seq,
    title: S.previews ? convName(c) : 'Parley',
    body: !S.previews ? 'New message' : c.kind === 'group' ? `${nameOf(m.from)}: ${m.body}` : m.body,
    onClick: () => openFromOutside(c.id),
  });
}

// A conversation named from outside the page: a click on a notification
// (the service worker posts {type:'open', conv}) or #conv=ID in the
// address. Before sign-in, or while the list loads, it waits for
// startApp; one this device has not seen yet is fetched (a member's).
async function openFromOutside(conv) {
  if (!S.me || !S.live) {
    S.wantOpen = conv;
    return;
  }
  if (!S.convs.has(conv)) {
    try {
      await learnConv(conv);
    } catch (e) {
      if (S.me) toast(`That conversation cannot be opened: ${refusal(e)}`);
      return;
    }
    watchPeers();
  }
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  openChat(conv);
}

// #conv=ID: taken from the address once read, so that a reload does not
// open the chat again.
function takeHash() {
  const m = /^#conv=(\d{1,16})$/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, '', location.pathname + location.search);
  const conv = Number(m[1]);
  if (Number.isSafeInteger(conv) && conv > 0) openFromOutside(conv);
}

function showNotifyStatus(st) {
  $('notify-status').textContent = st.text;
  $('notify-error').textContent = st.error;
  $('notify-button').hidden = !st.action;
  if (st.action) $('notify-button').textContent = st.action;
}

async function enableNotifications() {
  const b = $('notify-button');
  b.disabled = true;
  $('notify-error').textContent = '';
  try {
    showNotifyStatus(await notify.enable());
  } catch (e) {
    showNotifyStatus(notify.status());
    $('notify-error').textContent = sentence(e.message);
  }
  b.disabled = false;
}

// ---- the real-time connection -------------------------------------------

function startLive() {
  S.live = new Live(async () => (await api.wsTicket()).ticket, {
    frame: onFrame,
    up: onUp,
    down: onDown,
    refused: (why) => signedOut(why === 'logged-out' ? 'This device was logged out.'
      : 'Your session has ended. Please log in again.'),
  }, S.me.user_id);
  S.live.start();
}

function onUp() {
  banner(null);
  resume();
  watchPeers();
  if (document.visibilityState !== 'visible') S.live.send({ type: 'presence', state: 'away' });
  for (const o of S.outbox) if (o.state === 'pending') transmit(o);
}

async function onDown(attempt, delay, failedBeforeReady) {
  S.resuming = false;
  banner(`Offline — reconnecting${delay > 1500 ? ` in ${Math.round(delay / 1000)} s` : ''}…`);
  // Refused again and again before "ready": perhaps the token is gone
  // (a 401 from any request signs out; the settings cost the least).
  if (failedBeforeReady >= 2) {
    try {
      await api.settings();
    } catch (e) {
      // Signed out by the 401 handler, or the server is still away.
    }
  }
}

function resume() {
  const convs = {};
  for (const c of S.convs.values()) convs[c.id] = S.seqs[c.id] || 0;
  if (S.live.send({ type: 'resume', convs })) S.resuming = true;
}

function watchPeers() {
  const users = [];
  for (const c of S.convs.values()) {
    const p = peerOf(c);
    if (p && !users.includes(p)) users.push(p);
  }
  S.live.send({ type: 'watch', users: users.slice(0, 500) });
}

function onFrame(f) {
  switch (f.type) {
    case 'msg': onMsg(f); break;
    case 'ack': onAck(f); break;
    case 'resumed': onResumed(f); break;
    case 'receipt': onReceipt(f); break;
    case 'receipts': onReceipts(f); break;
    case 'typing': onTyping(f); break;
    case 'presence': onPresence(f); break;
    case 'members': onMembers(f); break;
    case 'error': onError(f); break;
    default: break;
  }
}

// The cursor moves over seqs held without a gap; a gap asks the server
// for what is missing (the whole cursor map: only the latest waiting
// resume is kept by the server).
function advance(c, seq) {
  let h = S.seqs[c.id] || 0;
  if (seq <= h) return;
  if (seq === h + 1) {
    h = seq;
    while (c.msgs.has(h + 1)) h++;
    S.seqs[c.id] = h;
    store.saveSeqs(S.me.user_id, S.seqs);
    return;
  }
  // A replay jumps over what lies beyond its newest 1,000; its "resumed"
  // moves the cursor. Only a jump outside a resume is a gap.
  const now = Date.now();
  if (!S.resuming && now - S.lastGapResume > 2000) {
    S.lastGapResume = now;
    resume();
  }
}

async function onMsg(m) {
  let c = S.convs.get(m.conv);
  if (!c) {
    const first = !S.learning.has(m.conv);
    try {
      c = await learnConv(m.conv);
    } catch (e) {
      return; // history has it when the chat is opened
    }
    if (first) watchPeers();
  }
  if (c.msgs.has(m.seq)) return; // a replay of what we hold
  if (m.from === S.me.user_id) markContact(c); // written from another of our devices
  // Presence is for contacts: a peer's first message to us is what lets
  // us see it, so ask again once it has written.
  const peer = peerOf(c);
  if (peer && m.from === peer && !S.presence.has(peer)) watchPeers();
  const isNew = m.seq > c.last_seq;
  c.msgs.set(m.seq, m);
  advance(c, m.seq);
  if (m.kind) {
    // An edit, delete or reaction: it changes a message, is no message.
    if (isNew) c.last_seq = m.seq;
    applyEvent(c, m);
    if (m.from !== S.me.user_id) queueReceipt(S.pendingDelivered, c.id, m.seq);
    if (chatVisible(c)) markRead(c);
    renderList();
    if (S.open === c.id) renderChat();
    return;
  }
  if (isNew) {
    c.last_seq = m.seq;
    c.last_message = m;
    c.activity = Math.max(c.activity, m.ts);
  }
  if (m.from !== S.me.user_id) {
    c.typing.delete(m.from);
    queueReceipt(S.pendingDelivered, c.id, m.seq);
    if (isNew && !chatVisible(c)) c.unread++;
    // Only news: not a replay of what was read, not one's own from
    // another device, not while the user is looking at the page.
    if (isNew && m.seq > c.read_seq && !c.muted && document.visibilityState === 'hidden') alertOf(c, m);
  }
  if (chatVisible(c)) markRead(c);
  renderList();
  if (S.open === c.id) renderChat();
}

// An event's effect on the message it is about, when we hold it and the
// event is newer than the state it shows (docs/protocol.md: applied in
// any order, or twice, events end the same).
function applyEvent(c, e) {
  const t = c.msgs.get(e.target);
  if (!t || t.kind || (t.state_seq || 0) >= e.seq) return;
  t.state_seq = e.seq;
  if (e.kind === 'edit') {
    if (t.deleted) return;
    t.body = e.body;
    t.edited_at = e.ts;
  } else if (e.kind === 'delete') {
    t.deleted = true;
    t.body = '';
    delete t.reactions;
    delete t.edited_at;
  } else if (e.kind === 'reaction') {
    let rs = (t.reactions || []).map((r) => ({ emoji: r.emoji, users: r.users.filter((u) => u !== e.from) }));
    if (e.body) {
      const r = rs.find((x) => x.emoji === e.body);
      if (r) r.users.push(e.from);
      else rs.push({ emoji: e.body, users: [e.from] });
    }
    rs = rs.filter((r) => r.users.length);
    if (rs.length) t.reactions = rs;
    else delete t.reactions;
  }
  if (c.last_message && c.last_message.seq === t.seq) c.last_message = t;
}

// A page of history into c: rows it lacks, and rows it holds in an older
// state; then the page's events onto messages held from elsewhere.
function takePage(c, messages) {
  for (const m of messages) {
    const held = c.msgs.get(m.seq);
    if (!held || (!held.kind && (m.state_seq || 0) > (held.state_seq || 0))) c.msgs.set(m.seq, m);
  }
  for (const m of messages) if (m.kind) applyEvent(c, m);
}

// Sends an edit, delete or reaction; its ack applies it here (the
// sending device gets no msg of its own events).
function sendEvent(c, frame) {
  const cmid = newCmid();
  const e = { ...frame, conv: c.id, cmid };
  if (!S.live || !S.live.send(e)) {
    toast('Not connected — try again in a moment.');
    return;
  }
  S.events.set(cmid, e);
}

function onEventAck(a, e) {
  S.events.delete(a.cmid);
  const c = S.convs.get(a.conv);
  if (!c) return;
  const kind = e.type === 'react' ? 'reaction' : e.type;
  const m = { conv: a.conv, id: a.id, seq: a.seq, from: S.me.user_id, cmid: a.cmid, ts: a.ts, kind,
    target: e.seq, body: e.type === 'react' ? e.emoji : e.type === 'delete' ? '' : e.body };
  c.msgs.set(m.seq, m);
  advance(c, m.seq);
  if (m.seq > c.last_seq) c.last_seq = m.seq;
  applyEvent(c, m);
  renderList();
  if (S.open === c.id) renderChat();
}

function onAck(a) {
  const ev = S.events.get(a.cmid);
  if (ev && ev.conv === a.conv) {
    onEventAck(a, ev);
    return;
  }
  const i = S.outbox.findIndex((o) => o.cmid === a.cmid && o.conv === a.conv);
  const c = S.convs.get(a.conv);
  if (i < 0 || !c) return;
  const o = S.outbox[i];
  clearTimeout(o.timer);
  S.outbox.splice(i, 1);
  store.saveOutbox(S.me.user_id, S.outbox);
  const m = { conv: a.conv, id: a.id, seq: a.seq, from: S.me.user_id, cmid: a.cmid, body: o.body, ts: a.ts };
  if (o.reply_to) m.reply_to = { seq: o.reply_to };
  markContact(c);
  c.msgs.set(m.seq, m);
  advance(c, m.seq);
  if (m.seq > c.last_seq) {
    c.last_seq = m.seq;
    c.last_message = m;
  }
  c.activity = Math.max(c.activity, m.ts);
  renderList();
  if (S.open === c.id) renderChat();
}

async function onResumed(f) {
  const heads = f.heads || {};
  S.resuming = false;
  let learned = false;
  for (const [id, head] of Object.entries(heads)) {
    const conv = Number(id);
    const c = S.convs.get(conv);
    if (!c) {
      try {
        await learnConv(conv);
        learned = true;
      } catch (e) {
        // left or removed meanwhile
      }
    } else {
      // Everything up to the head has been replayed, or lies beyond the
      // replay's newest 1,000 and comes from history when the chat is
      // read: the cursor moves to the head either way, so that a long
      // absence does not look like a gap forever after.
      if (head > c.last_seq) c.last_seq = head;
      let h = Math.max(S.seqs[c.id] || 0, head);
      while (c.msgs.has(h + 1)) h++; // live ones that came in meanwhile
      S.seqs[c.id] = h;
    }
  }
  store.saveSeqs(S.me.user_id, S.seqs);
  for (const c of [...S.convs.values()])
    if (heads[c.id] === undefined) dropConv(c.id);
  if (learned) watchPeers();
  renderList();
  if (S.open) renderChat();
}

function onReceipt(r) {
  const c = S.convs.get(r.conv);
  if (!c) return;
  if (r.user === S.me.user_id) {
    // One of our other devices: a read there clears the badge here.
    if (r.state === 'read' && r.seq > c.read_seq) {
      c.read_seq = r.seq;
      if (r.seq >= c.last_seq) {
        c.unread = 0;
        notify.clearConv(c.id);
      }
      renderList();
    }
    return;
  }
  c.peerDelivered = Math.max(c.peerDelivered, r.seq);
  if (r.state === 'read') c.peerRead = Math.max(c.peerRead, r.seq);
  if (S.open === c.id) renderChat();
}

function onReceipts(f) {
  const c = S.convs.get(f.conv);
  if (!c) return;
  for (const k of f.counts || []) c.counts.set(k.seq, { delivered: k.delivered, read: k.read });
  if (S.open === c.id) renderChat();
}

function onTyping(t) {
  const c = S.convs.get(t.conv);
  if (!c || t.user === S.me.user_id) return;
  clearTimeout(c.typing.get(t.user));
  if (t.on) {
    c.typing.set(t.user, setTimeout(() => {
      c.typing.delete(t.user);
      renderList();
      if (S.open === c.id) renderHead();
    }, TYPING_SHOWN_MS));
  } else {
    c.typing.delete(t.user);
  }
  renderList();
  if (S.open === c.id) renderHead();
}

function onPresence(p) {
  S.presence.set(p.user, { state: p.state, last_seen: p.last_seen });
  renderList();
  if (S.open) renderHead();
}

async function onMembers(f) {
  if ((f.event === 'removed' || f.event === 'left') && f.user === S.me.user_id) {
    dropConv(f.conv);
    renderList();
    return;
  }
  try {
    await fetchConv(f.conv);
  } catch (e) {
    return;
  }
  renderList();
  if (S.open === f.conv) renderChat();
  if ($('info-dialog').open && S.open === f.conv) renderInfo();
}

function onError(e) {
  if (e.ref !== undefined && S.events.has(e.ref)) {
    // An edit, delete or reaction refused: nothing changed; say why.
    S.events.delete(e.ref);
    toast(refusal(e));
    return;
  }
  if (e.ref !== undefined) {
    // A refused send: shown on that message. One we no longer hold (an
    // answer to another page's send) has nowhere to go.
    const o = S.outbox.find((x) => x.cmid === e.ref);
    if (o) sendRefused(o, e);
    return;
  }
  const text = refusal(e);
  if (e.code === 'forbidden' && e.conv !== undefined) {
    // Not (or no longer) a member: the conversation goes from the list.
    const c = S.convs.get(e.conv);
    if (c) toast(`${convName(c)}: ${text}`);
    dropConv(e.conv);
    renderList();
    return;
  }
  if (e.code === 'rate_limited' || e.code === 'unavailable')
    redoLater(e.conv, e.code === 'rate_limited' ? e.retry_after_ms : 1000);
  toast(text);
}

// A resume, watch, receipt or typing frame the server could not take
// now: what matters of them (the resume, the watch, the receipts) goes
// again once the wait is over. A repeated resume or receipt is harmless.
function redoLater(conv, ms) {
  clearTimeout(S.redoTimer);
  S.redoTimer = setTimeout(() => {
    if (!S.live || !S.live.ready) return; // the next "ready" does all of it
    if (S.resuming) resume();
    watchPeers();
    const c = conv !== undefined && S.convs.get(conv);
    if (c) {
      if (S.seqs[c.id]) queueReceipt(S.pendingDelivered, c.id, S.seqs[c.id]);
      if (chatVisible(c) && c.read_seq) queueReceipt(S.pendingRead, c.id, c.read_seq);
    }
  }, Math.max(ms || 1000, 250));
}

// The server refused a send. Over a budget, or busy: the same cmid goes
// again when the server says (it is stored once whatever happens), and
// the message says so meanwhile. Anything else is final until the user
// retries: no loop sends a forbidden message again and again.
function sendRefused(o, e) {
  clearTimeout(o.timer);
  if (e.code === 'rate_limited' || e.code === 'unavailable') {
    const wait = Math.max((e.code === 'rate_limited' && e.retry_after_ms) || 1000, 250);
    o.state = 'waiting';
    o.error = e.code === 'unavailable' ? `The server is busy — trying again in ${waitText(wait)}.`
      : /storage/i.test(e.message || '') ? `You have sent too much today — trying again in ${waitText(wait)}.`
        : `You're sending too fast — trying again in ${waitText(wait)}.`;
    o.serverMessage = e.message;
    o.timer = setTimeout(() => transmit(o), wait);
  } else {
    o.state = 'failed';
    o.error = sentence(e.message);
    o.refused = true;
    const c = S.convs.get(o.conv);
    if (e.code === 'forbidden' && c && c.kind === 'direct') {
      // A block, one way or the other. Ours (from another device) shows
      // as such once the entry says so; theirs ends their presence here.
      const peer = peerOf(c);
      if (peer !== undefined && S.presence.delete(peer)) renderList();
      fetchConv(c.id).then(() => {
        renderList();
        if (S.open === c.id) renderChat();
      }, () => {});
    }
  }
  store.saveOutbox(S.me.user_id, S.outbox);
  if (S.open === o.conv) renderChat();
}

// The user has written in this direct chat: the other is a contact now.
function markContact(c) {
  if (c.kind !== 'direct') return;
  c.wrote = true;
  c.contact = true;
}

// ---- sending -------------------------------------------------------------

function newCmid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function send(c, body, replyTo) {
  const o = { cmid: newCmid(), conv: c.id, body, at: Date.now(), state: 'pending' };
  if (replyTo) o.reply_to = replyTo;
  c.unreadFrom = 0; // answered: the divider has done its work
  S.outbox.push(o);
  store.saveOutbox(S.me.user_id, S.outbox);
  transmit(o);
  c.activity = Math.max(c.activity, o.at);
  renderList();
  renderChat(true);
}

function transmit(o) {
  clearTimeout(o.timer);
  o.state = 'pending';
  o.error = undefined;
  o.serverMessage = undefined;
  o.refused = false;
  const frame = { type: 'send', conv: o.conv, cmid: o.cmid, body: o.body };
  if (o.reply_to) frame.reply_to = o.reply_to;
  if (!S.live.send(frame)) return; // sent on reconnect
  o.timer = setTimeout(() => {
    o.state = 'failed';
    o.error = 'Not delivered to the server yet';
    store.saveOutbox(S.me.user_id, S.outbox);
    if (S.open === o.conv) renderChat();
  }, ACK_TIMEOUT_MS);
}

function retry(cmid) {
  const o = S.outbox.find((x) => x.cmid === cmid);
  if (!o) return;
  transmit(o);
  store.saveOutbox(S.me.user_id, S.outbox);
  renderChat();
}

// ---- receipts ------------------------------------------------------------

function chatVisible(c) {
  return S.open === c.id && document.visibilityState === 'visible';
}

function queueReceipt(map, conv, seq) {
  if ((map.get(conv) || 0) < seq) map.set(conv, seq);
  if (!S.receiptTimer) S.receiptTimer = setTimeout(flushReceipts, RECEIPT_FLUSH_MS);
}

function flushReceipts() {
  S.receiptTimer = null;
  if (!S.live || !S.live.ready) {
    if (S.pendingRead.size || S.pendingDelivered.size)
      S.receiptTimer = setTimeout(flushReceipts, RECEIPT_FLUSH_MS);
    return;
  }
  for (const [conv, seq] of S.pendingRead) {
    S.live.send({ type: 'receipt', conv, state: 'read', seq });
    if ((S.pendingDelivered.get(conv) || 0) <= seq) S.pendingDelivered.delete(conv); // read implies delivered
  }
  for (const [conv, seq] of S.pendingDelivered) S.live.send({ type: 'receipt', conv, state: 'delivered', seq });
  S.pendingRead.clear();
  S.pendingDelivered.clear();
}

// Marks everything in an on-screen conversation read.
function markRead(c) {
  if (!chatVisible(c) || c.last_seq <= c.read_seq) return;
  c.read_seq = c.last_seq;
  c.unread = 0;
  queueReceipt(S.pendingRead, c.id, c.last_seq);
  notify.clearConv(c.id);
}

// ---- typing --------------------------------------------------------------

function typingInput() {
  const c = S.convs.get(S.open);
  if (!c) return;
  const text = $('composer-input').value;
  clearTimeout(S.typingStopTimer);
  if (!text) {
    typingStop();
    return;
  }
  const now = Date.now();
  if (S.typingConv !== c.id || now - S.typingSentAt >= TYPING_EVERY_MS) {
    if (S.typingConv && S.typingConv !== c.id) typingStop();
    if (S.live.send({ type: 'typing', conv: c.id, on: true })) {
      S.typingSentAt = now;
      S.typingConv = c.id;
    }
  }
  S.typingStopTimer = setTimeout(typingStop, TYPING_IDLE_MS);
}

function typingStop() {
  clearTimeout(S.typingStopTimer);
  if (S.typingConv) S.live.send({ type: 'typing', conv: S.typingConv, on: false });
  S.typingConv = null;
  S.typingSentAt = 0;
}

// ---- rendering -----------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(ts) {
  const d = new Date(ts);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString([], { day: 'numeric', month: 'short' });
}

function typingText(c) {
  const who = [...c.typing.keys()];
  if (!who.length) return '';
  if (c.kind === 'direct') return 'typing…';
  return who.length === 1 ? `${nameOf(who[0])} is typing…` : `${who.length} people are typing…`;
}

function presenceText(p) {
  if (!p) return '';
  if (p.state === 'online') return 'online';
  if (p.state === 'away') return 'away';
  if (!p.last_seen) return 'offline';
  return `last seen ${clock(p.last_seen)}`;
}

// Frames come in bursts (a resume replays up to 1,000 messages): the
// screens are redrawn at most once a frame, not once a message.
const dirty = { list: false, head: false, chat: false, stick: false };
let drawPending = false;

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  const run = () => {
    drawPending = false;
    const d = { ...dirty };
    dirty.list = dirty.head = dirty.chat = dirty.stick = false;
    if (d.list) drawList();
    if (d.chat) drawChat(d.stick);
    else if (d.head) drawHead();
  };
  if (document.visibilityState === 'visible') requestAnimationFrame(run);
  else setTimeout(run, 250);
}

function renderList() {
  dirty.list = true;
  scheduleDraw();
}

function renderHead() {
  dirty.head = true;
  scheduleDraw();
}

function renderChat(stick) {
  dirty.chat = true;
  if (stick) dirty.stick = true;
  scheduleDraw();
}

function drawList() {
  if (!S.me) return;
  const list = $('conv-list');
  const convs = [...S.convs.values()].sort((a, b) => b.activity - a.activity || b.id - a.id);
  // The tab's title counts unread messages, as chat apps' tabs do.
  const unread = convs.reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Parley` : 'Parley';
  notify.setBadge(unread);
  $('conv-empty').hidden = convs.length > 0 || $('conv-list').hidden; // hidden: search results show
  list.replaceChildren(...convs.map((c) => {
    const li = el('li');
    const b = el('button', 'conv');
    b.type = 'button';
    b.dataset.conv = c.id;
    if (S.open === c.id) b.setAttribute('aria-current', 'true');
    const dot = el('span', 'dot');
    const peer = peerOf(c);
    if (c.kind === 'group') dot.classList.add('group');
    const p = peer && S.presence.get(peer);
    if (p && p.state !== 'offline') dot.classList.add(p.state);
    dot.setAttribute('aria-hidden', 'true');
    const name = el('span', 'name', convName(c));
    const time = el('span', 'time', c.last_message ? clock(c.last_message.ts) : '');
    const typing = typingText(c);
    let previewText = typing;
    if (!typing && c.last_message) {
      const lm = c.last_message;
      const who = lm.from === S.me.user_id ? 'You: ' : c.kind === 'group' ? `${nameOf(lm.from)}: ` : '';
      previewText = who + (lm.deleted ? 'This message was deleted' : lm.body.split('\n')[0]);
    }
    const preview = el('span', typing ? 'preview typing' : 'preview');
    const stranger = isStranger(c);
    if (stranger) b.classList.add('request');
    if (c.blocked) preview.append(el('span', 'tag blocked', 'Blocked'));
    else if (stranger) preview.append(el('span', 'tag', 'New contact request'));
    else if (c.muted) preview.append(el('span', 'tag', 'Muted'));
    preview.append(document.createTextNode(previewText));
    b.append(dot, name, time, preview);
    let label = convName(c);
    if (c.blocked) label += ', blocked';
    else if (stranger) label += ', new contact request';
    if (c.muted) label += ', muted';
    if (p) label += `, ${presenceText(p)}`;
    if (c.unread > 0) {
      b.append(el('span', 'badge', String(c.unread)));
      label += `, ${c.unread} unread`;
    }
    b.setAttribute('aria-label', label);
    b.addEventListener('click', () => openChat(c.id));
    li.append(b);
    return li;
  }));
}

function drawHead() {
  const c = S.me && S.convs.get(S.open);
  if (!c) return;
  $('chat-name').textContent = convName(c);
  let status = typingText(c);
  if (!status) {
    if (c.kind === 'group') status = `${c.members.length} members`;
    else status = presenceText(S.presence.get(peerOf(c)));
  }
  $('chat-status').textContent = status;
  $('info-button').hidden = c.kind !== 'group';
  const mb = $('mute-button');
  mb.textContent = c.muted ? 'Unmute' : 'Mute';
  mb.setAttribute('aria-pressed', String(c.muted));
  mb.setAttribute('aria-label', `${c.muted ? 'Unmute' : 'Mute'} notifications of ${convName(c)}`);
  drawBars(c);
}

// Muted: no notification here, and no push to the user's other devices
// (the server keeps it per member, so every device of the user agrees).
async function toggleMute() {
  const c = S.convs.get(S.open);
  if (!c) return;
  try {
    addConv(await api.setMuted(c.id, !c.muted));
    renderList();
    renderHead();
  } catch (e) {
    toast(`Could not ${c.muted ? 'unmute' : 'mute'} ${convName(c)}: ${refusal(e)}`);
  }
}

// Around the composer: a stranger's first message offers Block and
// Reply; a chat with someone the user blocked has Unblock in place of the
// composer. The header's Block button is there for every direct chat.
function drawBars(c) {
  const peer = peerOf(c);
  const direct = c.kind === 'direct' && peer !== undefined;
  const name = direct ? nameOf(peer) : '';
  const bb = $('block-button');
  bb.hidden = !direct;
  if (direct) {
    bb.textContent = c.blocked ? 'Unblock' : 'Block';
    bb.setAttribute('aria-label', `${c.blocked ? 'Unblock' : 'Block'} ${name}`);
  }
  const stranger = isStranger(c);
  $('stranger-bar').hidden = !stranger;
  if (stranger) {
    $('stranger-text').textContent = `${name} is not in your contacts`;
    $('stranger-block').setAttribute('aria-label', `Block ${name}`);
    $('stranger-reply').setAttribute('aria-label', `Reply to ${name}`);
  }
  const blocked = direct && c.blocked;
  $('blocked-bar').hidden = !blocked;
  if (blocked) {
    $('blocked-text').textContent = `You blocked ${name}.`;
    $('unblock-button').setAttribute('aria-label', `Unblock ${name}`);
  }
  const composer = $('composer');
  if (composer.hidden !== blocked) {
    if (blocked && composer.contains(document.activeElement)) $('unblock-button').focus();
    composer.hidden = blocked;
  }
}

// The state of one of our own stored messages.
function tickOf(c, m) {
  if (c.kind === 'direct') {
    if (m.seq <= c.peerRead) return ['read', '✓✓', 'Read'];
    if (m.seq <= c.peerDelivered) return ['delivered', '✓✓', 'Delivered'];
    return ['sent', '✓', 'Sent'];
  }
  const k = c.counts.get(m.seq);
  const others = Math.max(1, c.members.length - 1);
  if (k && k.read >= others) return ['read', '✓✓', 'Read by everyone'];
  if (k && k.delivered !== null && k.delivered >= others) return ['delivered', '✓✓', 'Delivered to everyone'];
  return ['sent', '✓', 'Sent'];
}

// A message's text, with its http(s) addresses as links that open
// elsewhere and tell the page nothing (noopener, noreferrer); the server
// fetches nothing for them. Everything else is text.
const LINK = /\bhttps?:\/\/[^\s<>"]+/gi;

function bodyEl(text) {
  const body = el('div', 'body');
  let at = 0;
  for (const m of text.matchAll(LINK)) {
    let url = m[0];
    while (/[.,;:!?)\]}'»”]$/.test(url)) url = url.slice(0, -1); // the sentence's, not the address's
    if (m.index > at) body.append(document.createTextNode(text.slice(at, m.index)));
    const a = el('a', null, url);
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    body.append(a);
    at = m.index + url.length;
  }
  if (at < text.length) body.append(document.createTextNode(text.slice(at)));
  return body;
}

// The day a message belongs to, as the separators say it.
function dayLabel(ts) {
  const d = new Date(ts);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return d.toLocaleDateString(undefined, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

// The message a reply quotes, as this client can show it: the copy it
// holds (its present state), else what history said; null when neither.
function quoteOf(c, reply) {
  const t = c.msgs.get(reply.seq);
  if (t && !t.kind) return { from: t.from, text: t.deleted ? 'Deleted message' : t.body, deleted: !!t.deleted };
  if (reply.from) return { from: reply.from, text: reply.deleted ? 'Deleted message' : reply.body, deleted: !!reply.deleted };
  return null;
}

const EDIT_WINDOW_MS = 15 * 60 * 1000; // the server's default; it decides
const QUICK_REACTIONS = ['\u{1F44D}', '\u2764\uFE0F', '\u{1F602}', '\u{1F62E}', '\u{1F622}', '\u{1F64F}'];
let menuFor = null; // the seq whose message menu is open

function isAdmin(c) {
  return c.kind === 'group' && c.admins.includes(S.me.user_id);
}

function myReaction(m) {
  const r = (m.reactions || []).find((x) => x.users.includes(S.me.user_id));
  return r ? r.emoji : '';
}

function react(c, m, emoji) {
  sendEvent(c, { type: 'react', seq: m.seq, emoji: myReaction(m) === emoji ? '' : emoji });
}

function closeMenu(focusSeq) {
  if (menuFor === null) return;
  menuFor = null;
  renderChat();
  if (focusSeq) requestAnimationFrame(() => {
    const b = document.querySelector(`#messages .msg[data-seq="${focusSeq}"] .menu-button`);
    if (b) b.focus();
  });
}

function startReply(c, m) {
  S.editing = null;
  S.replyTo = { conv: c.id, seq: m.seq };
  drawContext();
  $('composer-input').focus();
}

function startEdit(c, m) {
  S.replyTo = null;
  S.editing = { conv: c.id, seq: m.seq };
  $('composer-input').value = m.body;
  drawContext();
  $('composer-input').focus();
}

function confirmDelete(c, m) {
  confirmAction({
    title: 'Delete message?',
    text: m.from === S.me.user_id ? 'It will be deleted for everyone in this chat.'
      : `This message by ${nameOf(m.from)} will be deleted for everyone in this group.`,
    ok: 'Delete for everyone',
    run: async () => sendEvent(c, { type: 'delete', seq: m.seq }),
  });
}

// What the composer is doing besides writing a new message: answering
// one, or editing one; Cancel (or Escape) goes back to writing.
function drawContext() {
  const bar = $('compose-context');
  const ctx = S.editing || S.replyTo;
  if (!ctx || ctx.conv !== S.open) {
    bar.hidden = true;
    return;
  }
  const c = S.convs.get(ctx.conv);
  const t = c && c.msgs.get(ctx.seq);
  bar.hidden = false;
  $('compose-context-text').textContent = S.editing ? 'Editing your message'
    : `Replying to ${t ? nameOf(t.from) : 'a message'}: ${t ? (t.deleted ? 'Deleted message' : t.body.slice(0, 120)) : ''}`;
}

function cancelContext() {
  if (S.editing) $('composer-input').value = '';
  S.editing = null;
  S.replyTo = null;
  drawContext();
}

function menuEl(c, m) {
  const own = m.from === S.me.user_id;
  const menu = el('div', 'msg-menu');
  menu.setAttribute('role', 'menu');
  menu.setAttribute('aria-label', 'Message options');
  const item = (label, fn, cls) => {
    const b = el('button', cls || null, label);
    b.type = 'button';
    b.setAttribute('role', 'menuitem');
    b.addEventListener('click', () => {
      closeMenu(null);
      fn();
    });
    menu.append(b);
    return b;
  };
  const row = el('div', 'quick-reactions');
  for (const e of QUICK_REACTIONS) {
    const b = el('button', 'quick-reaction', e);
    b.type = 'button';
    b.setAttribute('role', 'menuitem');
    b.setAttribute('aria-label', `React with ${e}`);
    if (myReaction(m) === e) b.setAttribute('aria-pressed', 'true');
    b.addEventListener('click', () => {
      closeMenu(m.seq);
      react(c, m, e);
    });
    row.append(b);
  }
  menu.append(row);
  item('Reply', () => startReply(c, m), 'menu-reply');
  if (myReaction(m)) item('Remove reaction', () => sendEvent(c, { type: 'react', seq: m.seq, emoji: '' }), 'menu-unreact');
  if (own && Date.now() - m.ts < EDIT_WINDOW_MS) item('Edit', () => startEdit(c, m), 'menu-edit');
  if (own || isAdmin(c)) item('Delete', () => confirmDelete(c, m), 'menu-delete');
  menu.addEventListener('keydown', (ev) => {
    const items = [...menu.querySelectorAll('button')];
    const i = items.indexOf(document.activeElement);
    if (ev.key === 'Escape') {
      ev.preventDefault();
      closeMenu(m.seq);
    } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowRight') {
      ev.preventDefault();
      items[(i + 1) % items.length].focus();
    } else if (ev.key === 'ArrowUp' || ev.key === 'ArrowLeft') {
      ev.preventDefault();
      items[(i - 1 + items.length) % items.length].focus();
    }
  });
  return menu;
}

function messageEl(c, m, pending) {
  const own = pending || m.from === S.me.user_id;
  const div = el('div', own ? 'msg own' : 'msg');
  if (m.seq) div.dataset.seq = m.seq;
  if (m.cmid) div.dataset.cmid = m.cmid;
  // Screen readers hear who wrote each message; the eye sees it by side.
  div.append(el('span', 'visually-hidden', own ? 'You:' : `${nameOf(m.from)}:`));
  if (c.kind === 'group' && !own) div.append(el('div', 'from', nameOf(m.from)));
  // A pending send keeps its reply_to as the seq it answers.
  const reply = pending ? (m.reply_to ? { seq: m.reply_to } : null) : m.reply_to;
  const q = reply && quoteOf(c, reply);
  if (reply) {
    const quote = el('button', q && q.deleted ? 'quote deleted' : 'quote');
    quote.type = 'button';
    quote.append(el('span', 'quote-from', q ? nameOf(q.from) : 'Reply'));
    quote.append(el('span', 'quote-text', q ? q.text : 'to an earlier message'));
    quote.setAttribute('aria-label', q ? `In reply to ${nameOf(q.from)}: ${q.text}` : 'In reply to an earlier message');
    quote.addEventListener('click', () => openAt(c.id, reply.seq));
    div.append(quote);
  }
  if (m.deleted) div.append(el('div', 'body deleted', 'This message was deleted'));
  else div.append(bodyEl(m.body));
  if (m.reactions && m.reactions.length) {
    const rs = el('div', 'reactions');
    for (const r of m.reactions) {
      const b = el('button', 'reaction', `${r.emoji} ${r.users.length}`);
      b.type = 'button';
      const mine = r.users.includes(S.me.user_id);
      b.setAttribute('aria-pressed', mine ? 'true' : 'false');
      b.title = r.users.map(nameOf).join(', ');
      b.setAttribute('aria-label', `${r.emoji} from ${b.title}`);
      b.addEventListener('click', () => react(c, m, r.emoji));
      rs.append(b);
    }
    div.append(rs);
  }
  const meta = el('div', 'meta');
  if (m.edited_at && !m.deleted) meta.append(el('span', 'edited', 'edited'));
  meta.append(el('span', 'time', clock(pending ? m.at : m.ts)));
  if (own) {
    let state;
    let mark;
    let label;
    if (pending) {
      [state, mark, label] = m.state === 'failed' ? ['failed', '!', `Not sent: ${m.error || 'failed'}`]
        : m.state === 'waiting' ? ['pending', '', `Not sent yet: ${m.error}`]
          : ['pending', '', 'Sending']; // the clock is drawn by app.css: no emoji font needed
    } else {
      [state, mark, label] = tickOf(c, m);
      const k = c.kind === 'group' && c.counts.get(m.seq);
      if (k) {
        const others = Math.max(1, c.members.length - 1);
        const counts = el('span', 'counts', k.delivered === null ? `read ${k.read}/${others}`
          : `${k.delivered}/${others} delivered, ${k.read}/${others} read`);
        meta.append(counts);
      }
    }
    const tick = el('span', 'tick', mark);
    tick.dataset.state = state;
    tick.setAttribute('role', 'img');
    tick.setAttribute('aria-label', label);
    tick.title = label;
    meta.append(tick);
    if (pending && m.state === 'failed') {
      const b = el('button', 'retry', 'Retry');
      b.type = 'button';
      b.addEventListener('click', () => retry(m.cmid));
      meta.append(b);
    }
  }
  if (!pending && !m.deleted) {
    const b = el('button', 'menu-button');
    b.type = 'button';
    b.setAttribute('aria-label', 'Message options');
    b.setAttribute('aria-haspopup', 'menu');
    b.setAttribute('aria-expanded', menuFor === m.seq ? 'true' : 'false');
    // Three dots drawn by app.css: no symbol font needed.
    for (let i = 0; i < 3; i++) b.append(el('span', 'dot'));
    b.addEventListener('click', () => {
      menuFor = menuFor === m.seq ? null : m.seq;
      renderChat();
      if (menuFor === m.seq) requestAnimationFrame(() => {
        const first = document.querySelector(`#messages .msg[data-seq="${m.seq}"] .msg-menu button`);
        if (first) first.focus();
      });
    });
    meta.append(b);
  }
  div.append(meta);
  if (!pending && menuFor === m.seq && !m.deleted) div.append(menuEl(c, m));
  // Why it is not sent, in words, under the message it is about.
  if (pending && (m.state === 'failed' || m.state === 'waiting') && m.error) {
    const note = el('div', m.state === 'failed' ? 'note failed' : 'note',
      m.state === 'failed' ? `Not sent: ${m.error}` : m.error);
    if (m.serverMessage) note.title = m.serverMessage;
    div.append(note);
  }
  return div;
}

// What the message pane shows: nodes by key ("s<seq>", "c<cmid>") with a
// signature of what they display, so that a redraw only adds, replaces or
// removes the messages that changed (a screen reader's log announces just
// those, and long chats stay cheap).
const shown = { conv: null, nodes: new Map() };

function msgSig(c, m, pending) {
  if (pending) return `p:${m.state}:${m.error || ''}:${m.reply_to || ''}`;
  // What events change, and the quote of a reply, whose target may change.
  const q = m.reply_to && quoteOf(c, m.reply_to);
  const state = `${m.state_seq || 0}:${q ? `${q.from}:${q.text}` : ''}:${menuFor === m.seq ? 'menu' : ''}`;
  if (m.from !== S.me.user_id) return c.kind === 'group' ? `f:${nameOf(m.from)}:${state}` : `f:${state}`;
  const k = c.kind === 'group' && c.counts.get(m.seq);
  return `o:${tickOf(c, m)[0]}:${k ? `${k.delivered}/${k.read}/${c.members.length}` : ''}:${state}`;
}

function drawChat(stick) {
  const c = S.me && S.convs.get(S.open);
  if (!c) return;
  drawHead();
  const box = $('messages');
  const atBottom = stick || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  if (shown.conv !== c.id) {
    shown.conv = c.id;
    shown.nodes.clear();
    box.replaceChildren();
  }
  const want = [];
  const keep = new Map();
  const add = (key, sig, build) => {
    const old = shown.nodes.get(key);
    const rec = old && old.sig === sig ? old : { sig, node: build() };
    keep.set(key, rec);
    want.push(rec.node);
  };
  if (c.loaded && c.has_more) {
    const text = S.loadingOlder ? 'Loading…' : 'Scroll up for older messages';
    add('older', text, () => el('div', 'older', text));
  }
  const allSeqs = [...c.msgs.keys()].sort((a, b) => a - b);
  let day = null;
  const dayOf = (ts) => {
    const label = dayLabel(ts);
    if (label === day) return;
    day = label;
    add(`d${new Date(ts).toDateString()}`, label, () => {
      const d = el('div', 'day', label);
      d.setAttribute('role', 'separator');
      d.setAttribute('aria-label', label);
      return d;
    });
  };
  // Events are not drawn: the messages they changed show it.
  const seqs = allSeqs.filter((s) => !c.msgs.get(s).kind);
  const firstUnread = c.unreadFrom && seqs.find((s) => s >= c.unreadFrom && c.msgs.get(s).from !== S.me.user_id);
  for (const seq of seqs) {
    const m = c.msgs.get(seq);
    dayOf(m.ts);
    if (seq === firstUnread) {
      const n = seqs.filter((s) => s >= seq && c.msgs.get(s).from !== S.me.user_id).length;
      const text = n === 1 ? '1 unread message' : `${n} unread messages`;
      add('unread', text, () => {
        const d = el('div', 'unread-divider', text);
        d.setAttribute('role', 'separator');
        d.setAttribute('aria-label', text);
        return d;
      });
    }
    add(`s${seq}`, msgSig(c, m, false), () => messageEl(c, m, false));
  }
  for (const o of S.outbox) {
    if (o.conv !== c.id) continue;
    dayOf(o.at);
    add(`c${o.cmid}`, msgSig(c, o, true), () => messageEl(c, o, true));
  }
  // Wanted nodes into place in order; whatever is left after them goes.
  want.forEach((node, i) => {
    if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
  });
  while (box.children.length > want.length) box.lastElementChild.remove();
  shown.nodes = keep;
  // Opened with unread messages: at the first of them, once, when the
  // chat's history is there; else where the reader was, or the bottom.
  const divider = firstUnread && stick && c.loaded && !c.unreadShown && box.querySelector('.unread-divider');
  if (divider) {
    scrollToChild(box, divider, 0.1);
    c.unreadShown = true;
  } else if (atBottom) {
    box.scrollTop = box.scrollHeight;
  }
  showJump();
}

// Scrolls box alone (scrollIntoView would move the page too) so that
// child's top is at `at` (a fraction) of its height.
function scrollToChild(box, child, at) {
  box.scrollTop += child.getBoundingClientRect().top - box.getBoundingClientRect().top - box.clientHeight * at
    + (at === 0.5 ? child.offsetHeight / 2 : 0);
}

// "Jump to the newest" once the reader has scrolled a screen up.
function showJump() {
  const box = $('messages');
  $('jump-button').hidden = box.scrollHeight - box.scrollTop - box.clientHeight < box.clientHeight;
}

// The banner says how the connection is; it stays until that changes.
function banner(text) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

// A passing notice, for a refusal that has no place of its own on screen.
let toastTimer = null;
function toast(text) {
  const t = $('toast');
  clearTimeout(toastTimer);
  t.textContent = text;
  t.hidden = false;
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

// ---- refusals in words ---------------------------------------------------

// The server's messages are lower-case phrases: shown as sentences.
function sentence(msg) {
  const t = String(msg || 'Something went wrong').trim();
  const cap = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?…]$/.test(cap) ? cap : `${cap}.`;
}

// "12 s", "3 min", "2 h 5 min": how long until the server takes more.
function waitText(ms) {
  const sec = Math.max(1, Math.ceil(ms / 1000));
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.ceil(sec / 60)} min`;
  let h = Math.floor(sec / 3600);
  let m = Math.ceil((sec % 3600) / 60);
  if (m === 60) {
    h++;
    m = 0;
  }
  return m ? `${h} h ${m} min` : `${h} h`;
}

// What to tell the user about a refusal: an ApiError or an error frame.
// A rate_limited one says when to try again, in place of the server's
// own "try again later".
function refusal(e) {
  const ms = e.retryAfterMs ?? e.retry_after_ms;
  if (e.code === 'rate_limited' && ms > 0) {
    const what = String(e.message || 'too many requests').trim()
      .replace(/[;,:]?\s*(try again later|retry later[^;]*|slow down|retry shortly)\.?$/i, '');
    return `${sentence(what).replace(/\.$/, '')} — try again in ${waitText(ms)}.`;
  }
  return sentence(e.message);
}

// ---- opening a chat, history ---------------------------------------------

async function openChat(id) {
  const c = S.convs.get(id);
  if (!c) return;
  if (S.typingConv && S.typingConv !== id) typingStop();
  // Where the unread divider goes while the chat is open.
  c.unreadFrom = c.unread > 0 ? c.read_seq + 1 : 0;
  c.unreadShown = false;
  S.open = id;
  S.replyTo = null;
  S.editing = null;
  menuFor = null;
  drawContext();
  $('app').classList.add('chat-open');
  $('chat').hidden = false;
  $('no-chat').hidden = true;
  $('composer-input').value = '';
  renderList();
  renderChat(true);
  drawBars(c); // now: whether there is a composer to focus
  if ($('composer').hidden) $('unblock-button').focus();
  else $('composer-input').focus();
  if (!c.loaded) {
    try {
      const page = await api.history(c.id, 0, PAGE);
      takePage(c, page.messages);
      c.has_more = page.has_more && page.messages.length > 0;
      c.floor = page.messages.length ? page.messages[0].seq : 0;
      c.loaded = true;
      await learnNames(page.messages.map((m) => m.from));
      await loadTicks(c);
    } catch (e) {
      if (S.me) toast(`Could not load this chat: ${refusal(e)}`);
    }
    if (S.open === id) renderChat(true);
  }
  markRead(c);
  renderList();
}

// After a reload: where the others stand on our newest message.
async function loadTicks(c) {
  const mine = [...c.msgs.values()].filter((m) => m.from === S.me.user_id).sort((a, b) => b.seq - a.seq)[0];
  if (!mine) return;
  try {
    const r = await api.receipts(c.id, mine.seq);
    const list = r.receipts;
    if (!Array.isArray(list)) {
      c.counts.set(mine.seq, { delivered: r.delivered ?? null, read: r.read || 0 });
      return;
    }
    if (c.kind === 'direct') {
      const p = list[0];
      if (p && p.delivered_at) c.peerDelivered = Math.max(c.peerDelivered, mine.seq);
      if (p && p.read_at) c.peerRead = Math.max(c.peerRead, mine.seq);
    } else {
      c.counts.set(mine.seq, {
        delivered: list.filter((x) => x.delivered_at).length,
        read: list.filter((x) => x.read_at).length,
      });
    }
  } catch (e) {
    // Ticks then show "sent" until the next receipt arrives.
  }
}

async function loadOlder() {
  const c = S.convs.get(S.open);
  if (!c || !c.loaded || !c.has_more || S.loadingOlder) return;
  // Older pages go on from where history reached, not from the oldest
  // message held: messages that came live before the chat was first
  // opened may lie below a gap that only history fills.
  const oldest = c.floor;
  if (!oldest || oldest <= 1) {
    c.has_more = false;
    renderChat();
    return;
  }
  S.loadingOlder = true;
  const box = $('messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await api.history(c.id, oldest, PAGE);
    takePage(c, page.messages);
    c.has_more = page.has_more && page.messages.length > 0;
    if (page.messages.length) c.floor = page.messages[0].seq;
    await learnNames(page.messages.map((m) => m.from));
  } catch (e) {
    if (S.me) toast(`Could not load older messages: ${refusal(e)}`);
  }
  S.loadingOlder = false;
  if (S.open !== c.id) return;
  drawChat(); // now, so that the reader's place can be kept
  box.scrollTop = box.scrollHeight - fromBottom;
}

function closeChat() {
  if (S.typingConv) typingStop();
  S.open = null;
  $('app').classList.remove('chat-open');
  $('chat').hidden = true;
  $('no-chat').hidden = false;
  renderList();
}

// ---- search ------------------------------------------------------------------

// The sidebar's search box: results replace the conversation list while
// it holds a query (two characters at least), newest typing wins; a
// result opens its chat at the message.
const SEARCH_DELAY_MS = 250;
const JUMP_PAGES_MAX = 25; // of 200: how far back a result's chat is loaded
let searchTimer = null;
let searchSeq = 0;

function searchInput() {
  clearTimeout(searchTimer);
  const q = $('search-input').value.trim();
  if ([...q].length < 2) {
    showSearch(false);
    return;
  }
  searchTimer = setTimeout(() => runSearch(q), SEARCH_DELAY_MS);
}

function showSearch(on, status) {
  $('search-results').hidden = !on || !!status;
  $('search-status').hidden = !on || !status;
  $('search-status').textContent = status || '';
  $('conv-list').hidden = on;
  $('conv-empty').hidden = on || S.convs.size > 0;
  if (!on) searchSeq++; // an answer still on its way is dropped
}

async function runSearch(q) {
  const mine = ++searchSeq;
  let res;
  try {
    res = await api.search(q);
  } catch (e) {
    if (mine !== searchSeq || !S.me) return;
    showSearch(true, e.status === 400 ? 'Type a word (letters or digits) to search for.' : refusal(e));
    return;
  }
  if (mine !== searchSeq || !S.me) return;
  for (const r of res.results) if (!S.convs.has(r.conversation_id)) await learnConv(r.conversation_id).catch(() => {});
  await learnNames(res.results.map((r) => r.message.from));
  if (mine !== searchSeq) return;
  const shown = res.results.filter((r) => S.convs.has(r.conversation_id));
  if (!shown.length) {
    showSearch(true, `No messages with “${q}”.`);
    return;
  }
  showSearch(true);
  $('search-results').replaceChildren(...shown.map((r) => searchResultEl(r)));
}

function searchResultEl(r) {
  const c = S.convs.get(r.conversation_id);
  const m = r.message;
  const b = el('button', 'conv result');
  b.type = 'button';
  b.dataset.conv = c.id;
  b.dataset.seq = m.seq;
  const dot = el('span', c.kind === 'group' ? 'dot group' : 'dot');
  dot.setAttribute('aria-hidden', 'true');
  const preview = el('span', 'preview');
  const who = m.from === S.me.user_id ? 'You: ' : c.kind === 'group' ? `${nameOf(m.from)}: ` : '';
  preview.append(document.createTextNode(who));
  // Parts as text; only the marks are elements (a snippet is never HTML).
  for (const part of r.snippet) preview.append(part.match ? el('mark', null, part.text) : document.createTextNode(part.text));
  const day = new Date(m.ts).toLocaleDateString();
  b.append(dot, el('span', 'name', convName(c)), el('span', 'time', day), preview);
  b.setAttribute('aria-label', `${convName(c)}, ${day}: ${preview.textContent}`);
  b.addEventListener('click', () => openAt(c.id, m.seq));
  const li = el('li');
  li.append(b);
  return li;
}

// Opens a chat at seq: older pages are loaded until it is held (history
// stays one run from the floor up, as the chat keeps it), then it is
// scrolled to and flashed.
async function openAt(conv, seq) {
  await openChat(conv);
  const c = S.convs.get(conv);
  if (!c || S.open !== conv) return;
  let pages = 0;
  while (!c.msgs.has(seq) && c.has_more && c.floor > 1 && pages++ < JUMP_PAGES_MAX) {
    try {
      const page = await api.history(c.id, c.floor, 200);
      takePage(c, page.messages);
      c.has_more = page.has_more && page.messages.length > 0;
      if (page.messages.length) c.floor = page.messages[0].seq;
      await learnNames(page.messages.map((m) => m.from));
    } catch (e) {
      if (S.me) toast(`Could not load that message: ${refusal(e)}`);
      return;
    }
    if (S.open !== conv) return;
  }
  if (!c.msgs.has(seq)) {
    toast('That message is too far back to open here.');
    return;
  }
  dirty.stick = false; // the open's pending "to the bottom" would undo the jump
  drawChat();
  const node = $('messages').querySelector(`.msg[data-seq="${seq}"]`);
  if (!node) return;
  scrollToChild($('messages'), node, 0.5);
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), 2000);
}

// ---- dialogs -------------------------------------------------------------

function dialogErrors(dialog, errEl, fn) {
  return async (ev) => {
    ev.preventDefault();
    errEl.textContent = '';
    try {
      await fn();
      dialog.close();
    } catch (e) {
      errEl.textContent = refusal(e);
    }
  };
}

async function userIdByName(name) {
  const n = name.trim().toLowerCase();
  if (!n) throw new Error('Enter a username.');
  try {
    const u = await api.findUser(n);
    S.names.set(u.user_id, u.username);
    return u.user_id;
  } catch (e) {
    if (e.status === 404) throw new Error(`There is no user called “${n}”.`);
    throw e;
  }
}

async function newChat() {
  const id = await userIdByName($('new-chat-username').value);
  if (id === S.me.user_id) throw new Error('That is you. Pick someone else.');
  const c = addConv(await api.openConversation([id]));
  c.activity = Math.max(c.activity, Date.now());
  watchPeers();
  openChat(c.id);
}

async function newGroup() {
  const title = $('new-group-name').value.trim();
  if (!title) throw new Error('Give the group a name.');
  const names = $('new-group-members').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length < 2) throw new Error('A group needs at least two other members.');
  const ids = [];
  for (const n of names) ids.push(await userIdByName(n));
  const c = addConv(await api.openConversation(ids, title));
  c.activity = Math.max(c.activity, Date.now());
  await learnNames(c.members);
  openChat(c.id);
}

async function renderInfo() {
  const c = S.convs.get(S.open);
  if (!c) return;
  const admin = c.admins.includes(S.me.user_id);
  $('info-title').textContent = c.title || 'Group info';
  $('add-member-form').hidden = !admin;
  $('info-members').replaceChildren(...c.members.map((id) => {
    const li = el('li');
    const who = el('span', '', nameOf(id));
    li.append(who);
    if (c.admins.includes(id)) li.append(el('span', 'admin', 'admin'));
    if (admin && id !== S.me.user_id) {
      const b = el('button', '', 'Remove');
      b.type = 'button';
      b.setAttribute('aria-label', `Remove ${nameOf(id)}`);
      b.addEventListener('click', async () => {
        try {
          await api.removeMember(c.id, id);
          await fetchConv(c.id);
          renderInfo();
        } catch (e) {
          $('info-error').textContent = refusal(e);
        }
      });
      li.append(b);
    }
    return li;
  }));
  // Read counts for our newest message: who has it, who has read it.
  const mine = [...c.msgs.values()].filter((m) => m.from === S.me.user_id).sort((a, b) => b.seq - a.seq)[0];
  const out = $('info-receipts');
  if (!mine) {
    out.replaceChildren(el('li', 'muted', 'You have not sent anything here yet.'));
    return;
  }
  try {
    const r = await api.receipts(c.id, mine.seq);
    if (!Array.isArray(r.receipts)) {
      out.replaceChildren(el('li', '', `Read by ${r.read}`));
      return;
    }
    const read = r.receipts.filter((x) => x.read_at).length;
    const items = [el('li', '', `“${mine.body.slice(0, 40)}”: read by ${read} of ${r.receipts.length}`)];
    for (const x of r.receipts) {
      const li = el('li');
      li.append(el('span', '', nameOf(x.user_id)),
        el('span', 'muted', x.read_at ? `read ${clock(x.read_at)}` : x.delivered_at ? `delivered ${clock(x.delivered_at)}` : 'not yet'));
      items.push(li);
    }
    out.replaceChildren(...items);
  } catch (e) {
    out.replaceChildren(el('li', 'error', refusal(e)));
  }
}

// ---- blocks ----------------------------------------------------------------

// A question before an action, with the action's refusal shown in it.
let confirmRun = null;
function confirmAction({ title, text, ok, run }) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  $('confirm-error').textContent = '';
  confirmRun = run;
  $('confirm-dialog').showModal();
  $('confirm-ok').focus();
}

function confirmBlock(userId) {
  const name = nameOf(userId);
  confirmAction({
    title: `Block ${name}?`,
    text: `${name} will no longer be able to message you, add you to groups or see when you are online. `
      + 'You can unblock them in Settings.',
    ok: 'Block',
    run: async () => {
      await api.block(userId);
      setBlocked(userId, true);
    },
  });
}

async function unblockUser(userId) {
  try {
    await api.unblock(userId);
  } catch (e) {
    if (e.status !== 404) throw e; // 404: not blocked, which is what was wanted
  }
  setBlocked(userId, false);
}

// Our side of a block changed: the direct chat with that user, if any,
// shows it, and so does the settings list if it is open.
function setBlocked(userId, on) {
  const c = directWith(userId);
  if (c) c.blocked = on;
  renderList();
  if (c && S.open === c.id) renderChat();
  if ($('settings-dialog').open) loadBlocked();
}

// ---- settings: privacy, blocked users, devices ------------------------------

async function openSettings() {
  for (const id of ['privacy-status', 'privacy-error', 'previews-status', 'blocked-error', 'devices-error'])
    $(id).textContent = '';
  $('block-username').value = '';
  showNotifyStatus(notify.status());
  $('settings-dialog').showModal();
  await Promise.all([loadPrivacy(), loadBlocked(), loadDevices()]);
}

function groupAddsRadios() {
  return [...document.querySelectorAll('#group-adds input[name="group-adds"]')];
}

async function loadPrivacy() {
  try {
    const s = await api.settings();
    for (const r of groupAddsRadios()) r.checked = r.value === s.group_adds;
    S.previews = s.push_previews !== false;
    $('push-previews').checked = S.previews;
  } catch (e) {
    $('privacy-error').textContent = refusal(e);
  }
}

async function savePrivacy(value) {
  $('privacy-status').textContent = '';
  $('privacy-error').textContent = '';
  try {
    const s = await api.saveSettings({ group_adds: value });
    for (const r of groupAddsRadios()) r.checked = r.value === s.group_adds;
    $('privacy-status').textContent = s.group_adds === 'contacts'
      ? 'Saved: only your contacts can add you to groups.' : 'Saved: everyone can add you to groups.';
  } catch (e) {
    $('privacy-error').textContent = refusal(e);
    loadPrivacy(); // show what the server holds
  }
}

async function savePreviews(on) {
  $('previews-status').textContent = '';
  $('notify-error').textContent = '';
  try {
    const s = await api.saveSettings({ push_previews: on });
    S.previews = s.push_previews !== false;
    $('push-previews').checked = S.previews;
    $('previews-status').textContent = S.previews
      ? 'Saved: notifications show who wrote and what.' : 'Saved: notifications say only “New message”.';
  } catch (e) {
    $('notify-error').textContent = refusal(e);
    loadPrivacy();
  }
}

async function loadBlocked() {
  const out = $('blocked-list');
  let list;
  try {
    list = await api.blocks();
  } catch (e) {
    $('blocked-error').textContent = refusal(e);
    return;
  }
  for (const b of list) if (b.username) S.names.set(b.user_id, b.username);
  // What the server holds is what the chats show, too.
  for (const c of S.convs.values())
    if (c.kind === 'direct') {
      const was = c.blocked;
      c.blocked = list.some((b) => b.user_id === peerOf(c));
      if (was !== c.blocked) {
        renderList();
        if (S.open === c.id) renderChat();
      }
    }
  if (!list.length) {
    out.replaceChildren(el('li', 'muted', 'Nobody is blocked.'));
    return;
  }
  out.replaceChildren(...list.map((b) => {
    const name = b.username || `user ${b.user_id}`;
    const li = el('li');
    const what = el('span', 'what', name);
    what.append(el('small', '', `blocked ${whenText(b.blocked_at)}`));
    const button = el('button', '', 'Unblock');
    button.type = 'button';
    button.setAttribute('aria-label', `Unblock ${name}`);
    button.addEventListener('click', async () => {
      $('blocked-error').textContent = '';
      try {
        await unblockUser(b.user_id);
      } catch (e) {
        $('blocked-error').textContent = refusal(e);
      }
    });
    li.append(what, button);
    return li;
  }));
}

async function blockByName() {
  $('blocked-error').textContent = '';
  try {
    const id = await userIdByName($('block-username').value);
    if (id === S.me.user_id) throw new Error('That is you.');
    await api.block(id);
    $('block-username').value = '';
    setBlocked(id, true);
  } catch (e) {
    $('blocked-error').textContent = refusal(e);
  }
}

async function loadDevices() {
  let list;
  try {
    list = await api.devices();
  } catch (e) {
    $('devices-error').textContent = refusal(e);
    return;
  }
  $('device-list').replaceChildren(...list.map((d) => {
    const li = el('li');
    li.dataset.device = d.device_id;
    const what = el('span', 'what', d.name);
    const used = d.current ? 'active now' : `last used ${whenText(d.last_used)}`;
    what.append(el('small', '', `${used} · logged in ${whenText(d.created_at)}`));
    li.append(what);
    if (d.current) {
      li.classList.add('current');
      li.append(el('span', 'this-device', 'This device'));
    } else {
      const b = el('button', 'danger', 'Log out');
      b.type = 'button';
      b.setAttribute('aria-label', `Log out ${d.name}, ${used}`);
      b.addEventListener('click', async () => {
        $('devices-error').textContent = '';
        try {
          await api.logoutDevice(d.device_id);
        } catch (e) {
          if (e.status !== 404) { // 404: gone already
            $('devices-error').textContent = refusal(e);
            return;
          }
        }
        loadDevices();
      });
      li.append(b);
    }
    return li;
  }));
}

function whenText(ts) {
  if (!ts) return 'never';
  if (Date.now() - ts < 60000) return 'just now';
  const d = new Date(ts);
  if (d.toDateString() === new Date().toDateString()) return `today at ${clock(ts)}`;
  return d.toLocaleDateString([], { day: 'numeric', month: 'short', year: 'numeric' });
}

// ---- sign in and out -------------------------------------------------------

async function authSubmit(signup) {
  const username = $('auth-username').value.trim().toLowerCase();
  const password = $('auth-password').value;
  $('auth-error').textContent = '';
  if (!/^[a-z0-9_.-]{3,32}$/.test(username)) {
    $('auth-error').textContent = 'Usernames are 3 to 32 characters: a–z, 0–9, “_”, “.” and “-”.';
    return;
  }
  if (password.length < 8) {
    $('auth-error').textContent = 'Passwords have at least 8 characters.';
    return;
  }
  try {
    if (signup) await api.register(username, password);
    const s = await api.login(username, password);
    S.me = { token: s.token, user_id: s.user_id, device_id: s.device_id, username };
    store.saveSession(S.me);
    $('auth-password').value = '';
    await startApp();
  } catch (e) {
    $('auth-error').textContent = e.status === 409 ? 'That username is taken. Try another, or log in.'
      : e.status === 401 ? 'Wrong username or password.' : refusal(e);
  }
}

function signedOut(message) {
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  $('search-input').value = '';
  showSearch(false);
  if (S.live) S.live.stop();
  if (S.me) notify.stop();
  if (S.me) store.clearSession(S.me.user_id);
  S.me = null;
  S.live = null;
  S.convs.clear();
  shown.conv = null;
  shown.nodes.clear();
  S.names.clear();
  S.presence.clear();
  for (const o of S.outbox) clearTimeout(o.timer);
  S.outbox = [];
  S.open = null;
  S.wantOpen = null;
  clearTimeout(S.redoTimer);
  S.learning.clear();
  S.pendingRead.clear();
  S.pendingDelivered.clear();
  clearTimeout(S.receiptTimer);
  S.receiptTimer = null;
  clearTimeout(S.typingStopTimer);
  S.typingConv = null;
  api.setToken(null);
  banner(null);
  document.title = 'Parley';
  $('app').hidden = true;
  $('auth').hidden = false;
  $('auth-error').textContent = message || '';
  $('auth-username').focus();
}

async function startApp() {
  api.setToken(S.me.token);
  S.seqs = store.loadSeqs(S.me.user_id);
  // A send the server refused stays failed; the rest go again.
  S.outbox = store.loadOutbox(S.me.user_id).map((o) => (o.refused && o.state === 'failed' ? { ...o }
    : { ...o, state: 'pending', error: undefined, refused: false }));
  let list;
  try {
    list = await api.conversations();
  } catch (e) {
    if (e.status === 401) {
      signedOut('Your session has ended. Please log in again.');
      return;
    }
    // Show what came; the resume's heads name every conversation, and
    // those missing here are fetched one by one then.
    list = e.partial || [];
    if (e.status === 0) banner('Offline — reconnecting…');
    else toast(`Could not load all your conversations: ${refusal(e)}`);
  }
  if (!S.me) return;
  for (const e of list) addConv(e);
  store.flushSeqs(S.me.user_id, S.seqs);
  await learnNames([...S.convs.values()].flatMap((c) => c.members));
  $('auth').hidden = true;
  $('app').hidden = false;
  $('me').textContent = S.me.username;
  closeChat();
  renderList();
  startLive();
  notify.start();
  // Whether notifications show text; until the answer, they do.
  api.settings().then((s) => { if (S.me) S.previews = s.push_previews !== false; }, () => {});
  if (S.wantOpen) {
    const conv = S.wantOpen;
    S.wantOpen = null;
    openFromOutside(conv);
  }
}

// ---- wiring ----------------------------------------------------------------

function wire() {
  api.setUnauthorizedHandler(() => {
    if (S.me) signedOut('Your session has ended. Please log in again.');
  });
  $('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    authSubmit(false);
  });
  $('signup-button').addEventListener('click', () => authSubmit(true));
  $('logout-button').addEventListener('click', async () => {
    try {
      await api.logout();
    } catch (e) {
      // Logged out here whatever the server says.
    }
    signedOut('');
  });
  $('back-button').addEventListener('click', closeChat);
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('composer-input');
    const body = input.value;
    const c = S.convs.get(S.open);
    if (!c || !body.trim()) return;
    if (new TextEncoder().encode(body).length > 16384) {
      toast('That message is too long (at most 16 KB).');
      return;
    }
    input.value = '';
    typingStop();
    if (S.editing && S.editing.conv === c.id) {
      const t = c.msgs.get(S.editing.seq);
      if (t && t.body !== body) sendEvent(c, { type: 'edit', seq: S.editing.seq, body });
      cancelContext();
      return;
    }
    const replyTo = S.replyTo && S.replyTo.conv === c.id ? S.replyTo.seq : undefined;
    S.replyTo = null;
    drawContext();
    send(c, body, replyTo);
  });
  $('compose-context-cancel').addEventListener('click', () => {
    cancelContext();
    $('composer-input').focus();
  });
  $('composer-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && (S.editing || S.replyTo)) {
      ev.preventDefault();
      cancelContext();
      return;
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('composer-input').addEventListener('input', typingInput);
  $('jump-button').addEventListener('click', () => {
    const box = $('messages');
    box.scrollTop = box.scrollHeight;
    showJump();
  });
  $('messages').addEventListener('scroll', showJump, { passive: true });
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 80) loadOlder();
  });
  $('new-chat-button').addEventListener('click', () => {
    $('new-chat-error').textContent = '';
    $('new-chat-username').value = '';
    $('new-chat-dialog').showModal();
  });
  $('new-group-button').addEventListener('click', () => {
    $('new-group-error').textContent = '';
    $('new-group-dialog').showModal();
  });
  $('new-chat-form').addEventListener('submit', dialogErrors($('new-chat-dialog'), $('new-chat-error'), newChat));
  $('new-group-form').addEventListener('submit', dialogErrors($('new-group-dialog'), $('new-group-error'), newGroup));
  $('info-button').addEventListener('click', () => {
    $('info-error').textContent = '';
    $('info-dialog').showModal();
    renderInfo();
  });
  $('add-member-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('info-error').textContent = '';
    try {
      const id = await userIdByName($('add-member-username').value);
      await api.addMember(S.open, id);
      $('add-member-username').value = '';
      await fetchConv(S.open);
      renderInfo();
      renderHead();
    } catch (e) {
      $('info-error').textContent = refusal(e);
    }
  });
  $('leave-button').addEventListener('click', async () => {
    const id = S.open;
    try {
      await api.removeMember(id, S.me.user_id);
      $('info-dialog').close();
      dropConv(id);
      renderList();
    } catch (e) {
      $('info-error').textContent = refusal(e);
    }
  });
  const blockOpen = () => {
    const c = S.convs.get(S.open);
    const peer = c && peerOf(c);
    if (peer === undefined) return;
    if (c.blocked) {
      unblockUser(peer).catch((e) => toast(refusal(e)));
    } else {
      confirmBlock(peer);
    }
  };
  $('block-button').addEventListener('click', blockOpen);
  $('stranger-block').addEventListener('click', blockOpen);
  $('unblock-button').addEventListener('click', blockOpen);
  $('stranger-reply').addEventListener('click', () => $('composer-input').focus());
  $('confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const run = confirmRun;
    if (!run) return;
    $('confirm-error').textContent = '';
    $('confirm-ok').disabled = true;
    try {
      await run();
      confirmRun = null;
      $('confirm-dialog').close();
    } catch (e) {
      $('confirm-error').textContent = refusal(e);
    }
    $('confirm-ok').disabled = false;
  });
  $('settings-button').addEventListener('click', openSettings);
  $('notify-button').addEventListener('click', enableNotifications);
  $('mute-button').addEventListener('click', toggleMute);
  $('search-input').addEventListener('input', searchInput);
  $('search-input').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    $('search-input').value = '';
    showSearch(false);
  });
  $('push-previews').addEventListener('change', (ev) => savePreviews(ev.target.checked));
  notify.onOpenRequest(openFromOutside);
  window.addEventListener('hashchange', takeHash);
  for (const r of groupAddsRadios()) r.addEventListener('change', () => { if (r.checked) savePrivacy(r.value); });
  $('block-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    blockByName();
  });
  for (const b of document.querySelectorAll('dialog .cancel'))
    b.addEventListener('click', () => b.closest('dialog').close());
  document.addEventListener('visibilitychange', () => {
    if (!S.live) return;
    const visible = document.visibilityState === 'visible';
    if (!visible) flushReceipts(); // the tab may not come back
    S.live.send({ type: 'presence', state: visible ? 'online' : 'away' });
    if (visible && S.open) {
      markRead(S.convs.get(S.open));
      renderList();
    }
  });
  window.addEventListener('offline', () => {
    // Do not wait for TCP to notice: say so now, and reconnect when back.
    if (S.live && S.live.ws) S.live.ws.close();
  });
  window.addEventListener('pagehide', () => {
    if (!S.me) return;
    flushReceipts();
    store.flushSeqs(S.me.user_id, S.seqs);
  });
}

wire();
takeHash();

const saved = store.loadSession();
if (saved && saved.token) {
  S.me = saved;
  startApp();
} else {
  $('auth').hidden = false;
  $('auth-username').focus();
}
