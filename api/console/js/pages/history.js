// My snapshots (all of them, for admins), newest first: filter by status
// and repository (and requester, for admins), a page at a time.

import { errorBox, field, h, show } from '../dom.js';
import { bytes, millis, time } from '../format.js';
import { gql } from '../graphql.js';
import { HISTORY } from '../queries.js';

const PAGE = 20;
const STATUSES = ['', 'QUEUED', 'DIFFING', 'PUSHING', 'PUSHED', 'FAILED', 'CANCELLED', 'DELETED'];

export async function render(main, _params, session) {
  const admin = session.role === 'ADMIN';
  const status = h('select', { name: 'status' }, STATUSES.map((v) => h('option', { value: v }, v || 'any')));
  const repository = h('input', { name: 'repository', type: 'text', placeholder: 'registry/path', class: 'mono', spellcheck: 'false' });
  const owner = admin ? h('input', { name: 'owner', type: 'text', placeholder: 'speaker' }) : null;
  const body = h('tbody');
  const pager = h('div', { class: 'actions' });
  const message = h('div', { 'aria-live': 'polite' });
  // Cursors of the pages before this one, for "Newer".
  let cursors = [null];

  const load = async () => {
    const filter = {};
    if (status.value) filter.status = status.value;
    if (repository.value.trim()) filter.repository = repository.value.trim();
    if (owner?.value.trim()) filter.owner = owner.value.trim();
    show(message);
    try {
      const data = await gql(HISTORY, { first: PAGE, after: cursors[cursors.length - 1], filter });
      const rows = data.snapshots.edges.map((e) => e.node);
      show(body, rows.length ? rows.map((s) => h('tr', {},
        h('td', {}, time(s.createdAt)),
        h('td', { class: 'mono' }, h('a', { href: `#/snapshots/${s.id}` }, s.target)),
        h('td', {}, h('span', { class: `status status-${s.status.toLowerCase()}` }, s.status), s.failureCode ? h('div', { class: 'muted' }, s.failureCode) : null),
        h('td', {}, bytes(s.layerSize)),
        h('td', {}, millis(s.durationMs)),
        admin ? h('td', {}, s.requestedBy) : null,
        h('td', {}, h('a', { href: `#/lineage/${s.id}` }, 'Lineage')))) : h('tr', {}, h('td', { colspan: 7 }, 'No snapshot matches.')));
      const next = data.snapshots.pageInfo;
      show(pager,
        h('button', { type: 'button', disabled: cursors.length === 1, onClick: () => { cursors.pop(); load(); } }, '← Newer'),
        h('span', { class: 'muted' }, `Page ${cursors.length}`),
        h('button', { type: 'button', disabled: !next.hasNextPage, onClick: () => { cursors.push(next.endCursor); load(); } }, 'Older →'));
    } catch (error) {
      show(message, errorBox(error));
    }
  };

  const filters = h('form', {
    class: 'filters',
    onSubmit: (event) => {
      event.preventDefault();
      cursors = [null];
      load();
    },
  }, field('Status', status), field('Repository', repository), owner ? field('Requested by', owner) : null,
  h('button', { type: 'submit' }, 'Filter'));
  status.addEventListener('change', () => { cursors = [null]; load(); });

  show(main,
    h('h1', {}, admin ? 'All snapshots' : 'My snapshots'),
    filters,
    message,
    h('div', { class: 'scroll' }, h('table', { id: 'history' },
      h('thead', {}, h('tr', {}, ['Created', 'Image', 'Status', 'Layer', 'Took', admin ? 'Requested by' : null, ''].filter((t) => t !== null).map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    pager);
  await load();
  return undefined;
}
