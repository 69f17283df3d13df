// The console's shell: the views by URL hash (#/submit, #/job/<id>, #/jobs, #/system), the API
// key field and the prompt a 401 brings up. Each view is a module: render(main, arg) returns
// an object whose stop() ends its timers and streams when another view opens.

import { apiKey, pipelines, setApiKey } from './api.js';
import { fill } from './dom.js';
import { renderJob } from './job.js';
import { renderJobs } from './jobs.js';
import { renderSubmit } from './submit.js';
import { renderSystem } from './system.js';

const VIEWS = { submit: renderSubmit, job: renderJob, jobs: renderJobs, system: renderSystem };
let current = null;

function parseHash() {
  const [, name = 'submit', ...rest] = (location.hash || '#/submit').split('/');
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : null;
  return VIEWS[name] ? { name, arg } : { name: 'submit', arg: null };
}

function route() {
  const { name, arg } = parseHash();
  if (current && current.stop) current.stop();
  const main = document.getElementById('main');
  fill(main);
  main.dataset.view = name;
  for (const link of document.querySelectorAll('.tabs a[data-view]')) {
    const here = link.dataset.view === name || (name === 'job' && link.dataset.view === 'jobs');
    if (here) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  current = VIEWS[name](main, arg) || null;
}

function showPrompt(reason) {
  const prompt = document.getElementById('auth-prompt');
  document.getElementById('auth-reason').textContent = reason ? `(${reason})` : '';
  prompt.hidden = false;
  document.getElementById('api-key').setAttribute('aria-invalid', 'true');
}

function hidePrompt() {
  document.getElementById('auth-prompt').hidden = true;
  document.getElementById('api-key').removeAttribute('aria-invalid');
}

function setupKey() {
  const form = document.getElementById('key-form');
  const input = document.getElementById('api-key');
  input.value = apiKey();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
  });
  document.getElementById('key-forget').addEventListener('click', () => {
    input.value = '';
    setApiKey('');
  });
  window.addEventListener('dlpipe:key', () => {
    hidePrompt();
    pipelines({ fresh: true }).catch(() => {});
    route();
  });
  window.addEventListener('dlpipe:unauthorized', (event) => showPrompt(event.detail));
  window.addEventListener('dlpipe:authorized', hidePrompt);
}

function start() {
  setupKey();
  window.addEventListener('hashchange', route);
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
