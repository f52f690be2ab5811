// The console's only way to the server: the public GraphQL API, over POST
// for queries and mutations and `graphql-transport-ws` for subscriptions.

import { FEATURES } from './queries.js';
import { currentSession, endSession } from './session.js';

// An error the API answered, with its stable code (`FORBIDDEN`, ...).
export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code || 'INTERNAL';
  }
}

const EXPIRED = 'Your token was refused or has expired. Sign in again.';

// Sends the session to the sign-in page when the API no longer accepts it.
function signedOut() {
  endSession(EXPIRED);
  window.dispatchEvent(new CustomEvent('dcs:signed-out'));
}

// Runs a query or mutation; resolves with `data`, rejects with an ApiError.
export async function gql(query, variables = {}, token = currentSession()?.token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError('The API cannot be reached. Check your connection and try again.', 'UNAVAILABLE');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`The API answered ${response.status} without a JSON body.`, 'INTERNAL');
  }
  const error = body.errors?.[0];
  if (error) {
    const code = error.extensions?.code || 'INTERNAL';
    if (code === 'UNAUTHENTICATED' && token) signedOut();
    throw new ApiError(error.message, code);
  }
  return body.data;
}

const CLOSE_UNAUTHORIZED = 4401;
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

// Subscribes over a WebSocket; `onData` gets each result's `data`,
// `onError` an ApiError. Reconnects after a dropped connection (the
// subscription starts again with the current state). Returns a function
// that ends it.
export function subscribe(query, variables, onData, onError = () => {}) {
  let socket = null;
  let stopped = false;
  let failures = 0;
  let timer = null;

  const open = () => {
    const session = currentSession();
    if (!session || stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(`${scheme}//${location.host}/graphql`, 'graphql-transport-ws');
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${session.token}` } }));
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (message.type) {
        case 'connection_ack':
          failures = 0;
          socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
          break;
        case 'next':
          if (message.payload?.errors?.length) {
            const e = message.payload.errors[0];
            onError(new ApiError(e.message, e.extensions?.code));
          } else if (message.payload?.data) {
            onData(message.payload.data);
          }
          break;
        case 'error': {
          const e = Array.isArray(message.payload) ? message.payload[0] : message.payload;
          onError(new ApiError(e?.message || 'the subscription was refused', e?.extensions?.code));
          stopped = true;
          socket.close();
          break;
        }
        case 'ping':
          socket.send(JSON.stringify({ type: 'pong' }));
          break;
        default:
          break;
      }
    };
    socket.onclose = (event) => {
      if (stopped) return;
      if (event.code === CLOSE_UNAUTHORIZED) {
        signedOut();
        return;
      }
      const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
      failures += 1;
      timer = setTimeout(open, wait);
    };
  };

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  };
}

// What the API offers beyond the basics (fields added by later versions):
// the console shows a feature only when the server has it.
let features = null;
export async function serverFeatures() {
  if (!features) {
    features = gql(FEATURES).then((data) => ({
      preview: (data.query?.fields || []).some((f) => f.name === 'previewSnapshot'),
      flatten: (data.create?.inputFields || []).some((f) => f.name === 'flatten'),
      acknowledge: (data.create?.inputFields || []).some((f) => f.name === 'acknowledgeFindings'),
    })).catch((e) => {
      features = null;
      throw e;
    });
  }
  return features;
}
