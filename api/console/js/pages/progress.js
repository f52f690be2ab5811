// One snapshot, live: the phase with bytes and a bar while it runs (from
// the `snapshotEvents` subscription), then the digest, the pull command
// and the timings; a failure with its code and sentence, and a retry. A
// pushed snapshot can be deleted (two clicks: the image leaves the
// registry, the snapshot stays in the lineage).

import { errorBox, h, show } from '../dom.js';
import { bytes, FINAL, millis, time } from '../format.js';
import { gql, subscribe } from '../graphql.js';
import { CANCEL_SNAPSHOT, DELETE_SNAPSHOT, SNAPSHOT, SNAPSHOT_EVENTS } from '../queries.js';

const PHASES = ['QUEUED', 'DIFFING', 'PUSHING', 'PUSHED'];
const PHASE_TEXT = {
  QUEUED: 'Waiting for the desktop’s node',
  DIFFING: 'Reading the desktop’s changes',
  PUSHING: 'Sending the image to the registry',
  PUSHED: 'In the registry',
  FAILED: 'It did not reach the registry',
  CANCELLED: 'Cancelled',
  DELETED: 'Deleted after it was pushed',
};

// What deleting did to the image, as `Snapshot.deletion.manifest` says.
const MANIFEST_TEXT = {
  DELETED: 'The image was deleted from the registry.',
  ABSENT: 'The registry no longer had the image.',
  KEPT_SHARED: 'The image stays in the registry: another snapshot is the same image.',
  KEPT_UNSUPPORTED: 'The image stays in the registry: it does not allow deletes.',
};

function steps(status) {
  const at = PHASES.indexOf(status);
  return h('ol', { class: 'steps' }, PHASES.map((phase, i) => h('li', {
    class: i < at || status === 'PUSHED' ? 'done' : i === at ? 'current' : '',
    'aria-current': i === at && status !== 'PUSHED' ? 'step' : undefined,
  }, PHASE_TEXT[phase])));
}

function bar(done, total) {
  const d = Number(done);
  const t = Number(total);
  if (!t) return h('p', { class: 'muted' }, d ? `${bytes(d)} so far` : '');
  const percent = Math.min(100, Math.round((d / t) * 100));
  return h('div', {},
    h('progress', { max: 100, value: percent, 'aria-label': 'Progress of this phase' }),
    h('span', { class: 'muted' }, ` ${bytes(d)} of ${bytes(t)} (${percent}%)`));
}

/** The pushed image's layers, as the agent reported them (null: unknown). */
function layers(s) {
  if (s.layerCount == null) return s.flattened ? 'flattened' : null;
  const above = s.layersAboveBase == null ? '' : `, ${s.layersAboveBase} above the lineage base`;
  return `${s.layerCount} in all${above}${s.flattened ? ' (flattened)' : ''}`;
}

function details(s) {
  const rows = [
    ['Image', s.target],
    ['Digest', s.manifestDigest],
    ['Built on', s.parent ? h('a', { href: `#/snapshots/${s.parent.id}` }, s.parent.target) : s.baseImage],
    ['Desktop', `${s.podNamespace ? `${s.podNamespace}/` : ''}${s.podName || s.containerId} on ${s.node}`],
    ['Requested by', s.requestedBy],
    ['Message', s.message],
    ['Compression', s.compression],
    ['Layer', s.layerSize ? `${bytes(s.layerSize)} compressed, ${bytes(s.uncompressedSize)} in files` : null],
    ['Layers', layers(s)],
    ['Took', s.durationMs ? `${millis(s.durationMs)}, of which the desktop was paused ${millis(s.pausedMs)} (read while running: ${millis(s.prepareMs)})` : null],
    ['Created', time(s.createdAt)],
    ['Finished', s.finishedAt ? time(s.finishedAt) : null],
  ];
  return h('dl', { class: 'details' }, rows.filter(([, v]) => v).map(([k, v]) => [h('dt', {}, k), h('dd', { class: k === 'Digest' || k === 'Image' ? 'mono' : '' }, v)]));
}

export async function render(main, [id]) {
  const live = h('section', { class: 'card', 'aria-live': 'polite', id: 'progress' });
  const info = h('section', { class: 'card' });
  const actions = h('div', { class: 'actions' });
  const title = h('h1', {}, 'Snapshot');
  show(main, title, live, actions, info);

  let snapshot = null;
  const draw = (status, done, total) => {
    const parts = [h('p', { class: `phase status-${status.toLowerCase()}`, id: 'status' }, h('strong', {}, status), ` · ${PHASE_TEXT[status]}`)];
    if (PHASES.includes(status)) parts.push(steps(status));
    if (!FINAL.includes(status)) parts.push(bar(done, total));
    if (status === 'PUSHED') {
      parts.push(h('p', {}, 'Pull it with:'), h('pre', { class: 'mono', id: 'pull' }, `docker pull ${snapshot.target.replace(/:[^:/]+$/, '')}@${snapshot.manifestDigest}`));
    }
    if (status === 'FAILED') {
      parts.push(errorBox({ code: snapshot.failureCode || 'FAILED', message: snapshot.failureReason || 'The snapshot failed.' }));
    }
    if (status === 'DELETED' && snapshot.deletion) {
      const d = snapshot.deletion;
      parts.push(h('p', { id: 'deletion' }, `Deleted by ${d.by}, ${time(d.at)}. ${MANIFEST_TEXT[d.manifest] || ''}`));
    }
    show(live, parts);
    show(actions,
      FINAL.includes(status) ? null : h('button', {
        type: 'button',
        onClick: async () => {
          try {
            await gql(CANCEL_SNAPSHOT, { id });
          } catch (error) {
            show(actions, errorBox(error));
          }
        },
      }, 'Cancel'),
      status === 'FAILED' || status === 'CANCELLED' ? h('button', {
        type: 'button',
        class: 'primary',
        id: 'retry',
        onClick: () => {
          sessionStorage.setItem('dcs.retry', JSON.stringify({
            containerId: snapshot.containerId,
            target: snapshot.target,
            message: snapshot.message,
            changes: snapshot.changes,
            excludes: snapshot.excludes,
            compression: snapshot.compression,
          }));
          location.hash = `#/snapshot/${encodeURIComponent(snapshot.node)}/${encodeURIComponent(snapshot.containerId)}`;
        },
      }, 'Retry') : null,
      status === 'PUSHED' ? deleteButton() : null,
      h('a', { class: 'button', href: `#/lineage/${id}` }, 'Lineage'));
  };

  // "Delete…" asks once more, naming what goes; the answer redraws the page.
  const deleteButton = () => h('button', {
    type: 'button',
    class: 'danger',
    id: 'delete',
    onClick: () => show(actions,
      h('span', {}, `Delete ${snapshot.target} from the registry? It stays in the lineage. `),
      h('button', {
        type: 'button',
        class: 'danger',
        id: 'delete-confirm',
        onClick: async () => {
          try {
            await gql(DELETE_SNAPSHOT, { id });
            await refresh();
          } catch (error) {
            show(actions, errorBox(error));
          }
        },
      }, 'Delete'),
      h('button', { type: 'button', onClick: () => draw(snapshot.status, 0, 0) }, 'Keep it')),
  }, 'Delete…');

  const refresh = async () => {
    snapshot = (await gql(SNAPSHOT, { id })).snapshot;
    show(title, `Snapshot ${snapshot.target.split('/').pop()}`);
    show(info, h('h2', {}, 'Details'), details(snapshot));
    draw(snapshot.status, snapshot.progress.bytesDone, snapshot.progress.bytesTotal);
  };
  await refresh();
  if (FINAL.includes(snapshot.status)) return undefined;

  let lastStatus = snapshot.status;
  const stop = subscribe(SNAPSHOT_EVENTS, { id }, async (data) => {
    const event = data.snapshotEvents;
    if (event.status !== lastStatus || FINAL.includes(event.status)) {
      lastStatus = event.status;
      // A new phase: the details (digest, timings) may have changed too.
      await refresh().catch(() => {});
    } else {
      draw(event.status, event.bytesDone, event.bytesTotal);
    }
  }, (error) => show(live, errorBox(error)));
  return stop;
}
