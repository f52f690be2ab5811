// A snapshot's family as a tree (SVG): the base image at the root, each
// snapshot a node (tag, time, size, status) to the right of the snapshot
// it was built on. Click a node for its details; collapse a branch with
// its +/− knob. Large families scroll, and open only on the path to the
// snapshot asked for.

import { h, s, show } from '../dom.js';
import { ago, bytes, tagOf, time } from '../format.js';
import { gql } from '../graphql.js';
import { FAMILY, FAMILY_LIMIT, FAMILY_ROOT } from '../queries.js';

const BOX_W = 190;
const BOX_H = 54;
const GAP_X = 46;
const ROW_H = 68;
const PAD = 16;
const OPEN_LIMIT = 150;

// The tree: `{ snapshot, children }` from the root snapshot down.
function buildTree(root, descendants) {
  const nodes = new Map([[root.id, { snapshot: root, children: [] }]]);
  for (const d of descendants) nodes.set(d.id, { snapshot: d, children: [] });
  for (const d of descendants) {
    // A parent the caller may not see: hang the snapshot under the root.
    const parent = nodes.get(d.parent?.id) || nodes.get(root.id);
    parent.children.push(nodes.get(d.id));
  }
  for (const node of nodes.values()) node.children.sort((a, b) => a.snapshot.createdAt.localeCompare(b.snapshot.createdAt));
  return { tree: nodes.get(root.id), count: nodes.size };
}

// Ids on the way from the root to `id`.
function pathTo(node, id, path = []) {
  if (node.snapshot.id === id) return [...path, id];
  for (const child of node.children) {
    const found = pathTo(child, id, [...path, node.snapshot.id]);
    if (found) return found;
  }
  return null;
}

// Positions: depth gives x, leaves take rows in order, a parent sits
// level with its first child.
function layout(tree, collapsed) {
  const placed = [];
  let row = 0;
  const place = (node, depth) => {
    const open = !collapsed.has(node.snapshot.id) ? node.children : [];
    let y;
    if (open.length === 0) {
      y = row;
      row += 1;
    } else {
      const ys = open.map((child) => place(child, depth + 1));
      y = ys[0];
    }
    placed.push({ node, depth, y });
    return y;
  };
  place(tree, 1);
  return { placed, rows: row };
}

export async function render(main, [id]) {
  const ancestors = (await gql(FAMILY_ROOT, { id })).snapshot.ancestors;
  const rootId = ancestors.length ? ancestors[ancestors.length - 1].id : id;
  const root = (await gql(FAMILY, { id: rootId })).snapshot;
  const { tree, count } = buildTree(root, root.descendants);
  const onPath = new Set(pathTo(tree, id) || []);
  const collapsed = new Set();
  if (count > OPEN_LIMIT) {
    const walk = (node) => {
      if (node.children.length && !onPath.has(node.snapshot.id)) collapsed.add(node.snapshot.id);
      node.children.forEach(walk);
    };
    walk(tree);
  }

  const picture = h('div', { class: 'tree-scroll', id: 'lineage' });
  const panel = h('section', { class: 'card', 'aria-live': 'polite', id: 'lineage-details' });
  let selected = id;

  const select = (snapshot) => {
    selected = snapshot.id;
    show(panel,
      h('h2', {}, tagOf(snapshot.target)),
      h('dl', { class: 'details' },
        h('dt', {}, 'Image'), h('dd', { class: 'mono' }, snapshot.target),
        h('dt', {}, 'Status'), h('dd', {}, snapshot.status, snapshot.failureCode ? ` (${snapshot.failureCode})` : ''),
        h('dt', {}, 'Created'), h('dd', {}, time(snapshot.createdAt)),
        h('dt', {}, 'Layer'), h('dd', {}, bytes(snapshot.layerSize))),
      h('a', { class: 'button', href: `#/snapshots/${snapshot.id}` }, 'Open'));
    draw();
  };

  const draw = () => {
    const { placed, rows } = layout(tree, collapsed);
    const depth = Math.max(...placed.map((p) => p.depth));
    const width = PAD * 2 + (depth + 1) * (BOX_W + GAP_X);
    const height = PAD * 2 + Math.max(rows, 1) * ROW_H;
    const x = (d) => PAD + d * (BOX_W + GAP_X);
    const y = (r) => PAD + r * ROW_H;
    const at = new Map(placed.map((p) => [p.node.snapshot.id, p]));
    const edges = [];
    const boxes = [];
    // The base image, left of the root snapshot.
    const rootAt = at.get(tree.snapshot.id);
    boxes.push(s('g', { class: 'tree-base' },
      s('rect', { x: x(0), y: y(rootAt.y), width: BOX_W, height: BOX_H, rx: 6 }),
      s('text', { x: x(0) + 10, y: y(rootAt.y) + 22 }, 'base image'),
      s('text', { x: x(0) + 10, y: y(rootAt.y) + 40, class: 'small' }, shorten(tree.snapshot.baseImage || 'unknown', 26))));
    edges.push(link(x(0) + BOX_W, y(rootAt.y) + BOX_H / 2, x(1), y(rootAt.y) + BOX_H / 2));
    for (const { node, depth: d, y: r } of placed) {
      const snap = node.snapshot;
      const folded = collapsed.has(snap.id);
      if (!folded) {
        for (const child of node.children) {
          const c = at.get(child.snapshot.id);
          edges.push(link(x(d) + BOX_W, y(r) + BOX_H / 2, x(c.depth), y(c.y) + BOX_H / 2));
        }
      }
      const label = `${tagOf(snap.target)}, ${snap.status.toLowerCase()}, ${ago(snap.createdAt)}, ${bytes(snap.layerSize)}`;
      const group = s('g', {
        class: `tree-node status-${snap.status.toLowerCase()}${snap.id === selected ? ' selected' : ''}`,
        tabindex: 0,
        role: 'button',
        'aria-label': label,
        'data-id': snap.id,
        'data-parent': snap.parent?.id,
        onClick: () => select(snap),
        onKeydown: (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            select(snap);
          }
        },
      },
      s('title', {}, snap.target),
      s('rect', { x: x(d), y: y(r), width: BOX_W, height: BOX_H, rx: 6 }),
      s('text', { x: x(d) + 10, y: y(r) + 20, class: 'tag' }, shorten(tagOf(snap.target), 18)),
      s('text', { x: x(d) + BOX_W - 10, y: y(r) + 20, class: 'small status-text', 'text-anchor': 'end' }, snap.status),
      s('text', { x: x(d) + 10, y: y(r) + 40, class: 'small' }, `${ago(snap.createdAt)} · ${bytes(snap.layerSize)}`));
      boxes.push(group);
      if (node.children.length) {
        boxes.push(s('g', {
          class: 'tree-knob',
          tabindex: 0,
          role: 'button',
          'aria-label': `${folded ? 'Open' : 'Fold'} the ${node.children.length} snapshot(s) built on ${tagOf(snap.target)}`,
          'aria-expanded': String(!folded),
          onClick: () => toggle(snap.id),
          onKeydown: (e) => {
            if (e.key === 'Enter' || e.key === ' ') {
              e.preventDefault();
              toggle(snap.id);
            }
          },
        },
        s('circle', { cx: x(d) + BOX_W, cy: y(r) + BOX_H / 2, r: 9 }),
        s('text', { x: x(d) + BOX_W, y: y(r) + BOX_H / 2 + 4, 'text-anchor': 'middle' }, folded ? `+${node.children.length}` : '−')));
      }
    }
    show(picture, s('svg', {
      width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': `Lineage of ${count} snapshot(s)`,
    }, edges, boxes));
  };

  const toggle = (nodeId) => {
    if (collapsed.has(nodeId)) collapsed.delete(nodeId);
    else collapsed.add(nodeId);
    draw();
  };

  show(main,
    h('h1', {}, 'Lineage'),
    h('p', { class: 'muted' }, `${count} snapshot${count === 1 ? '' : 's'} in this family. Each is built on the one to its left.`,
      root.descendants.length >= FAMILY_LIMIT ? ` Only the ${FAMILY_LIMIT} oldest descendants of the first snapshot are drawn.` : ''),
    picture,
    panel);
  const start = [tree, ...root.descendants.map((d) => ({ snapshot: d }))].find((n) => n.snapshot.id === id);
  select(start ? start.snapshot : tree.snapshot);
  picture.querySelector('.selected')?.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  return undefined;
}

function link(x1, y1, x2, y2) {
  const mid = (x1 + x2) / 2;
  return s('path', { class: 'tree-edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` });
}

function shorten(text, max) {
  return text.length > max ? `…${text.slice(text.length - max + 1)}` : text;
}
