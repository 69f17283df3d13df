// System: GET /v1/status every second (and GET /v1/pipelines once). Readiness and its reasons;
// each pipeline's graph of stages with each stream's backlog and workers; each model's duty
// cycle, batch size and rate over time, with a verdict on whether it waits on the CPU (the
// preprocessing before it); pipelines' throughput and latency; the workers; Redis.

import { api, errorText, pipelines } from './api.js';
import { lineChart, pipelineGraph } from './charts.js';
import { fill, fmtBytes, fmtNum, h } from './dom.js';

const EVERY_MS = 1000;
const SPAN_MS = 120000;

/** How a model stands: waiting on the CPU (preprocessing behind it), the bottleneck, or idle. */
export function verdict(model, ownBacklog, feedBacklog) {
  const busy = `busy ${fmtNum((model.duty_cycle || 0) * 100, 0)}% of the time`;
  if (!model.items_per_s && !ownBacklog && !feedBacklog) return { cls: 'idle', text: 'idle' };
  if ((model.duty_cycle || 0) < 0.5 && feedBacklog > 0 && ownBacklog === 0) {
    return { cls: 'cpu', text: `waits on the CPU: ${feedBacklog} item(s) queued for preprocessing, none for the model; ${busy}` };
  }
  if ((model.duty_cycle || 0) >= 0.8 || ownBacklog > 0) {
    return { cls: 'model', text: `the model is the bottleneck: ${ownBacklog} item(s) queued for it; ${busy}` };
  }
  return { cls: 'ok', text: `keeping up; ${busy}` };
}

function streamFinder(streams) {
  return (pipeline, stage) => streams.find((x) => x.pipeline === pipeline && x.stage === stage.name)
    || (stage.model ? streams.find((x) => x.model === stage.model && !x.pipeline) : null)
    || (stage.model ? streams.find((x) => x.model === stage.model) : null) || null;
}

/** Items queued for the preprocess stages that feed a model, over every pipeline. */
function feedBacklogs(all, find) {
  const feed = {};
  for (const p of all) {
    for (const st of p.stages.filter((x) => x.kind === 'model')) {
      for (const need of st.needs || []) {
        const prev = p.stages.find((x) => x.name === need);
        if (prev && prev.kind === 'preprocess') feed[st.model] = (feed[st.model] || 0) + (find(p.name, prev)?.backlog || 0);
      }
    }
  }
  return feed;
}

function table(caption, cols, rows, cls) {
  return h('div', { class: 'scroll' }, h('table', { class: cls },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows)));
}

export function renderSystem(main) {
  const history = new Map(); // key -> [[t, v], ...]
  let timer = null;
  let stopped = false;
  let all = [];
  const note = h('p', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const ready = h('section', { class: 'readiness', 'aria-label': 'Readiness' });
  const graphs = h('section', { class: 'graphs', 'aria-label': 'Pipelines' });
  const models = h('section', { class: 'models', 'aria-label': 'Models' });
  const streams = h('section', { class: 'streams', 'aria-label': 'Streams' });
  const workers = h('section', { class: 'workers', 'aria-label': 'Workers' });
  const redis = h('section', { class: 'redis', 'aria-label': 'Redis' });
  main.append(h('div', { class: 'system' }, h('h2', {}, 'System'), note, ready, graphs, models, streams, workers, redis));

  function record(key, t, v) {
    const points = history.get(key) || [];
    points.push([t, Number(v)]);
    while (points.length && points[0][0] < t - SPAN_MS) points.shift();
    history.set(key, points);
    return points;
  }

  function draw(st) {
    const now = Date.now();
    const find = streamFinder(st.streams || []);
    const total = (st.streams || []).reduce((sum, x) => sum + (x.backlog || 0), 0);
    record('backlog', now, total);
    fill(ready, h('h3', {}, 'Readiness'),
      h('p', {}, h('span', { class: `badge ${st.ready ? 'st-succeeded' : 'st-failed'}`, id: 'ready-state' }, st.ready ? 'ready' : 'not ready'),
        ' total backlog ', h('strong', { id: 'total-backlog', dataset: { backlog: total } }, String(total)), ' items'),
      (st.reasons || []).length ? h('ul', { class: 'reasons' }, st.reasons.map((r) => h('li', { class: 'error' }, r))) : null,
      lineChart('Backlog (items, all streams)', [{ name: 'backlog', points: history.get('backlog') }], { now, spanMs: SPAN_MS }));

    const perPipeline = Object.fromEntries((st.pipelines || []).map((p) => [p.pipeline, p]));
    fill(graphs, h('h3', {}, 'Pipelines'), ...all.map((p) => {
      const m = perPipeline[p.name] || {};
      const jobs = record(`jobs:${p.name}`, now, m.jobs_per_s || 0);
      const p50 = record(`p50:${p.name}`, now, m.p50_ms || 0);
      const p95 = record(`p95:${p.name}`, now, m.p95_ms || 0);
      return h('article', { class: 'card pipeline', dataset: { pipeline: p.name } },
        h('h4', {}, p.name),
        h('p', { class: 'muted' }, `${fmtNum(m.jobs_per_s, 2)} jobs/s · p50 ${fmtNum(m.p50_ms, 0)} ms · p95 ${fmtNum(m.p95_ms, 0)} ms · backlog ${m.backlog ?? 0}`),
        h('div', { class: 'scroll' }, pipelineGraph(p, (stage) => find(p.name, stage))),
        h('div', { class: 'charts' },
          lineChart('Throughput (jobs/s)', [{ name: 'jobs/s', points: jobs }], { now, spanMs: SPAN_MS }),
          lineChart('Latency (ms)', [{ name: 'p50', points: p50 }, { name: 'p95', points: p95 }], { now, spanMs: SPAN_MS })));
    }));

    const feed = feedBacklogs(all, find);
    fill(models, h('h3', {}, 'Models'), h('div', { class: 'model-grid' }, (st.models || []).map((m) => {
      const own = (st.streams || []).filter((x) => x.model === m.model).reduce((sum, x) => sum + (x.backlog || 0), 0);
      const v = verdict(m, own, feed[m.model] || 0);
      return h('article', { class: 'card model', dataset: { model: m.model } },
        h('h4', {}, m.model),
        h('p', { class: `verdict v-${v.cls}` }, v.text),
        h('p', { class: 'muted' }, `${fmtNum(m.items_per_s, 1)} items/s · mean batch ${fmtNum(m.mean_batch, 2)} · duty ${fmtNum((m.duty_cycle || 0) * 100, 0)}%`),
        lineChart('Duty cycle', [{ name: 'duty', points: record(`duty:${m.model}`, now, m.duty_cycle || 0) }], { now, spanMs: SPAN_MS, max: 1 }),
        lineChart('Mean batch size', [{ name: 'batch', points: record(`batch:${m.model}`, now, m.mean_batch || 0) }], { now, spanMs: SPAN_MS }),
        lineChart('Items/s', [{ name: 'items/s', points: record(`rate:${m.model}`, now, m.items_per_s || 0) }], { now, spanMs: SPAN_MS }));
    })));

    fill(streams, h('h3', {}, 'Streams'), table('Each stream: its consumers and what waits in it',
      ['Stream', 'Pipeline', 'Stage', 'Model', 'Workers', 'Backlog', 'Lag', 'Pending', 'Oldest'],
      (st.streams || []).map((x) => h('tr', { dataset: { stream: x.stream, backlog: x.backlog, workers: x.workers } },
        h('td', {}, h('code', {}, x.stream)), h('td', {}, x.pipeline ?? '–'), h('td', {}, x.stage ?? '–'), h('td', {}, x.model ?? '–'),
        h('td', { class: `num${x.workers ? '' : ' error'}` }, String(x.workers)), h('td', { class: 'num backlog' }, String(x.backlog)),
        h('td', { class: 'num' }, String(x.lag)), h('td', { class: 'num' }, String(x.pending)),
        h('td', { class: 'num' }, x.oldest_age_ms == null ? '–' : `${fmtNum(x.oldest_age_ms / 1000, 1)} s`))), 'stream-table'));

    fill(workers, h('h3', {}, `Workers (${(st.workers || []).length})`), table('Live workers',
      ['Worker', 'Kind', 'Streams', 'Host', 'PID', 'Up'],
      (st.workers || []).map((w) => h('tr', { class: 'worker', dataset: { worker: w.id, kind: w.kind } },
        h('td', {}, h('code', {}, w.id)), h('td', {}, w.kind), h('td', {}, (w.streams || []).join(', ')),
        h('td', {}, w.host ?? '–'), h('td', { class: 'num' }, w.pid ?? '–'), h('td', { class: 'num' }, `${fmtNum((w.age_ms || 0) / 1000, 0)} s`))),
      'worker-table'));

    const r = st.redis || {};
    fill(redis, h('h3', {}, 'Redis'), h('dl', { class: 'facts' },
      h('dt', {}, 'Version'), h('dd', {}, r.version ?? '–'),
      h('dt', {}, 'Memory'), h('dd', {}, `${fmtBytes(r.used_memory)}${r.maxmemory ? ` of ${fmtBytes(r.maxmemory)}` : ' (no maxmemory)'}`),
      h('dt', {}, 'Persistence'), h('dd', {}, h('code', {}, JSON.stringify(r.persistence ?? {}))),
      h('dt', {}, 'As of'), h('dd', {}, st.at ? new Date(st.at).toLocaleTimeString() : '–')));
  }

  async function tick() {
    try {
      if (!all.length) all = await pipelines();
      const st = await api('/v1/status');
      if (stopped) return;
      note.textContent = '';
      note.className = 'form-status';
      draw(st);
    } catch (err) {
      note.className = 'form-status error';
      note.textContent = `Cannot read the status: ${errorText(err)}`;
    }
    if (!stopped) timer = setTimeout(tick, EVERY_MS);
  }
  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}
