// Jobs: GET /v1/jobs, newest first, filtered by status and pipeline, a page at a time
// (`next_cursor`), refreshed every few seconds while shown.

import { api, errorText, pipelines } from './api.js';
import { field, fill, fmtTime, h, statusBadge } from './dom.js';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'];
const REFRESH_MS = 2000;
const PAGE = 20;

export function renderJobs(main) {
  let timer = null;
  let stopped = false;
  let loads = 0; // only the latest request's answer is shown
  const cursors = [null]; // the cursor of each page seen so far; the last is the page shown
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'any'), STATUSES.map((st) => h('option', { value: st }, st)));
  const pipeline = h('select', { name: 'pipeline' }, h('option', { value: '' }, 'any'));
  const body = h('tbody', {});
  const note = h('p', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const newer = h('button', { type: 'button', class: 'newer' }, '← Newer');
  const older = h('button', { type: 'button', class: 'older' }, 'Older →');
  const pageText = h('span', { class: 'muted page-no' });

  main.append(h('section', { class: 'jobs' },
    h('h2', {}, 'Jobs'),
    h('form', { class: 'filters row', onsubmit: (e) => e.preventDefault() },
      field('Status', status), field('Pipeline', pipeline)),
    h('div', { class: 'scroll' }, h('table', { class: 'job-table' },
      h('caption', { class: 'sr-only' }, 'Jobs, newest first'),
      h('thead', {}, h('tr', {}, ['Job', 'Pipeline', 'Status', 'Progress', 'Created', 'Ended', 'Metadata']
        .map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    h('div', { class: 'pager' }, newer, pageText, older), note));

  function row(job) {
    const meta = job.metadata ? JSON.stringify(job.metadata) : '';
    return h('tr', { dataset: { id: job.id, status: job.status } },
      h('td', {}, h('a', { href: `#/job/${encodeURIComponent(job.id)}`, class: 'job-link' }, h('code', {}, job.id.slice(0, 12)))),
      h('td', {}, job.pipeline), h('td', {}, statusBadge(job.status)),
      h('td', { class: 'num' }, `${job.progress.done} / ${job.progress.total}`),
      h('td', {}, fmtTime(job.created_at)), h('td', {}, fmtTime(job.completed_at)),
      h('td', { class: 'meta' }, h('code', { title: meta }, meta.length > 60 ? `${meta.slice(0, 60)}…` : meta)));
  }

  async function load() {
    clearTimeout(timer);
    const seq = ++loads;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (status.value) params.set('status', status.value);
    if (pipeline.value) params.set('pipeline', pipeline.value);
    const cursor = cursors[cursors.length - 1];
    if (cursor) params.set('cursor', cursor);
    try {
      const page = await api(`/v1/jobs?${params}`);
      if (stopped || seq !== loads) return;
      fill(body, ...page.jobs.map(row));
      if (!page.jobs.length) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No jobs.')));
      older.disabled = !page.next_cursor;
      older._next = page.next_cursor;
      newer.disabled = cursors.length === 1;
      pageText.textContent = `page ${cursors.length}`;
      note.textContent = '';
      note.className = 'form-status';
    } catch (err) {
      note.className = 'form-status error';
      note.textContent = errorText(err);
    }
    if (!stopped && seq === loads) timer = setTimeout(load, REFRESH_MS);
  }

  function restart() {
    cursors.splice(1);
    load();
  }
  status.addEventListener('change', restart);
  pipeline.addEventListener('change', restart);
  older.addEventListener('click', () => { if (older._next) { cursors.push(older._next); load(); } });
  newer.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  pipelines().then((all) => pipeline.append(...all.map((p) => h('option', { value: p.name }, p.name)))).catch(() => {});
  load();
  return { stop() { stopped = true; clearTimeout(timer); } };
}
