// Building the DOM from data, safely: text only ever goes in through textContent and
// attributes through setAttribute/properties; nothing user-supplied is parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function put(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('td', {class: 'num'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  put(el, attrs);
  return append(el, children);
}

/** An SVG element, as h() is for HTML. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  put(el, attrs);
  return append(el, children);
}

/** A label and its field, joined by a fresh id. */
let ids = 0;
export function field(labelText, input, hint) {
  const id = input.id || `f${++ids}`;
  input.id = id;
  const parts = [h('label', { for: id }, labelText), input];
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute('aria-describedby', hintId);
    parts.push(h('small', { id: hintId, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function fmtTime(text) {
  if (!text) return '';
  const when = new Date(text);
  return Number.isNaN(when.getTime()) ? String(text) : when.toLocaleString();
}

export function fmtNum(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${fmtNum(n, 1)} ${units[i]}`;
}

/** A bar of `fraction` (0..1), its width set through the CSSOM (allowed by the page's CSP). */
export function bar(fraction, label) {
  const f = Math.max(0, Math.min(1, Number(fraction) || 0));
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${(f * 100).toFixed(1)}%`;
  return h('span', {
    class: 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 1,
    'aria-valuenow': f.toFixed(3), 'aria-label': label || `${(f * 100).toFixed(0)}%`,
  }, fill);
}

export function statusBadge(status) {
  return h('span', { class: `badge st-${String(status).replace(/[^a-z_]/g, '')}`, dataset: { status } }, status);
}

/** A stable colour index for a label (the video timeline's cells). */
export function hue(text) {
  let x = 0;
  for (const ch of String(text)) x = (x * 31 + ch.codePointAt(0)) % 360;
  return x;
}

/** Replace el's children (arrays flattened; null, undefined and false left out). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
