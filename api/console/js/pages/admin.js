// Admin pages: nodes and their health; webhook endpoints (create with the
// secret shown once, rotate, disable, send a test); deliveries with their
// attempts, and redelivery. The API refuses all of this to speakers; the
// console only hides the links.

import { errorBox, field, h, show } from '../dom.js';
import { ago, millis, time } from '../format.js';
import { gql } from '../graphql.js';
import {
  CREATE_ENDPOINT, DELIVERIES, NODES, REDELIVER, ROTATE_SECRET, SEND_TEST, UPDATE_ENDPOINT, WEBHOOK_ENDPOINTS,
} from '../queries.js';

const EVENT_TYPES = [['SNAPSHOT_PUSHED', 'snapshot.pushed'], ['SNAPSHOT_FAILED', 'snapshot.failed'], ['SNAPSHOT_DELETED', 'snapshot.deleted']];

export async function renderNodes(main) {
  const nodes = [];
  let after = null;
  do {
    const data = await gql(NODES, { after });
    nodes.push(...data.nodes.edges.map((e) => e.node));
    after = data.nodes.pageInfo.hasNextPage ? data.nodes.pageInfo.endCursor : null;
  } while (after);
  show(main,
    h('h1', {}, 'Nodes'),
    h('div', { class: 'scroll' }, h('table', { id: 'nodes' },
      h('thead', {}, h('tr', {}, ['Node', 'State', 'Last heard', 'Agent', 'containerd', 'Jobs at once', 'Registered'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, nodes.length ? nodes.map((n) => h('tr', {},
        h('td', {}, h('strong', {}, n.name)),
        h('td', {}, h('span', { class: `status status-${n.state === 'READY' ? 'pushed' : 'failed'}` }, n.state)),
        h('td', {}, ago(n.lastSeenAt)),
        h('td', {}, n.agentVersion),
        h('td', {}, n.containerdVersion),
        h('td', {}, n.maxConcurrentJobs),
        h('td', {}, time(n.registeredAt)))) : h('tr', {}, h('td', { colspan: 7 }, 'No agent has registered yet.'))))));
}

// A secret, shown once, with a sentence that says so.
function secretBox(secret, what) {
  return h('div', { class: 'notice', role: 'status', id: 'secret' },
    h('p', {}, `${what} Copy the signing secret now: it is not shown again.`),
    h('pre', { class: 'mono secret' }, secret));
}

export async function renderWebhooks(main) {
  const list = h('div');
  const notice = h('div', { 'aria-live': 'polite' });

  const act = async (work, after) => {
    show(notice);
    try {
      const result = await work();
      if (after) after(result);
      await load();
    } catch (error) {
      show(notice, errorBox(error));
    }
  };

  const load = async () => {
    const endpoints = (await gql(WEBHOOK_ENDPOINTS)).webhookEndpoints;
    show(list, endpoints.length ? h('div', { class: 'scroll' }, h('table', { id: 'endpoints' },
      h('thead', {}, h('tr', {}, ['URL', 'Events', 'State', 'Created', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, endpoints.map((e) => h('tr', {},
        h('td', {}, h('span', { class: 'mono' }, e.url), e.description ? h('div', { class: 'muted' }, e.description) : null),
        h('td', {}, e.eventTypes.join(', ')),
        h('td', {}, e.enabled ? 'enabled' : `disabled${e.disabledReason ? `: ${e.disabledReason}` : ''}`,
          e.failingSince ? h('div', { class: 'error-text' }, `failing since ${time(e.failingSince)}`) : null),
        h('td', {}, `${time(e.createdAt)} by ${e.createdBy}`),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', onClick: () => act(() => gql(SEND_TEST, { id: e.id }), () => show(notice, h('p', { class: 'ok', role: 'status' }, 'Test event queued: see Deliveries.'))) }, 'Send test'),
          h('button', { type: 'button', onClick: () => act(() => gql(ROTATE_SECRET, { id: e.id }), (r) => show(notice, secretBox(r.rotateWebhookSecret.secret, 'Rotated: the old secret also signs for a while.'))) }, 'Rotate secret'),
          h('button', { type: 'button', onClick: () => act(() => gql(UPDATE_ENDPOINT, { id: e.id, input: { enabled: !e.enabled } })) }, e.enabled ? 'Disable' : 'Enable'),
          h('a', { class: 'button', href: `#/admin/deliveries?endpoint=${e.id}` }, 'Deliveries')))))))) : h('p', { class: 'muted' }, 'No endpoint yet.'));
  };

  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://events.example/hooks/dcs', class: 'mono' });
  const description = h('input', { name: 'description', type: 'text', maxlength: 500 });
  const boxes = EVENT_TYPES.map(([value, text]) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value, checked: true }), ` ${text}`));
  const create = h('form', {
    class: 'card',
    id: 'create-endpoint',
    onSubmit: (event) => {
      event.preventDefault();
      const eventTypes = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      act(
        () => gql(CREATE_ENDPOINT, { input: { url: url.value.trim(), eventTypes, description: description.value.trim() || null } }),
        (r) => {
          show(notice, secretBox(r.createWebhookEndpoint.secret, 'Endpoint created.'));
          url.value = '';
          description.value = '';
        },
      );
    },
  },
  h('h2', {}, 'New endpoint'),
  field('URL', url, 'HTTPS in production; private addresses are refused unless the server allows them.'),
  field('Description', description),
  h('fieldset', {}, h('legend', {}, 'Events'), boxes),
  h('button', { type: 'submit', class: 'primary' }, 'Create endpoint'));

  show(main, h('h1', {}, 'Webhooks'), notice, list, create);
  await load();
}

export async function renderDeliveries(main) {
  // `#/admin/deliveries?endpoint=<id>` narrows to one endpoint.
  const endpoint = new URLSearchParams(location.hash.split('?')[1] || '').get('endpoint');
  const body = h('div');
  const notice = h('div', { 'aria-live': 'polite' });
  let cursors = [null];
  const load = async () => {
    const data = await gql(DELIVERIES, { endpoint, after: cursors[cursors.length - 1] });
    const rows = data.webhookDeliveries.edges.map((e) => e.node);
    const page = data.webhookDeliveries.pageInfo;
    show(body,
      rows.length ? h('div', { class: 'scroll' }, h('table', { id: 'deliveries' },
        h('thead', {}, h('tr', {}, ['Created', 'Event', 'Status', 'Attempts', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.map((d) => h('tr', {},
          h('td', {}, time(d.createdAt)),
          h('td', {}, d.eventType),
          h('td', {}, h('span', { class: `status status-${d.status === 'SUCCEEDED' ? 'pushed' : d.status === 'FAILED' ? 'failed' : 'queued'}` }, d.status),
            d.nextAttemptAt && d.status === 'PENDING' ? h('div', { class: 'muted' }, `next try ${time(d.nextAttemptAt)}`) : null),
          h('td', {}, h('details', {}, h('summary', {}, `${d.attemptCount}${d.lastStatusCode ? `, last ${d.lastStatusCode}` : ''}`),
            h('ol', {}, d.attempts.map((a) => h('li', {}, `${time(a.at)}: ${a.statusCode ?? a.error ?? 'no answer'} in ${millis(a.latencyMs)}`))))),
          h('td', {}, h('button', {
            type: 'button',
            onClick: async () => {
              try {
                await gql(REDELIVER, { id: d.id });
                show(notice, h('p', { class: 'ok', role: 'status' }, 'Queued again.'));
                await load();
              } catch (error) {
                show(notice, errorBox(error));
              }
            },
          }, 'Redeliver'))))))) : h('p', { class: 'muted' }, 'No delivery yet.'),
      h('div', { class: 'actions' },
        h('button', { type: 'button', disabled: cursors.length === 1, onClick: () => { cursors.pop(); load(); } }, '← Newer'),
        h('button', { type: 'button', disabled: !page.hasNextPage, onClick: () => { cursors.push(page.endCursor); load(); } }, 'Older →')));
  };
  show(main, h('h1', {}, endpoint ? 'Deliveries of one endpoint' : 'Deliveries'), notice, body);
  await load();
}
