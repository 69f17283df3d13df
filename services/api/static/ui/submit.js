// Submit: a pipeline (GET /v1/pipelines), its inputs (files dropped or chosen; texts typed),
// a video's interval and fps, timeout_s, priority, a webhook with its events, metadata (JSON). Sent as
// multipart with keep_inputs, so the job's view can show the inputs; then the job opens.

import { api, errorText, pipelines } from './api.js';
import { field, fill, fmtBytes, h } from './dom.js';

const ACCEPT = { image: 'image/*', video: 'video/*,.mp4,.mov,.mkv,.webm,.avi', text: '.txt,text/plain' };
const EVENTS = ['started', 'progress', 'completed'];

export function renderSubmit(main) {
  const state = { files: [], previews: [], pipeline: null };
  const status = h('div', { class: 'form-status', role: 'status', 'aria-live': 'polite' });
  const select = h('select', { name: 'pipeline', required: true });
  const about = h('p', { class: 'about', id: 'pipeline-about' });
  const fileList = h('ul', { class: 'file-list', 'aria-label': 'Chosen inputs' });
  const fileInput = h('input', { type: 'file', name: 'files', multiple: true, class: 'file-input' });
  const drop = h('div', { class: 'drop', tabindex: 0, role: 'button', 'aria-label': 'Drop files here or press Enter to choose' },
    h('span', {}, 'Drop files here, or '), h('span', { class: 'link' }, 'choose files'));
  const texts = h('textarea', { name: 'texts', rows: 4, placeholder: 'One text per line' });
  const textsField = field('Texts (one per line)', texts, 'Each line becomes one input.');
  const start = h('input', { type: 'number', name: 'start', min: 0, step: 'any', placeholder: '0' });
  const end = h('input', { type: 'number', name: 'end', min: 0, step: 'any', placeholder: 'video end' });
  const fps = h('input', { type: 'number', name: 'fps', min: 0, max: 30, step: 'any', placeholder: 'default' });
  const video = h('fieldset', { class: 'video-opts' }, h('legend', {}, 'Video frames'),
    h('div', { class: 'row' }, field('From (s)', start), field('To (s)', end), field('Frames per second', fps)));
  const timeout = h('input', { type: 'number', name: 'timeout_s', min: 0, step: 'any', placeholder: 'no deadline' });
  const priority = h('select', { name: 'priority' },
    ['normal', 'high', 'low'].map((p) => h('option', { value: p }, p)));
  const webhook = h('input', { type: 'url', name: 'webhook', placeholder: 'https://example.com/hook', spellcheck: 'false' });
  const events = EVENTS.map((name) => h('input', { type: 'checkbox', name: 'webhook_events', value: name, checked: name === 'completed' }));
  const eventsBox = h('fieldset', { class: 'events' }, h('legend', {}, 'Webhook events'),
    events.map((box, i) => { box.id = `ev-${EVENTS[i]}`; return h('label', { for: box.id, class: 'check' }, box, ` ${EVENTS[i]}`); }));
  const metadata = h('textarea', { name: 'metadata', rows: 3, placeholder: '{"user": "me"}', spellcheck: 'false' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Submit job');

  function kind() { return state.pipeline ? state.pipeline.input.kind : 'image'; }

  function clearPreviews() {
    for (const url of state.previews) URL.revokeObjectURL(url);
    state.previews = [];
  }

  function drawFiles() {
    clearPreviews();
    fill(fileList, ...state.files.map((file, i) => {
      let thumb = null;
      if (file.type.startsWith('image/')) {
        const url = URL.createObjectURL(file);
        state.previews.push(url);
        thumb = h('img', { src: url, alt: '', class: 'thumb-sm' });
      }
      const remove = h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${file.name}`,
        onclick: () => { state.files.splice(i, 1); drawFiles(); } }, 'Remove');
      return h('li', {}, thumb, h('span', { class: 'name' }, file.name), h('span', { class: 'muted' }, fmtBytes(file.size)), remove);
    }));
  }

  function addFiles(list) {
    state.files.push(...Array.from(list));
    drawFiles();
  }

  function choosePipeline() {
    const all = select._pipelines || [];
    state.pipeline = all.find((p) => p.name === select.value) || null;
    if (!state.pipeline) return;
    const k = kind();
    fill(about, h('span', { class: 'badge' }, `input: ${k}`), ' ', state.pipeline.description);
    fileInput.accept = ACCEPT[k] || '';
    video.hidden = k !== 'video';
    textsField.hidden = k !== 'text';
    drop.querySelector('.link').textContent = k === 'text' ? 'choose text files' : `choose ${k} files`;
  }

  fileInput.addEventListener('change', () => { addFiles(fileInput.files); fileInput.value = ''; });
  drop.addEventListener('click', () => fileInput.click());
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); fileInput.click(); } });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); addFiles(e.dataTransfer.files); });
  select.addEventListener('change', choosePipeline);

  function buildForm() {
    const form = new FormData();
    const lines = kind() === 'text' ? texts.value.split('\n').filter((l) => l.trim()) : [];
    lines.forEach((line, i) => form.append('files', new File([line], `text-${i + 1}.txt`, { type: 'text/plain' })));
    for (const file of state.files) form.append('files', file, file.name);
    if (!lines.length && !state.files.length) throw new Error('add at least one input (a file, or a text)');
    form.append('keep_inputs', 'true');
    if (kind() === 'video' && (start.value || end.value || fps.value)) {
      const options = {};
      if (start.value || end.value) {
        options.interval = {};
        if (start.value) options.interval.start = Number(start.value);
        if (end.value) options.interval.end = Number(end.value);
      }
      if (fps.value) options.fps = Number(fps.value);
      form.append('options', JSON.stringify(options));
    }
    if (timeout.value) form.append('timeout_s', timeout.value);
    if (priority.value !== 'normal') form.append('priority', priority.value);
    if (webhook.value.trim()) {
      form.append('webhook', webhook.value.trim());
      const chosen = events.filter((b) => b.checked).map((b) => b.value);
      if (chosen.length) form.append('webhook_events', chosen.join(','));
    }
    if (metadata.value.trim()) {
      let parsed;
      try { parsed = JSON.parse(metadata.value); } catch (err) { throw new Error(`metadata is not JSON: ${err.message}`); }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('metadata must be a JSON object');
      form.append('metadata', JSON.stringify(parsed));
    }
    return form;
  }

  async function onSubmit(event) {
    event.preventDefault();
    status.className = 'form-status';
    let form;
    try { form = buildForm(); } catch (err) {
      status.className = 'form-status error';
      status.textContent = err.message;
      return;
    }
    submit.disabled = true;
    status.textContent = 'Submitting…';
    try {
      const job = await api(`/v1/pipelines/${encodeURIComponent(select.value)}/jobs`, { method: 'POST', body: form });
      clearPreviews();
      location.hash = `#/job/${encodeURIComponent(job.id)}`;
    } catch (err) {
      status.className = 'form-status error';
      status.textContent = `Not submitted: ${errorText(err)}`;
      submit.disabled = false;
    }
  }

  const formEl = h('form', { class: 'submit-form', novalidate: true, onsubmit: onSubmit },
    h('h2', {}, 'Submit a job'),
    field('Pipeline', select), about,
    h('section', { class: 'inputs', 'aria-label': 'Inputs' }, textsField, field('Files', fileInput), drop, fileList),
    video,
    h('details', { class: 'more' }, h('summary', {}, 'Deadline, priority, webhook, metadata'),
      field('Timeout (s)', timeout, 'Items not finished by then fail as expired.'),
      field('Priority', priority, 'High goes first into every batch; low still gets its share.'),
      field('Webhook URL', webhook, 'Receives the job\'s events by POST (Standard Webhooks).'), eventsBox,
      field('Metadata (JSON object)', metadata, 'Stored with the job and returned unchanged.')),
    h('div', { class: 'actions' }, submit), status);
  main.append(formEl);

  pipelines().then((all) => {
    select._pipelines = all;
    fill(select, ...all.map((p) => h('option', { value: p.name }, p.name)));
    if (all.some((p) => p.name === 'image-classify')) select.value = 'image-classify';
    choosePipeline();
    select.focus();
  }).catch((err) => {
    status.className = 'form-status error';
    status.textContent = `Cannot list pipelines: ${errorText(err)}`;
  });
  return { stop: clearPreviews };
}
