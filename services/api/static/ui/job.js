// One job, live: GET /v1/jobs/{id} first, then its event stream (EventSource on
// /v1/jobs/{id}/events: `progress`, `output`, `completed`); if the stream cannot be had, the
// job is polled instead. Outputs appear as they end; cancel, download, raw JSON, webhook.

import { api, errorText, eventsUrl, inputBlobUrl, inputText, pipelines } from './api.js';
import { fill, fmtTime, h, statusBadge } from './dom.js';
import { renderOutput, similarityTable } from './results.js';
import { webhookSection } from './webhook.js';

const FINAL = new Set(['succeeded', 'failed', 'canceled']);
const HOOK_SETTLED = new Set(['succeeded', 'dead']);
const POLL_MS = 1500;

export function renderJob(main, jobId) {
  let job = null;
  let kind = 'image';
  let source = null;
  let timer = null;
  let stopped = false;
  let downloadUrl = null;
  const media = new Map(); // index -> promise of {url, type}
  const texts = new Map(); // index -> promise of the text
  const cards = new Map();

  const title = h('h2', {}, 'Job ', h('code', { class: 'job-id' }, jobId));
  const badge = h('span', { class: 'job-status' });
  const progress = h('progress', { max: 1, value: 0, 'aria-label': 'Progress' });
  const progressText = h('span', { class: 'progress-text', 'aria-live': 'polite' });
  const facts = h('dl', { class: 'facts' });
  const note = h('p', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const cancel = h('button', { type: 'button', class: 'danger cancel' }, 'Cancel job');
  const download = h('a', { class: 'button download', download: `job-${jobId}.json`, href: '#' }, 'Download results');
  const raw = h('pre', { class: 'raw' });
  const outputs = h('div', { class: 'outputs', 'aria-label': 'Outputs' });
  const extra = h('div', { class: 'extra' });
  const hook = h('div', {});

  main.append(h('section', { class: 'job' },
    h('div', { class: 'job-head' }, title, badge),
    h('div', { class: 'progress-row' }, progress, progressText),
    facts, h('div', { class: 'actions' }, cancel, download), note,
    outputs, extra, hook,
    h('details', { class: 'raw-json' }, h('summary', {}, 'Raw JSON'), raw)));

  function showProgress(p) {
    progress.max = Math.max(1, p.total);
    progress.value = p.done;
    progressText.textContent = `${p.done} / ${p.total} done`;
  }

  function mediaFor(index) {
    if (kind !== 'image' && kind !== 'video') return null;
    if (!media.has(index)) media.set(index, inputBlobUrl(jobId, index));
    return media.get(index);
  }

  function textFor(output) {
    if (kind !== 'text' || output.status === 'pending') return null;
    if (!texts.has(output.index)) texts.set(output.index, inputText(jobId, output.index));
    return texts.get(output.index);
  }

  function drawOutput(output) {
    let card = cards.get(output.index);
    if (!card) {
      card = h('article', { class: 'card output', dataset: { index: output.index } });
      cards.set(output.index, card);
      outputs.append(card);
    }
    renderOutput(card, output, { kind, media: mediaFor(output.index), text: textFor(output) });
  }

  function drawHead() {
    fill(badge, statusBadge(job.status));
    showProgress(job.progress);
    fill(facts, 
      h('dt', {}, 'Pipeline'), h('dd', {}, job.pipeline),
      h('dt', {}, 'Created'), h('dd', {}, fmtTime(job.created_at)),
      job.completed_at ? [h('dt', {}, 'Ended'), h('dd', {}, fmtTime(job.completed_at))] : null,
      job.deadline_at ? [h('dt', {}, 'Deadline'), h('dd', {}, fmtTime(job.deadline_at))] : null,
      job.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error job-error' }, job.error)] : null,
      job.metadata ? [h('dt', {}, 'Metadata'), h('dd', {}, h('code', { class: 'metadata' }, JSON.stringify(job.metadata)))] : null);
    cancel.hidden = FINAL.has(job.status);
    raw.textContent = JSON.stringify(job, null, 2);
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    downloadUrl = URL.createObjectURL(new Blob([raw.textContent], { type: 'application/json' }));
    download.href = downloadUrl;
  }

  function drawAll() {
    drawHead();
    for (const output of job.outputs) drawOutput(output);
    const table = kind === 'text' ? similarityTable(job.outputs) : null;
    fill(extra, ...(table ? [table] : []));
    fill(hook, ...[webhookSection(job, reload)].filter(Boolean));
    if (FINAL.has(job.status) && job.webhook && !HOOK_SETTLED.has(job.webhook.state) && !source) poll();
  }

  async function reload() {
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
      drawAll();
      return job;
    } catch (err) {
      note.className = 'form-status error';
      note.textContent = errorText(err);
      return null;
    }
  }

  function poll() { // until the job ends and its webhook's delivery has settled (drawAll asks again)
    if (stopped || timer) return;
    timer = setTimeout(async () => {
      timer = null;
      const now = await reload();
      if (now && !FINAL.has(now.status)) poll();
    }, POLL_MS);
  }

  function stream() {
    source = new EventSource(eventsUrl(jobId));
    source.addEventListener('progress', (e) => {
      const p = JSON.parse(e.data);
      job.progress = p;
      if (job.status === 'queued' && p.done > 0) job.status = 'running';
      drawHead();
    });
    source.addEventListener('output', (e) => {
      const out = JSON.parse(e.data);
      const old = job.outputs.find((o) => o.index === out.index);
      const merged = { ...(old || {}), ...out };
      if (old) Object.assign(old, merged); else job.outputs.push(merged);
      drawOutput(merged);
      if (kind === 'text') fill(extra, ...[similarityTable(job.outputs)].filter(Boolean));
    });
    source.addEventListener('completed', (e) => {
      source.close();
      source = null;
      job = JSON.parse(e.data);
      drawAll();
    });
    source.addEventListener('error', () => {
      if (source && source.readyState === EventSource.CLOSED) { // refused (401/404) or no such route
        source = null;
        poll();
      }
    });
  }

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: 'POST' });
      drawAll();
    } catch (err) {
      note.className = 'form-status error';
      note.textContent = `Not canceled: ${errorText(err)}`;
    } finally {
      cancel.disabled = false;
    }
  });

  (async () => {
    const all = await pipelines().catch(() => []);
    const first = await reload();
    if (!first || stopped) return;
    kind = all.find((p) => p.name === first.pipeline)?.input.kind || 'image';
    fill(outputs);
    cards.clear();
    drawAll();
    if (!FINAL.has(first.status)) stream();
  })();

  return {
    stop() {
      stopped = true;
      if (source) source.close();
      clearTimeout(timer);
      if (downloadUrl) URL.revokeObjectURL(downloadUrl);
      for (const p of media.values()) p.then(({ url }) => URL.revokeObjectURL(url)).catch(() => {});
    },
  };
}
