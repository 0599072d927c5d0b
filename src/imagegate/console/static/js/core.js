// The console's small toolkit: translations, DOM building, the API through the session proxy.
let strings = {};
let fallback = {};

export async function loadLanguage(lang) {
  const get = async (l) => (await fetch(`/console/static/i18n/${l}.json`)).json();
  if (!Object.keys(fallback).length) fallback = await get('en');
  strings = lang === 'en' ? fallback : await get(lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  localStorage.setItem('ig-lang', lang);
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

export function t(key, vars = {}) {
  const s = strings[key] ?? fallback[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

// h('button', {type: 'button', onclick}, 'text', child…): attributes, properties and children.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k in el && !k.includes('-') && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let uid = 0;
// A labelled control: <label for>…</label><input id> plus an error slot for the API's `param`.
export function field(label, control, { param, hint } = {}) {
  control.id ||= `f${++uid}`;
  const err = h('p', { class: 'field-error', id: `${control.id}-err`, role: 'alert' });
  control.setAttribute('aria-describedby', err.id);
  const wrap = h('div', { class: 'field', 'data-param': param || '' },
    h('label', { for: control.id }, label), control, hint ? h('small', {}, hint) : null, err);
  return wrap;
}

export function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)ig_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.param = body?.error?.param || null;
    this.code = body?.error?.code || null;
  }
}

// Every page talks to the gateway's own API through /console/api/… (the session adds the key).
export async function api(path, { method = 'GET', json, form, signal, raw = false } = {}) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf();
  let body;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  else if (form) body = form;
  const r = await fetch(`/console/api/${path}`, { method, headers, body, signal, credentials: 'same-origin' });
  if (raw && r.ok) return r;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { raw: text }; }
  if (r.status === 401 && !path.startsWith('v1/images/')) document.dispatchEvent(new CustomEvent('ig:signed-out'));
  if (!r.ok) throw new ApiError(r.status, data);
  return { data, headers: r.headers };
}

// Show an API error next to the field its `param` names (image[0] → image), else in `general`.
export function showError(root, err, general) {
  for (const slot of root.querySelectorAll('.field-error')) slot.textContent = '';
  for (const f of root.querySelectorAll('.field.invalid')) f.classList.remove('invalid');
  if (general) general.textContent = '';
  if (!err) return;
  const message = err.message || String(err);
  const names = err.param ? [err.param, err.param.replace(/\[\d+\]$|\..*$/, '')] : [];
  for (const name of names) {
    const f = name && [...root.querySelectorAll(`.field[data-param="${CSS.escape(name)}"]`)]
      .find((el) => !el.closest('[hidden]'));
    if (f) {
      f.classList.add('invalid');
      f.querySelector('.field-error').textContent = message;
      f.querySelector('input,select,textarea')?.focus();
      return;
    }
  }
  if (general) general.textContent = message;
}

export function toast(message) {
  const el = document.getElementById('toast');
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.textContent = ''; }, 4000);
}

export function money(s) { return s === undefined || s === null ? '–' : String(s).replace(/(\.\d\d\d*?)0+$/, '$1'); }
export function when(unix) { return unix ? new Date(unix * 1000).toLocaleString(document.documentElement.lang) : '–'; }

// A table from rows: columns = [[header, row => cell], …].
export function table(caption, columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || t('empty'));
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map(([name]) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(row))))))));
}

export function unavailable(what) {
  return h('p', { class: 'notice' }, t('unavailable', { what }));
}

// A form that shows the API's error next to the field it names (or below the form).
export function form(label, fields, submitLabel, onSubmit) {
  const general = h('p', { class: 'form-error', role: 'alert' });
  const el = h('form', { class: 'inline-form', novalidate: true, 'aria-label': label }, ...fields,
    h('button', { type: 'submit', class: 'primary' }, submitLabel), general);
  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(el, null, general);
    try { await onSubmit(); } catch (err) { showError(el, err, general); }
  });
  return el;
}

// "New key" (an operator's, or an owner key's for its own account): name, models, rpm, expiry;
// `more` adds fields and `fill(body)` their values. The new key is shown once, in `shown`.
export function keyForm(path, shown, redraw, more = [], fill = () => {}) {
  const name = h('input', { type: 'text', name: 'name' });
  const models = h('input', { type: 'text', name: 'models', placeholder: 'imagegate-shapes, gpt-image-1' });
  const rpm = h('input', { type: 'number', name: 'rpm', min: 1 });
  const expires = h('input', { type: 'text', name: 'expires', placeholder: '30d' });
  return form(t('ops.new-key'), [field(t('ops.key-name'), name, { param: 'name' }), ...more,
    field(t('acct.models'), models, { param: 'models' }), field('rpm', rpm, { param: 'rpm' }),
    field(t('acct.expires'), expires, { param: 'expires' })], t('ops.create-key'), async () => {
    const body = { name: name.value };
    if (models.value.trim()) body.models = models.value.split(',').map((m) => m.trim()).filter(Boolean);
    if (rpm.value) body.rpm = Number(rpm.value);
    if (expires.value) body.expires = expires.value;
    fill(body);
    const made = (await api(path, { method: 'POST', json: body })).data;
    shown.replaceChildren(h('div', { class: 'notice' }, h('p', {}, t('ops.key-once')),
      h('code', { id: 'new-key' }, made.key)));
    name.value = '';
    await redraw();
  });
}

// A task's webhook deliveries; `action(d)` adds a cell (the operator's retry button).
export function deliveriesTable(rows, action) {
  const columns = [['URL', (d) => d.url], [t('col.status'), (d) => (d.paused ? `${d.status} (${t('ops.paused')})` : d.status)],
    [t('col.attempts'), (d) => String(d.attempts)], [t('acct.last-answer'), (d) => (d.last_status ? `HTTP ${d.last_status}` : '–')],
    [t('ops.last-error'), (d) => d.last_error || ''], [t('acct.next-attempt'), (d) => when(d.next_attempt_at)]];
  if (action) columns.push([t('col.actions'), action]);
  return h('section', { 'aria-label': t('acct.webhooks') }, h('h3', {}, t('acct.webhooks')),
    table(t('acct.webhooks'), columns, rows, t('acct.no-webhooks')));
}
