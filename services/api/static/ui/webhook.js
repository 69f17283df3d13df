// A job's webhook: its URL, events, the delivery's state and attempts (GET /v1/jobs/{id}
// carries them), and a redeliver button (POST /v1/jobs/{id}/webhook/redeliver).

import { api, errorText } from './api.js';
import { fmtTime, h, statusBadge } from './dom.js';

export function webhookSection(job, reload) {
  const hook = job.webhook;
  if (!hook) return null;
  const note = h('p', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const redeliver = h('button', { type: 'button', class: 'redeliver' }, 'Redeliver');
  redeliver.addEventListener('click', async () => {
    redeliver.disabled = true;
    note.className = 'form-status';
    try {
      const view = await api(`/v1/jobs/${encodeURIComponent(job.id)}/webhook/redeliver`, { method: 'POST' });
      note.textContent = `Queued again: ${view.state || 'pending'}`;
      reload();
    } catch (err) {
      note.className = 'form-status error';
      note.textContent = `Not redelivered: ${errorText(err)}`;
    } finally {
      redeliver.disabled = false;
    }
  });
  const attempts = (hook.attempts || []).map((a, i) => h('tr', {},
    h('td', { class: 'num' }, String(i + 1)), h('td', {}, fmtTime(a.at)),
    h('td', { class: 'num' }, a.status_code ?? '–'), h('td', { class: 'num' }, a.duration_ms ?? '–'),
    h('td', { class: a.error ? 'error' : '' }, a.error || 'ok')));
  return h('section', { class: 'webhook', 'aria-label': 'Webhook' },
    h('h3', {}, 'Webhook'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'URL'), h('dd', {}, h('code', {}, hook.url)),
      h('dt', {}, 'Events'), h('dd', {}, (hook.events || []).join(', ')),
      h('dt', {}, 'Delivery'), h('dd', {}, hook.state ? statusBadge(hook.state) : 'nothing sent yet',
        hook.event ? ` ${hook.event}` : '', hook.id ? ` (${hook.id})` : ''),
      hook.next_attempt_at ? [h('dt', {}, 'Next attempt'), h('dd', {}, fmtTime(hook.next_attempt_at))] : null,
      hook.last_error ? [h('dt', {}, 'Last error'), h('dd', { class: 'error' }, hook.last_error)] : null),
    attempts.length ? h('div', { class: 'scroll' }, h('table', { class: 'attempts' },
      h('caption', {}, 'Delivery attempts, oldest first'),
      h('thead', {}, h('tr', {}, ['#', 'At', 'HTTP', 'ms', 'Result'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, attempts))) : h('p', { class: 'muted' }, 'No attempt yet.'),
    h('div', { class: 'actions' }, redeliver), note);
}
