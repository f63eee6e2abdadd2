// dom: building elements without markup. Every string becomes a text node
// (textContent), so nothing the server sends is ever parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

// h('tag.class1.class2', {attr: value, on: {click: fn}}, ...children)
export function h(spec, attrs, ...children) {
  return build(document.createElement(tagOf(spec)), spec, attrs, children);
}

// s() is h() for SVG elements.
export function s(spec, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tagOf(spec)), spec, attrs, children);
}

function tagOf(spec) {
  return spec.split('.')[0] || 'div';
}

function build(el, spec, attrs, children) {
  const classes = spec.split('.').slice(1);
  if (classes.length) el.setAttribute('class', classes.join(' '));
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'class') {
      el.setAttribute('class', [el.getAttribute('class'), v].filter(Boolean).join(' '));
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'style' || k.startsWith('on')) {
      throw new Error('dom: inline style and handler attributes are not allowed');
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// replace empties el and fills it with children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
// uid is a fresh id for label/aria wiring.
export function uid(prefix = 'f') {
  ids += 1;
  return `${prefix}-${ids}`;
}

// field is a labelled input: {label, hint, ...input attributes}.
export function field({ label, hint, type = 'text', ...attrs }) {
  const id = uid('in');
  const hintId = hint ? id + '-hint' : undefined;
  const input = type === 'select'
    ? h('select', { id, ...attrs, 'aria-describedby': hintId })
    : h('input', { id, type, ...attrs, 'aria-describedby': hintId });
  return {
    input,
    el: h('div.field',
      h('label', { for: id }, label),
      input,
      hint ? h('p.hint', { id: hintId }, hint) : null),
  };
}
