// The console's shell: sign-in from a link, the header, and a router over
// the URL fragment (`#/desktops`, `#/snapshots/<id>`, ...). Each page is a
// module whose `render(main, params, session)` draws it and may return a
// function that stops its subscriptions and timers.

import { h, show } from './dom.js';
import { gql } from './graphql.js';
import { ME } from './queries.js';
import { currentSession, endSession, startSession } from './session.js';
import * as signin from './pages/signin.js';
import * as desktops from './pages/desktops.js';
import * as snapshot from './pages/snapshot.js';
import * as progress from './pages/progress.js';
import * as lineage from './pages/lineage.js';
import * as historyPage from './pages/history.js';
import * as admin from './pages/admin.js';

// Pattern, page, title, and whether only admins may open it.
const ROUTES = [
  [/^#\/signin$/, signin.render, 'Sign in', false],
  [/^#\/desktops$/, desktops.render, 'My desktops', false],
  [/^#\/snapshot\/([^/]+)\/([^/]+)$/, snapshot.render, 'New snapshot', false],
  [/^#\/snapshots\/([0-9a-f-]{36})$/, progress.render, 'Snapshot', false],
  [/^#\/lineage\/([0-9a-f-]{36})$/, lineage.render, 'Lineage', false],
  [/^#\/history$/, historyPage.render, 'History', false],
  [/^#\/admin\/nodes$/, admin.renderNodes, 'Nodes', true],
  [/^#\/admin\/webhooks$/, admin.renderWebhooks, 'Webhooks', true],
  [/^#\/admin\/deliveries(?:\?.*)?$/, admin.renderDeliveries, 'Deliveries', true],
];

const main = document.getElementById('main');
let stopPage = null;

// A link of the form `/console/#token=<jwt>` signs in and is then removed
// from the address bar and the tab's history (the token was never in the
// query string, so it reached no server log).
async function signInFromLink() {
  const match = /^#token=([A-Za-z0-9._-]+)$/.exec(location.hash);
  if (!match) return;
  window.history.replaceState(null, '', `${location.pathname}#/desktops`);
  try {
    const data = await gql(ME, {}, match[1]);
    startSession(match[1], data.me);
  } catch (error) {
    endSession(`The sign-in link was refused: ${error.message}`);
  }
}

function header(session) {
  const links = [
    ['#/desktops', 'My desktops'],
    ['#/history', session?.role === 'ADMIN' ? 'All snapshots' : 'History'],
  ];
  if (session?.role === 'ADMIN') {
    links.push(['#/admin/nodes', 'Nodes'], ['#/admin/webhooks', 'Webhooks'], ['#/admin/deliveries', 'Deliveries']);
  }
  const here = location.hash;
  const isCurrent = (href) => here === href || here.startsWith(`${href}/`) || here.startsWith(`${href}?`);
  show(document.getElementById('nav'), session
    ? links.map(([href, text]) => h('a', { href, 'aria-current': isCurrent(href) ? 'page' : undefined }, text))
    : []);
  show(document.getElementById('who'), session
    ? [
      h('span', { id: 'signed-in-as' }, `Signed in as ${session.sub} (${session.role.toLowerCase()})`),
      h('a', { href: '/graphql', class: 'quiet' }, 'GraphiQL'),
      h('button', {
        type: 'button',
        class: 'link',
        onClick: () => {
          endSession('You signed out.');
          location.hash = '#/signin';
        },
      }, 'Sign out'),
    ]
    : []);
}

async function route() {
  if (stopPage) {
    stopPage();
    stopPage = null;
  }
  await signInFromLink();
  const session = currentSession();
  let hash = location.hash || '#/desktops';
  if (!session && hash !== '#/signin') {
    sessionStorage.setItem('dcs.after-signin', hash);
    hash = '#/signin';
    window.history.replaceState(null, '', `${location.pathname}${hash}`);
  }
  header(session);
  const found = ROUTES.map(([pattern, render, title, adminOnly]) => ({ match: pattern.exec(hash), render, title, adminOnly }))
    .find((r) => r.match);
  if (!found) {
    location.hash = '#/desktops';
    return;
  }
  document.title = `${found.title} · Desktop snapshots`;
  if (found.adminOnly && session?.role !== 'ADMIN') {
    show(main, h('h1', {}, found.title), h('p', { class: 'error', role: 'alert' }, 'This page is for admins.'));
    return;
  }
  show(main, h('p', { class: 'muted' }, 'Loading…'));
  main.focus({ preventScroll: true });
  try {
    const stop = await found.render(main, found.match.slice(1).map(decodeURIComponent), session);
    if (typeof stop === 'function') stopPage = stop;
  } catch (error) {
    show(main, h('h1', {}, found.title), h('div', { class: 'error', role: 'alert' },
      h('strong', {}, `${error.code || 'ERROR'}: `), error.message));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('dcs:signed-out', () => {
  location.hash = '#/signin';
});
route();
