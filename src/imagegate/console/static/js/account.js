// My account: balance, usage by day and model, request history with paging and filter, a task's
// details, the key and its webhook secret (revealed on click).
import { api, field, h, money, t, table, when } from './core.js';
import { byDay, columns } from './chart.js';

export async function account(view) {
  view.append(h('h1', {}, t('nav.account')));
  const top = h('section', { class: 'cards', 'aria-label': t('acct.balance') });
  const charts = h('section', { class: 'charts', 'aria-label': t('acct.usage') });
  const history = h('section', { 'aria-label': t('acct.history') });
  const taskBox = h('section', { 'aria-label': t('acct.task') });
  const keyBox = h('section', { 'aria-label': t('acct.key') });
  view.append(top, charts, history, taskBox, keyBox);

  let usage;
  try {
    usage = (await api('v1/usage?limit=500&since=' + Math.floor(Date.now() / 1000 - 30 * 86400))).data;
  } catch (err) {
    view.append(h('p', { class: 'notice', role: 'alert' }, err.message));
    return;
  }
  const card = (label, value, id) => h('div', { class: 'card' }, h('span', {}, label), h('strong', { id }, value));
  top.append(
    card(t('acct.balance'), usage.unlimited ? t('acct.unlimited') : money(usage.balance), 'balance'),
    card(t('acct.held'), money(usage.held), 'held'),
    card(t('acct.requests'), String(usage.totals.requests)),
    card(t('acct.images'), String(usage.totals.images)),
    card(t('acct.spent'), money(usage.totals.cost)));
  const byModel = Object.entries(usage.totals.by_model).map(([label, v]) => ({ label, value: v.images }));
  charts.append(
    columns(t('acct.images-by-day'), byDay(usage.data, (r) => r.images), { id: 'chart-day' }),
    columns(t('acct.images-by-model'), byModel, { id: 'chart-model' }));

  // History: pages of 20, newest first; filter by model and status on the page read.
  const modelFilter = h('select', {}, h('option', { value: '' }, t('acct.all')),
    Object.keys(usage.totals.by_model).map((m) => h('option', { value: m }, m)));
  const statusFilter = h('select', {}, h('option', { value: '' }, t('acct.all')),
    h('option', { value: 'success' }, 'success'), h('option', { value: 'failed' }, 'failed'));
  const list = h('div', {});
  const cursors = [null];
  const prev = h('button', { type: 'button' }, t('prev'));
  const next = h('button', { type: 'button' }, t('next'));
  let page = 0;
  async function drawPage() {
    const before = cursors[page];
    const body = (await api(`v1/usage?limit=20${before ? `&before=${before}` : ''}`)).data;
    cursors[page + 1] = body.next_before;
    const rows = body.data.filter((r) => (!modelFilter.value || r.model === modelFilter.value)
      && (!statusFilter.value || (statusFilter.value === 'success') === (r.status === 'success')));
    list.replaceChildren(table(t('acct.history'), [
      [t('col.time'), (r) => when(r.created_at)], [t('col.model'), (r) => r.model], [t('col.surface'), (r) => r.surface],
      [t('col.status'), (r) => r.status], [t('col.images'), (r) => String(r.images)], [t('col.cost'), (r) => money(r.cost)],
      [t('col.latency'), (r) => `${r.latency_ms} ms`], [t('col.request'), (r) => h('code', {}, r.request_id.slice(0, 12))],
    ], rows));
    prev.disabled = page === 0;
    next.disabled = !body.has_more;
  }
  prev.addEventListener('click', () => { page -= 1; drawPage(); });
  next.addEventListener('click', () => { page += 1; drawPage(); });
  modelFilter.addEventListener('change', drawPage);
  statusFilter.addEventListener('change', drawPage);
  history.append(h('h2', {}, t('acct.history')),
    h('div', { class: 'row' }, field(t('col.model'), modelFilter), field(t('col.status'), statusFilter)),
    list, h('div', { class: 'row' }, prev, next));
  await drawPage();

  // A task by id: status, progress, result thumbnails.
  const taskId = h('input', { type: 'text', name: 'task_id', autocomplete: 'off' });
  const taskOut = h('div', { class: 'task-out' });
  const taskForm = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const task = (await api(`v1/images/tasks/${encodeURIComponent(taskId.value.trim())}`)).data.data;
      const images = task.data?.data || [];
      taskOut.replaceChildren(h('dl', {},
        h('dt', {}, t('col.status')), h('dd', {}, task.status),
        h('dt', {}, t('acct.progress')), h('dd', {}, task.progress),
        h('dt', {}, t('col.time')), h('dd', {}, when(task.submit_time)),
        task.fail_reason ? [h('dt', {}, t('acct.fail-reason')), h('dd', {}, task.fail_reason)] : null),
      h('div', { class: 'thumbs' }, images.map((i) => h('img', { src: i.url || `data:image/png;base64,${i.b64_json}`,
        alt: t('acct.task-image'), class: 'thumb' }))));
    } catch (err) { taskOut.replaceChildren(h('p', { role: 'alert', class: 'form-error' }, err.message)); }
  } }, field(t('acct.task-id'), taskId, { param: 'task_id' }), h('button', { type: 'submit' }, t('acct.look-up')));
  taskBox.append(h('h2', {}, t('acct.task')), taskForm, taskOut);

  // The key, its webhook secret behind a click.
  try {
    const key = (await api('v1/keys/self')).data;
    const secret = h('code', { id: 'webhook-secret' }, '••••••••');
    const reveal = h('button', { type: 'button', onclick: () => {
      const shown = secret.textContent !== key.webhook_secret;
      secret.textContent = shown ? key.webhook_secret : '••••••••';
      reveal.textContent = shown ? t('acct.hide') : t('acct.reveal');
    } }, t('acct.reveal'));
    keyBox.append(h('h2', {}, t('acct.key')), h('dl', {},
      h('dt', {}, t('col.name')), h('dd', {}, key.name),
      h('dt', {}, t('acct.prefix')), h('dd', {}, h('code', {}, `${key.prefix}…`)),
      h('dt', {}, t('acct.models')), h('dd', {}, key.models ? key.models.join(', ') : t('acct.all')),
      h('dt', {}, 'rpm'), h('dd', {}, key.rpm ? String(key.rpm) : '–'),
      h('dt', {}, t('acct.expires')), h('dd', {}, when(key.expires_at)),
      h('dt', {}, t('acct.webhook-secret')), h('dd', {}, secret, ' ', reveal)));
  } catch (err) { keyBox.append(h('p', { class: 'form-error' }, err.message)); }
}
