// api.js - the REST half of the protocol: JSON in, JSON out, the
// protocol's error body turned into an ApiError the screens can show.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let token = null;

export function setToken(t) {
  token = t;
}

export async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
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
    throw new ApiError(res.status, err.code || 'internal', err.message || `HTTP ${res.status}`);
  }
  return json;
}

export const register = (username, password) => api('POST', '/api/v1/users', { username, password });

export const login = (username, password) =>
  api('POST', '/api/v1/sessions', { username, password, device_name: browserName() });

export const logout = () => api('DELETE', '/api/v1/sessions/current');

export const findUser = (username) =>
  api('GET', `/api/v1/users?username=${encodeURIComponent(username)}`);

export const conversations = () => api('GET', '/api/v1/conversations');

export const conversation = (id) => api('GET', `/api/v1/conversations/${id}`);

export const openConversation = (members, title) =>
  api('POST', '/api/v1/conversations', title === undefined ? { members } : { members, title });

export function history(conv, before, limit = 50) {
  const q = before ? `before=${before}&limit=${limit}` : `limit=${limit}`;
  return api('GET', `/api/v1/conversations/${conv}/messages?${q}`);
}

export const receipts = (conv, seq) => api('GET', `/api/v1/conversations/${conv}/messages/${seq}/receipts`);

export const addMember = (conv, userId) => api('POST', `/api/v1/conversations/${conv}/members`, { user_id: userId });

export const removeMember = (conv, userId) => api('DELETE', `/api/v1/conversations/${conv}/members/${userId}`);

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

function browserName() {
  const ua = navigator.userAgent;
  const name = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  return `${name} (web)`;
}
