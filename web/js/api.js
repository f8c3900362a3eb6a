// api.js - the REST half of the protocol: JSON in, JSON out, the
// protocol's error body turned into an ApiError the screens can show.
//
// The token travels only in the Authorization header, never in a URL:
// the WebSocket is opened with a single-use ticket (wsTicket) instead.

export class ApiError extends Error {
  // retryAfterMs: for rate_limited, when the server says to try again.
  constructor(status, code, message, retryAfterMs) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

let token = null;
let onUnauthorized = null;

export function setToken(t) {
  token = t;
}

// fn() is called when a request made with the token gets 401: the device
// was logged out (here, elsewhere, or for being idle too long).
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function api(method, path, body) {
  const headers = {};
  const sentToken = token;
  if (sentToken) headers.Authorization = `Bearer ${sentToken}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.');
  }
  if (res.status === 204) return null;
  let json = null;
  try {
    json = await res.json();
  } catch (e) {
    json = null;
  }
  if (!res.ok) {
    const err = (json && json.error) || {};
    let retry = typeof err.retry_after_ms === 'number' ? err.retry_after_ms : undefined;
    const header = Number(res.headers.get('Retry-After'));
    if (retry === undefined && header > 0) retry = header * 1000;
    const e = new ApiError(res.status, err.code || 'internal', err.message || `HTTP ${res.status}`, retry);
    // Only a token that is still the current one ends the session: an
    // answer to a request of a session already left must not end the next.
    if (res.status === 401 && sentToken && sentToken === token && onUnauthorized) onUnauthorized(e);
    throw e;
  }
  return json;
}

// Every page of a paged list: path?cursor=…, items under key, merged in
// order. A cursor seen twice ends it (a server bug must not loop us).
// A refusal after the first page carries what came before it as
// e.partial, so that a screen can show that much.
async function allPages(path, key) {
  const out = [];
  const seen = new Set();
  let cursor = null;
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    let page;
    try {
      page = await api('GET', cursor === null ? path : `${path}${sep}cursor=${encodeURIComponent(cursor)}`);
    } catch (e) {
      if (out.length) e.partial = out;
      throw e;
    }
    out.push(...(page[key] || []));
    cursor = page.next_cursor ?? null;
    if (cursor === null || seen.has(String(cursor))) return out;
    seen.add(String(cursor));
  }
}

export const register = (username, password) => api('POST', '/api/v1/users', { username, password });

export const login = (username, password) =>
  api('POST', '/api/v1/sessions', { username, password, device_name: deviceName() });

export const logout = () => api('DELETE', '/api/v1/sessions/current');

export const findUser = (username) =>
  api('GET', `/api/v1/users?username=${encodeURIComponent(username)}`);

// The whole conversation list, every page of it.
export const conversations = () => allPages('/api/v1/conversations?limit=100', 'conversations');

export const conversation = (id) => api('GET', `/api/v1/conversations/${id}`);

export const openConversation = (members, title) =>
  api('POST', '/api/v1/conversations', title === undefined ? { members } : { members, title });

export function history(conv, before, limit = 50) {
  const q = before ? `before=${before}&limit=${limit}` : `limit=${limit}`;
  return api('GET', `/api/v1/conversations/${conv}/messages?${q}`);
}

// Messages the user may read with every word of q (the last also as a
// prefix), ranked; snippets are parts, {text, match?}.
export const search = (q, limit = 20) => api('GET', `/api/v1/search?q=${encodeURIComponent(q)}&limit=${limit}`);

export const receipts = (conv, seq) => api('GET', `/api/v1/conversations/${conv}/messages/${seq}/receipts`);

export const addMember = (conv, userId) => api('POST', `/api/v1/conversations/${conv}/members`, { user_id: userId });

export const removeMember = (conv, userId) => api('DELETE', `/api/v1/conversations/${conv}/members/${userId}`);

// A single-use ticket that opens one WebSocket within 30 s.
export const wsTicket = () => api('POST', '/api/v1/ws-tickets');

export const settings = () => api('GET', '/api/v1/settings');

// Muted: this user's devices are not woken for the conversation.
export const setMuted = (conv, muted) => api('PATCH', `/api/v1/conversations/${conv}`, { muted });

export const saveSettings = (s) => api('PATCH', '/api/v1/settings', s);

export const blocks = () => allPages('/api/v1/blocks?limit=100', 'blocks');

export const block = (userId) => api('POST', '/api/v1/blocks', { user_id: userId });

export const unblock = (userId) => api('DELETE', `/api/v1/blocks/${userId}`);

export const devices = () => allPages('/api/v1/devices', 'devices');

// The server's VAPID public key (base64url), for PushManager.subscribe.
export const vapidKey = async () => (await api('GET', '/api/v1/push-targets/vapid')).public_key;

// This device's Web Push target: subscription is PushSubscription.toJSON().
export const addPushTarget = (subscription) =>
  api('POST', '/api/v1/push-targets', { platform: 'webpush', subscription });

export const logoutDevice = (id) => api('DELETE', `/api/v1/devices/${id}`);

// Names of up to 256 users by id (users who share a conversation with us).
export async function usersById(ids) {
  const out = [];
  for (let i = 0; i < ids.length; i += 256) {
    const part = ids.slice(i, i + 256);
    const res = await api('GET', `/api/v1/users?ids=${part.join(',')}`);
    out.push(...res.users);
  }
  return out;
}

// What the devices list shows for this login: browser and system.
function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const system = /Android/.test(ua) ? 'Android' : /iPhone|iPad|iPod/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS'
    : /Windows/.test(ua) ? 'Windows' : /CrOS/.test(ua) ? 'ChromeOS' : /Linux/.test(ua) ? 'Linux' : '';
  return system ? `${browser} on ${system} (web)` : `${browser} (web)`;
}
