// My desktops: the containers the caller may snapshot, with the newest
// snapshot of each. Kept current by re-reading the list every few seconds
// (the inventory changes when agents report, seconds apart) and at once
// when one of the caller's snapshots changes status.

import { h, show } from '../dom.js';
import { ago, bytes, FINAL } from '../format.js';
import { gql, subscribe } from '../graphql.js';
import { DESKTOPS, QUOTA, SNAPSHOT_EVENTS } from '../queries.js';

const REFRESH_MS = 5000;

function statusBadge(status) {
  return h('span', { class: `status status-${status.toLowerCase()}` }, status);
}

function row(c) {
  const last = c.lastSnapshot;
  return h('tr', { 'data-container': c.id },
    h('td', {}, h('strong', {}, c.podName || c.id.slice(0, 12)),
      c.containerName ? h('div', { class: 'muted' }, c.containerName) : null),
    h('td', {}, c.podNamespace || '—'),
    h('td', {}, c.node),
    h('td', { class: 'mono' }, c.image),
    h('td', {}, c.state),
    h('td', {}, last
      ? [h('a', { href: `#/snapshots/${last.id}` }, last.target.split('/').pop()), ' ', statusBadge(last.status),
        h('div', { class: 'muted' }, ago(last.createdAt))]
      : h('span', { class: 'muted' }, 'none yet')),
    h('td', {}, h('a', {
      class: 'button primary',
      href: `#/snapshot/${encodeURIComponent(c.node)}/${encodeURIComponent(c.id)}`,
      'aria-label': `Snapshot ${c.podName || c.id}`,
    }, 'Snapshot…')));
}

// "1 of 3 in progress · 2 of 5 today · 1.2 KiB of 1.0 GiB kept", the
// limits the operator set (none for admins).
function quotaLine(quota) {
  const part = (use, text, format = String) => (use.limit === null ? null
    : `${format(use.used)} of ${format(use.limit)} ${text}`);
  const parts = [
    part(quota.inFlight, 'in progress'),
    part(quota.perDay, 'in the last 24 hours'),
    part(quota.bytes, 'kept in the registry', bytes),
  ].filter(Boolean);
  return parts.length ? `Your quota: ${parts.join(' · ')}` : '';
}

export async function render(main, _params, session) {
  const table = h('tbody');
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' });
  const quota = h('p', { class: 'muted', id: 'quota' });
  show(main,
    h('h1', {}, session.role === 'ADMIN' ? 'Desktops' : 'My desktops'),
    summary,
    quota,
    h('div', { class: 'scroll' }, h('table', { id: 'desktops' },
      h('thead', {}, h('tr', {}, ['Pod', 'Namespace', 'Node', 'Image', 'State', 'Last snapshot', ''].map((t) => h('th', { scope: 'col' }, t)))),
      table)));

  let busy = false;
  const load = async () => {
    if (busy) return;
    busy = true;
    try {
      const rows = [];
      let after = null;
      let total = 0;
      // Every page: a speaker has a few desktops, an admin maybe hundreds.
      do {
        const data = await gql(DESKTOPS, { after });
        total = data.containers.totalCount;
        rows.push(...data.containers.edges.map((e) => e.node));
        after = data.containers.pageInfo.hasNextPage ? data.containers.pageInfo.endCursor : null;
      } while (after && rows.length < 1000);
      show(table, rows.length
        ? rows.map(row)
        : h('tr', {}, h('td', { colspan: 7 }, 'No desktop of yours is running. Start one from your workshop, then come back.')));
      show(summary, `${total} desktop${total === 1 ? '' : 's'} · updated ${new Date().toLocaleTimeString()}`);
      show(quota, quotaLine((await gql(QUOTA)).me.quota));
    } catch (error) {
      show(summary, h('span', { class: 'error', role: 'alert' }, `${error.code}: ${error.message}`));
    } finally {
      busy = false;
    }
  };
  await load();
  const timer = setInterval(load, REFRESH_MS);
  const stop = subscribe(SNAPSHOT_EVENTS, {}, (data) => {
    const event = data.snapshotEvents;
    if (event.status === 'QUEUED' || FINAL.includes(event.status)) load();
  });
  return () => {
    clearInterval(timer);
    stop();
  };
}
