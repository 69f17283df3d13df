// SVG drawings for the System view: a pipeline's graph of stages (from GET /v1/pipelines,
// with each stage's stream backlog and workers from GET /v1/status) and small line charts of
// values sampled over time.

import { fmtNum, s } from './dom.js';

const NODE_W = 150;
const NODE_H = 54;
const GAP_X = 40;
const GAP_Y = 16;

/** Each stage's column: one more than the furthest stage it needs (`input` is column 0). */
export function layers(stages) {
  const depth = { input: 0 };
  const byName = Object.fromEntries(stages.map((st) => [st.name, st]));
  const visit = (name, seen = new Set()) => {
    if (name in depth) return depth[name];
    if (seen.has(name) || !byName[name]) return 0;
    seen.add(name);
    const needs = byName[name].needs && byName[name].needs.length ? byName[name].needs : ['input'];
    depth[name] = 1 + Math.max(...needs.map((n) => visit(n, seen)));
    return depth[name];
  };
  stages.forEach((st) => visit(st.name));
  return depth;
}

/** The pipeline as boxes and arrows; `streamOf(stage)` gives its stream's status (or null). */
export function pipelineGraph(pipeline, streamOf) {
  const stages = pipeline.stages;
  const depth = layers(stages);
  const columns = [];
  for (const name of ['input', ...stages.map((st) => st.name)]) (columns[depth[name]] ||= []).push(name);
  const pos = {};
  columns.forEach((names, x) => names.forEach((name, y) => { pos[name] = { x: 8 + x * (NODE_W + GAP_X), y: 8 + y * (NODE_H + GAP_Y) }; }));
  const width = 16 + columns.length * (NODE_W + GAP_X) - GAP_X;
  const height = 16 + Math.max(...columns.map((c) => c.length)) * (NODE_H + GAP_Y) - GAP_Y;
  const edges = [];
  for (const st of stages) {
    for (const need of (st.needs && st.needs.length ? st.needs : ['input'])) {
      const a = pos[need];
      const b = pos[st.name];
      if (!a || !b) continue;
      const x1 = a.x + NODE_W; const y1 = a.y + NODE_H / 2; const x2 = b.x; const y2 = b.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.push(s('path', { class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 4},${y2}`, 'marker-end': 'url(#arrow)' }));
    }
  }
  const nodes = ['input', ...stages.map((st) => st.name)].map((name) => {
    const st = stages.find((x) => x.name === name);
    const stream = st ? streamOf(st) : null;
    const backlog = stream ? stream.backlog : 0;
    const kind = st ? st.kind : 'input';
    const sub = st ? (st.model ? `model ${st.model}` : st.kind) : pipeline.input.kind;
    const load = stream ? `backlog ${backlog} · ${stream.workers} worker${stream.workers === 1 ? '' : 's'}` : '';
    const { x, y } = pos[name];
    return s('g', { class: `node ${kind}${backlog > 0 ? ' busy' : ''}${stream && stream.workers === 0 ? ' orphan' : ''}`,
      dataset: { stage: name, backlog } },
    s('title', {}, `${name}: ${sub}${load ? `, ${load}` : ''}`),
    s('rect', { x, y, width: NODE_W, height: NODE_H, rx: 6 }),
    s('text', { x: x + 8, y: y + 17, class: 'node-name' }, name),
    s('text', { x: x + 8, y: y + 32, class: 'node-sub' }, sub.length > 22 ? `${sub.slice(0, 21)}…` : sub),
    s('text', { x: x + 8, y: y + 47, class: 'node-load' }, load));
  });
  return s('svg', { class: 'graph', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': `Stages of ${pipeline.name}` },
  s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto' },
    s('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrowhead' }))),
  edges, nodes);
}

/** A line chart of `series` ([{name, points: [[t, v], ...]}]) over the last `spanMs`. */
export function lineChart(title, series, { spanMs = 120000, unit = '', max = null, now = Date.now() } = {}) {
  const W = 320; const H = 120; const L = 40; const B = 18; const T = 18;
  const values = series.flatMap((se) => se.points.map(([, v]) => v)).filter((v) => Number.isFinite(v));
  const top = max ?? Math.max(1e-9, ...values) * 1.1;
  const px = (t) => L + ((t - (now - spanMs)) / spanMs) * (W - L - 4);
  const py = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
  const lines = series.map((se, i) => s('polyline', { class: `line c${i % 6}`,
    points: se.points.filter(([t, v]) => t >= now - spanMs && Number.isFinite(v)).map(([t, v]) => `${px(t).toFixed(1)},${py(v).toFixed(1)}`).join(' ') }));
  const last = series.map((se) => `${se.name} ${fmtNum(se.points.at(-1)?.[1], 2)}${unit}`).join(', ');
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${last}` },
    s('text', { x: 4, y: 12, class: 'chart-title' }, title),
    s('line', { x1: L, y1: py(0), x2: W - 4, y2: py(0), class: 'axis' }),
    s('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }),
    s('text', { x: L - 4, y: T + 4, class: 'tick end' }, `${fmtNum(top, 2)}${unit}`),
    s('text', { x: L - 4, y: H - B, class: 'tick end' }, '0'),
    s('text', { x: W - 4, y: H - 4, class: 'tick end' }, 'now'),
    s('text', { x: L, y: H - 4, class: 'tick' }, `−${Math.round(spanMs / 1000)} s`),
    lines,
    series.length > 1 ? series.map((se, i) => s('text', { x: W - 4, y: 12 + i * 11, class: `legend end c${i % 6}` }, se.name)) : null);
}
