// A new snapshot of one desktop: the form, an optional preview (what would
// be pushed, and what the secret scan finds) and the mutation. The live
// progress is the snapshot page's (`progress.js`).

import { errorBox, field, h, show } from '../dom.js';
import { bytes, nextTag, tagOf } from '../format.js';
import { gql, serverFeatures } from '../graphql.js';
import { CONTAINER, CREATE_SNAPSHOT, PREVIEW_SNAPSHOT } from '../queries.js';

// A repository path component from a pod name: lowercase, [a-z0-9._-].
function component(text) {
  return (text || 'desktop').toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[._-]+|[._-]+$/g, '') || 'desktop';
}

function lines(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean);
}

async function findContainer(node, id) {
  let after = null;
  let me = null;
  do {
    const data = await gql(CONTAINER, { node, after });
    me = data.me;
    const found = data.containers.edges.map((e) => e.node).find((c) => c.id === id);
    if (found) return { me, container: found };
    after = data.containers.pageInfo.hasNextPage ? data.containers.pageInfo.endCursor : null;
  } while (after);
  return { me, container: null };
}

// The repository of a reference (`registry/path:tag` or `@digest`).
function repositoryOf(reference) {
  const bare = reference.split('@')[0];
  const tag = tagOf(bare);
  return bare.endsWith(`:${tag}`) ? bare.slice(0, bare.length - tag.length - 1) : bare;
}

// The target to suggest: the speaker's prefix and the pod's name, tagged
// after this desktop's last snapshot there, or after its own image when
// the desktop runs an earlier snapshot of that repository (v1 -> v2).
function suggestedTarget(me, container) {
  const name = component(container.podName || container.containerName || container.id.slice(0, 12));
  const repository = `${me.repositoryPrefixes[0] || 'registry.example/workshops'}/${name}`;
  const earlier = [container.lastSnapshot?.target, container.image]
    .find((reference) => reference && !reference.includes('@') && repositoryOf(reference) === repository);
  return `${repository}:${earlier ? nextTag(tagOf(earlier)) : 'v1'}`;
}

function previewView(preview, excludes, acknowledged) {
  const findings = preview.findings;
  const addExclude = (path) => {
    const current = lines(excludes.value);
    if (!current.includes(path)) excludes.value = [...current, path].join('\n');
    excludes.focus();
  };
  return h('section', { class: 'card', id: 'preview', 'aria-labelledby': 'preview-title' },
    h('h2', { id: 'preview-title' }, 'What this snapshot would hold'),
    h('p', {}, `${preview.files} files, ${preview.directories} directories, ${preview.links} links, ${preview.whiteouts} deletions: ${bytes(preview.totalBytes)}.`),
    preview.biggestFiles.length ? h('details', {}, h('summary', {}, 'Biggest files'),
      h('table', {}, h('tbody', {}, preview.biggestFiles.map((f) => h('tr', {}, h('td', { class: 'mono' }, f.path), h('td', {}, bytes(f.bytes))))))) : null,
    preview.excluded.length ? h('details', {}, h('summary', {}, 'Left out by the excludes'),
      h('table', {}, h('tbody', {}, preview.excluded.map((x) => h('tr', {}, h('td', { class: 'mono' }, x.pattern), h('td', {}, `${x.entries} entries, ${bytes(x.bytes)}`)))))) : null,
    findings.count === 0
      ? h('p', { class: 'ok' }, 'The secret scan found nothing.')
      : h('div', {},
        h('p', { class: findings.secretCount ? 'error' : 'notice', role: 'status' },
          `The secret scan found ${findings.secretCount} secret${findings.secretCount === 1 ? '' : 's'} and ${findings.warningCount} warning${findings.warningCount === 1 ? '' : 's'}${findings.truncated ? ' (more than are listed)' : ''}. A snapshot with secrets fails unless each is excluded or acknowledged.`),
        h('ul', { class: 'findings' }, findings.findings.map((f) => {
          const ack = f.severity === 'SECRET'
            ? h('input', { type: 'checkbox', 'data-rule': f.rule, 'data-path': f.path })
            : null;
          if (ack) acknowledged.push(ack);
          return h('li', {},
            h('span', { class: `severity severity-${f.severity.toLowerCase()}` }, f.severity),
            ' ', h('span', { class: 'mono' }, f.path), f.line ? `:${f.line}` : '', ` (${f.rule})`,
            ' ', h('button', { type: 'button', class: 'link', onClick: () => addExclude(f.suggestedExclude || f.path) }, 'Exclude'),
            ack ? h('label', { class: 'inline' }, ack, ' Push anyway') : null);
        }))));
}

export async function render(main, [node, id]) {
  const [{ me, container }, features] = await Promise.all([findContainer(node, id), serverFeatures()]);
  if (!container) {
    show(main, h('h1', {}, 'New snapshot'), errorBox({ code: 'NOT_FOUND', message: 'No such desktop, or not one of yours.' }));
    return undefined;
  }
  const retry = JSON.parse(sessionStorage.getItem('dcs.retry') || 'null');
  sessionStorage.removeItem('dcs.retry');
  const again = retry && retry.containerId === container.id ? retry : null;

  const target = h('input', { name: 'target', type: 'text', required: true, value: again?.target || suggestedTarget(me, container), autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  const message = h('textarea', { name: 'message', rows: 2 }, again?.message || '');
  const changes = h('textarea', { name: 'changes', rows: 3, class: 'mono', spellcheck: 'false' }, (again?.changes || []).join('\n'));
  const excludes = h('textarea', { name: 'excludes', rows: 3, class: 'mono', spellcheck: 'false' }, (again?.excludes || []).join('\n'));
  const compression = h('select', { name: 'compression' },
    h('option', { value: 'GZIP' }, 'gzip (every runtime reads it)'),
    h('option', { value: 'ZSTD' }, 'zstd (faster, smaller; containerd 1.5+)'));
  if (again?.compression) compression.value = again.compression.toUpperCase();
  const pause = h('input', { name: 'pause', type: 'checkbox', checked: true });
  const flatten = features.flatten ? h('input', { name: 'flatten', type: 'checkbox' }) : null;
  const previewArea = h('div', { 'aria-live': 'polite' });
  const result = h('div', { 'aria-live': 'polite' });
  let acknowledged = [];

  const selection = () => ({ containerId: container.id, node: container.node });
  const preview = async () => {
    show(previewArea, h('p', { class: 'muted' }, 'Reading the desktop’s changes…'));
    try {
      const data = await gql(PREVIEW_SNAPSHOT, { input: { ...selection(), excludes: lines(excludes.value) } });
      acknowledged = [];
      show(previewArea, previewView(data.previewSnapshot, excludes, acknowledged));
    } catch (error) {
      show(previewArea, errorBox(error));
    }
  };

  const submit = h('button', { type: 'submit', class: 'primary' }, 'Take snapshot');
  const form = h('form', {
    class: 'card',
    id: 'snapshot-form',
    onSubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      show(result);
      const input = {
        ...selection(),
        target: target.value.trim(),
        message: message.value.trim() || null,
        changes: lines(changes.value),
        excludes: lines(excludes.value),
        compression: compression.value,
        pause: pause.checked,
      };
      if (flatten?.checked) input.flatten = true;
      const acks = acknowledged.filter((a) => a.checked).map((a) => ({ rule: a.dataset.rule, path: a.dataset.path }));
      if (acks.length && features.acknowledge) input.acknowledgeFindings = acks;
      try {
        const data = await gql(CREATE_SNAPSHOT, { input });
        location.hash = `#/snapshots/${data.createSnapshot.id}`;
      } catch (error) {
        submit.disabled = false;
        show(result, errorBox(error));
      }
    },
  },
  field('Image to push', target, `registry/path:tag${me.repositoryPrefixes.length ? `, under ${me.repositoryPrefixes.join(' or ')}` : ''}`),
  field('Message', message, 'Kept in the image history.'),
  field('Config changes', changes, 'One per line, Dockerfile style: ENV K=V, WORKDIR /w, CMD ["app"], EXPOSE 8080.'),
  field('Leave out', excludes, 'One glob per line, e.g. /root/.cache/**. /tmp and /run are always left out.'),
  field('Compression', compression),
  h('div', { class: 'field' }, h('label', { class: 'inline' }, pause, ' Pause the desktop while its changes are read (a consistent image; the pause is short)')),
  flatten ? h('div', { class: 'field' }, h('label', { class: 'inline' }, flatten, ' Flatten: one layer on top of the base image')) : null,
  h('div', { class: 'actions' },
    submit,
    features.preview ? h('button', { type: 'button', onClick: preview }, 'Preview') : null,
    h('a', { href: '#/desktops', class: 'button' }, 'Back')),
  result);

  show(main,
    h('h1', {}, `Snapshot of ${container.podName || container.id.slice(0, 12)}`),
    h('p', { class: 'muted' }, `${container.image} on ${container.node}, ${container.state}`),
    form,
    previewArea);
  target.focus();
  return undefined;
}
