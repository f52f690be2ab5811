// A few DOM helpers. Every value from the API becomes a text node or an
// attribute, never HTML: snapshot messages, paths and URLs are the
// speakers' own text.

const SVG = 'http://www.w3.org/2000/svg';

function build(element, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'text') {
      element.textContent = String(value);
    } else {
      element.setAttribute(key === 'className' ? 'class' : key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// `h('button', { class: 'primary', onClick }, 'Save')`
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

// The same for SVG elements.
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG, tag), props, children);
}

// Replaces what `parent` shows.
export function show(parent, ...children) {
  parent.replaceChildren();
  build(parent, {}, children);
  return parent;
}

// A labelled form field: label, control and an optional hint, linked for
// screen readers.
let fieldCount = 0;
export function field(label, control, hint) {
  fieldCount += 1;
  const id = control.id || `field-${fieldCount}`;
  control.id = id;
  const parts = [h('label', { for: id }, label), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { id: hintId, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

// An error box: the code and the API's sentence, announced to screen readers.
export function errorBox(error, ...actions) {
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, error.code ? `${error.code}: ` : 'Error: '),
    h('span', { class: 'error-message' }, error.message),
    actions.length ? h('div', { class: 'actions' }, actions) : null);
}
