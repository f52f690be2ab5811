// The signed-in token, kept for this browser tab only (sessionStorage):
// closing the tab signs out, and nothing is written to disk by us.

const KEY = 'dcs.session';
const NOTICE = 'dcs.notice';

// The token's claims, for display and expiry only: the API checks the
// signature on every request, so nothing here is trusted for access.
export function claims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    const value = JSON.parse(json);
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

// The session, or null when there is none or its token has expired (then
// the sign-in page explains why).
export function currentSession() {
  let session;
  try {
    session = JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    session = null;
  }
  if (!session || typeof session.token !== 'string') return null;
  if (session.exp && session.exp * 1000 <= Date.now()) {
    endSession('Your session has expired. Sign in again with a new token.');
    return null;
  }
  return session;
}

// Keeps a token the API accepted, with who it says the caller is.
export function startSession(token, me) {
  const exp = claims(token)?.exp;
  const session = { token, sub: me.sub, role: me.role, exp: typeof exp === 'number' ? exp : null };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  sessionStorage.removeItem(NOTICE);
  return session;
}

// Forgets the token; `why` is shown on the sign-in page.
export function endSession(why) {
  sessionStorage.removeItem(KEY);
  if (why) sessionStorage.setItem(NOTICE, why);
}

// Why the last session ended; shown on the sign-in page until the next
// sign-in.
export function endNotice() {
  return sessionStorage.getItem(NOTICE);
}
