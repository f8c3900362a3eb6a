// store.js - what the client keeps in the browser between visits: the
// session, the highest seq held without a gap in each conversation (the
// resume cursor), and sends not yet acknowledged (retried with the same
// cmid, so the server stores each once).

const SESSION = 'parley.session';

function read(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch (e) {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch (e) {
    // Storage full or disabled: the client still works, it only resumes
    // from the conversation list's heads next time.
  }
}

export const loadSession = () => read(SESSION, null);
export const saveSession = (s) => write(SESSION, s);

export function clearSession(userId) {
  try {
    localStorage.removeItem(SESSION);
    if (userId) {
      localStorage.removeItem(`parley.${userId}.seqs`);
      localStorage.removeItem(`parley.${userId}.outbox`);
    }
  } catch (e) {
    // nothing to do
  }
}

export const loadSeqs = (userId) => read(`parley.${userId}.seqs`, {});
export const loadOutbox = (userId) => read(`parley.${userId}.outbox`, []);

// Cursors change with every message: written at most every 500 ms.
let seqTimer = null;
export function saveSeqs(userId, seqs) {
  if (seqTimer) return;
  seqTimer = setTimeout(() => {
    seqTimer = null;
    write(`parley.${userId}.seqs`, seqs);
  }, 500);
}

export function flushSeqs(userId, seqs) {
  clearTimeout(seqTimer);
  seqTimer = null;
  write(`parley.${userId}.seqs`, seqs);
}

// A send the server refused for good (refused: true, with its error) stays
// failed across visits; any other is sent again with its cmid.
export function saveOutbox(userId, outbox) {
  write(`parley.${userId}.outbox`, outbox.map(({ cmid, conv, body, at, state, error, refused }) =>
    ({ cmid, conv, body, at, state, error, refused })));
}
