// One output of a job, drawn from what its result holds: `labels`/`tags` as score bars, `boxes`
// over the item's image, `frames` (a video) as a timeline of per-frame labels, `embedding` as
// its dimension; a failed item with its reason. The inputs themselves (thumbnails, a video
// player, a text) come from /v1/jobs/{id}/inputs/{i} as blob: URLs.

import { fileBlobUrl } from './api.js';
import { bar, fill, fmtBytes, fmtNum, h, hue, s, statusBadge } from './dom.js';

export function scoreList(items, nameOf, cls) {
  return h('ol', { class: `scores ${cls || ''}` }, items.map((item) => {
    const name = nameOf(item);
    return h('li', {}, h('span', { class: 'label-name' }, name),
      bar(Math.max(0, item.score), `${name}: ${fmtNum(item.score, 3)}`), h('span', { class: 'num' }, fmtNum(item.score, 3)));
  }));
}

/** The image with its boxes drawn over it, in the image's own pixels (an SVG viewBox). */
export function boxedImage(url, boxes, alt) {
  const img = h('img', { src: url, alt, class: 'boxed-img' });
  const wrap = h('div', { class: 'boxed' }, img);
  img.addEventListener('load', () => {
    const overlay = s('svg', { class: 'boxes', viewBox: `0 0 ${img.naturalWidth} ${img.naturalHeight}`,
      preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    boxes.map(([x1, y1, x2, y2], i) => s('g', {},
      s('rect', { x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1), class: 'box' }),
      s('text', { x: x1, y: Math.max(12, y1 - 4), class: 'box-label' }, `face ${i + 1}`))));
    wrap.append(overlay);
  }, { once: true });
  return wrap;
}

function topLabel(frame) {
  if (frame && Array.isArray(frame.labels) && frame.labels.length) return frame.labels[0];
  if (frame && Array.isArray(frame.boxes)) return { label: `${frame.boxes.length} face(s)`, score: frame.faces?.[0]?.score ?? 0 };
  return null;
}

/** A video's per-frame results as a strip of cells (one per frame, coloured by its top label)
 * and a list; a cell is a button that seeks the video player to that frame. */
export function timeline(frames, errors, player) {
  const times = Object.keys(frames || {}).concat(Object.keys(errors || {}))
    .filter((t, i, all) => all.indexOf(t) === i).sort((a, b) => Number(a) - Number(b));
  const strip = h('div', { class: 'timeline', role: 'list', 'aria-label': 'Frames' });
  const rows = h('ol', { class: 'frames' });
  for (const t of times) {
    const top = topLabel(frames?.[t]);
    const err = errors?.[t];
    const text = err ? `failed: ${err}` : top ? `${top.label} ${fmtNum(top.score, 2)}` : '–';
    const cell = h('button', { type: 'button', class: `cell${err ? ' failed' : ''}`, role: 'listitem',
      title: `${t} s: ${text}`, 'aria-label': `${t} s: ${text}`,
      onclick: () => { if (player) { player.currentTime = Number(t); player.focus(); } } });
    if (top && !err) cell.style.backgroundColor = `hsl(${hue(top.label)} 60% 55%)`;
    strip.append(cell);
    rows.append(h('li', {}, h('span', { class: 'time' }, `${t} s`), h('span', { class: err ? 'error' : 'label-name' }, text)));
  }
  return h('div', { class: 'video-result' }, strip, h('details', {}, h('summary', {}, `${times.length} frames`), rows));
}

/** The files an output gives (a face-blur JPEG): images shown, others as download links. */
export function outputFiles(files) {
  const list = h('ul', { class: 'output-files' });
  for (const file of files) {
    const name = String(file.name ?? 'file');
    const item = h('li', {}, h('span', { class: 'file-name' }, `${name} (${file.content_type}, ${fmtBytes(file.size)})`));
    list.append(item);
    fileBlobUrl(String(file.url ?? '')).then(({ url, type }) => {
      if (type.startsWith('image/')) item.append(h('img', { src: url, alt: name, class: 'output-file' }));
      item.append(h('a', { href: url, download: name, class: 'file-link' }, 'download'));
    }).catch(() => item.append(h('span', { class: 'muted' }, ' not available')));
  }
  return h('section', { class: 'files' }, h('h4', {}, 'Files'), list);
}

/** The card's body for one output; `media` is a promise of the input's blob URL (or null). */
export function renderOutput(card, output, { kind, media, text }) {
  const body = [];
  const result = output.result;
  const source = output.source || `input ${output.index}`;
  card.dataset.status = output.status;
  fill(card, h('header', { class: 'card-head' },
    h('span', { class: 'source', title: source }, source), statusBadge(output.status)));
  const slot = h('div', { class: 'media' });
  card.append(slot);
  if (output.status === 'failed' || output.status === 'canceled') {
    body.push(h('p', { class: 'error reason' }, output.error || output.status));
  }
  let player = null;
  if (kind === 'video') {
    player = h('video', { controls: true, muted: true, preload: 'metadata', class: 'player', 'aria-label': `video ${source}` });
  }
  if (result && typeof result === 'object') {
    if (Array.isArray(result.tags)) body.push(h('h4', {}, 'Tags'), scoreList(result.tags, (t) => t.tag, 'tags'));
    if (Array.isArray(result.labels)) body.push(scoreList(result.labels, (l) => l.label, 'labels'));
    if (Array.isArray(result.boxes)) body.push(h('p', { class: 'faces' }, `${result.boxes.length} face(s)`));
    if (result.frames) body.push(timeline(result.frames, result.errors, player));
    if (Array.isArray(result.files)) body.push(outputFiles(result.files));
    if (Array.isArray(result.embedding)) {
      body.push(h('p', { class: 'embedding' }, `embedding, dimension ${result.dim ?? result.embedding.length}: `,
        h('code', {}, `[${result.embedding.slice(0, 4).map((x) => x.toFixed(3)).join(', ')}, …]`)));
    }
  }
  if (output.status === 'pending') body.push(h('p', { class: 'muted' }, 'pending…'));
  card.append(...body);
  if (media) {
    media.then(({ url, type }) => {
      if (kind === 'image' && type.startsWith('image/')) {
        slot.append(result && Array.isArray(result.boxes)
          ? boxedImage(url, result.boxes, source) : h('img', { src: url, alt: source, class: 'thumb' }));
      } else if (player && type.startsWith('video/')) {
        player.src = url;
        slot.append(player);
      }
    }).catch(() => slot.append(h('p', { class: 'muted' }, 'input not kept')));
  }
  if (text) text.then((t) => slot.append(h('blockquote', { class: 'text-input' }, t.length > 400 ? `${t.slice(0, 400)}…` : t))).catch(() => {});
}

/** Cosine similarity of every pair of the job's embeddings (unit vectors: a dot product). */
export function similarity(outputs) {
  const rows = outputs.filter((o) => o.status === 'succeeded' && Array.isArray(o.result?.embedding));
  const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
  const norm = (a) => Math.sqrt(dot(a, a)) || 1;
  return {
    names: rows.map((o) => o.source || `input ${o.index}`),
    matrix: rows.map((a) => rows.map((b) => dot(a.result.embedding, b.result.embedding)
      / (norm(a.result.embedding) * norm(b.result.embedding)))),
  };
}

export function similarityTable(outputs) {
  const { names, matrix } = similarity(outputs);
  if (names.length < 2) return null;
  const head = h('tr', {}, h('th', { scope: 'col' }, ''), names.map((n, j) => h('th', { scope: 'col', title: n }, `#${j + 1}`)));
  const rows = matrix.map((row, i) => h('tr', {}, h('th', { scope: 'row', class: 'source' }, `#${i + 1} ${names[i]}`),
    row.map((v) => {
      const cell = h('td', { class: 'num sim' }, v.toFixed(3));
      cell.style.backgroundColor = `hsl(210 70% ${Math.round(95 - Math.max(0, v) * 45)}%)`;
      return cell;
    })));
  return h('section', { class: 'similarity' }, h('h3', {}, 'Cosine similarity of the inputs'),
    h('div', { class: 'scroll' }, h('table', { class: 'matrix' }, h('thead', {}, head), h('tbody', {}, rows))));
}
