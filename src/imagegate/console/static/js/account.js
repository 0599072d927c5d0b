// My account: balance, usage by day and model, request history with paging and filter, the
// account's tasks with thumbnails and their details (webhook deliveries included), the key and its
// webhook secret (revealed on click), and — for an owner key — the account's keys (create, revoke).
import { api, deliveriesTable, field, h, keyForm, money, t, table, toast, when } from './core.js';
import { byDay, columns } from './chart.js';

export async function account(view) {
  view.append(h('h1', {}, t('nav.account')));
  const top = h('section', { class: 'cards', 'aria-label': t('acct.balance') });
  const charts = h('section', { class: 'charts', 'aria-label': t('acct.usage') });
  const history = h('section', { 'aria-label': t('acct.history') });
  const taskBox = h('section', { 'aria-label': t('acct.task') });
  const keyBox = h('section', { 'aria-label': t('acct.key') });
  view.append(top, charts, history, taskBox, keyBox);
  // Thumbnails of stored images; one removed by retention since is dropped, not shown broken.
  const thumbs = (images, alt) => h('span', { class: 'thumbs' }, images.map((i) => h('img', {
    src: i.url, alt, class: 'thumb', loading: 'lazy', onerror: (e) => e.target.remove() })));

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

  // History: pages of 20, newest first, filtered by model and outcome by the API.
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
    const filters = `${modelFilter.value ? `&model=${encodeURIComponent(modelFilter.value)}` : ''}`
      + `${statusFilter.value ? `&status=${statusFilter.value}` : ''}`;
    const body = (await api(`v1/usage?limit=20${filters}${before ? `&before=${before}` : ''}`)).data;
    cursors[page + 1] = body.next_before;
    const rows = body.data;
    list.replaceChildren(table(t('acct.history'), [
      [t('col.time'), (r) => when(r.created_at)], [t('col.model'), (r) => r.model], [t('col.surface'), (r) => r.surface],
      [t('col.status'), (r) => r.status],
      [t('col.images'), (r) => (r.image_urls.length ? thumbs(r.image_urls.map((url) => ({ url })), t('acct.request-image')) : String(r.images))],
      [t('col.cost'), (r) => money(r.cost)],
      [t('col.latency'), (r) => `${r.latency_ms} ms`], [t('col.request'), (r) => h('code', {}, r.request_id.slice(0, 12))],
    ], rows));
    prev.disabled = page === 0;
    next.disabled = !body.has_more;
  }
  prev.addEventListener('click', () => { page -= 1; drawPage(); });
  next.addEventListener('click', () => { page += 1; drawPage(); });
  const refilter = () => { page = 0; cursors.length = 1; drawPage(); };
  modelFilter.addEventListener('change', refilter);
  statusFilter.addEventListener('change', refilter);
  history.append(h('h2', {}, t('acct.history')),
    h('div', { class: 'row' }, field(t('col.model'), modelFilter), field(t('col.status'), statusFilter)),
    list, h('div', { class: 'row' }, prev, next));
  await drawPage();

  // Tasks: the account's, newest first, pages of 10, with thumbnails; details show the webhooks.
  const taskStatus = h('select', {}, h('option', { value: '' }, t('acct.all')),
    ['IN_PROGRESS', 'SUCCESS', 'FAILURE'].map((v) => h('option', { value: v }, v)));
  const taskList = h('div', {});
  const taskOut = h('div', { class: 'task-out', 'aria-live': 'polite' });
  const taskCursors = [null];
  const taskPrev = h('button', { type: 'button' }, t('prev'));
  const taskNext = h('button', { type: 'button' }, t('next'));
  let taskPage = 0;
  async function drawTasks() {
    const before = taskCursors[taskPage];
    const body = (await api(`v1/images/tasks?limit=10${taskStatus.value ? `&status=${taskStatus.value}` : ''}`
      + `${before ? `&before=${before}` : ''}`)).data;
    taskCursors[taskPage + 1] = body.next_before;
    taskList.replaceChildren(table(t('acct.tasks'), [
      [t('col.time'), (r) => when(r.submit_time)], [t('col.id'), (r) => h('code', {}, r.task_id.slice(0, 12))],
      [t('col.model'), (r) => r.model], [t('col.status'), (r) => r.status], [t('acct.progress'), (r) => r.progress],
      [t('col.images'), (r) => thumbs(r.images, t('acct.task-image'))],
      [t('col.actions'), (r) => h('button', { type: 'button', onclick: () => showTask(r.task_id) },
        t('acct.details-of', { id: r.task_id.slice(0, 8) }))],
    ], body.data, t('acct.no-tasks')));
    taskPrev.disabled = taskPage === 0;
    taskNext.disabled = !body.has_more;
  }
  async function showTask(id) {
    try {
      const [task, hooks] = await Promise.all([api(`v1/images/tasks/${encodeURIComponent(id)}`),
        api(`v1/images/tasks/${encodeURIComponent(id)}/webhooks`)]);
      const got = task.data.data;
      const images = got.data?.data || [];
      taskOut.replaceChildren(h('h3', {}, t('acct.task-of', { id: got.task_id.slice(0, 8) })), h('dl', {},
        h('dt', {}, t('col.status')), h('dd', {}, got.status),
        h('dt', {}, t('acct.progress')), h('dd', {}, got.progress),
        h('dt', {}, t('col.time')), h('dd', {}, when(got.submit_time)),
        got.fail_reason ? [h('dt', {}, t('acct.fail-reason')), h('dd', {}, got.fail_reason)] : null),
      h('div', { class: 'thumbs' }, images.map((i) => h('img', { src: i.url || `data:image/png;base64,${i.b64_json}`,
        alt: t('acct.task-image'), class: 'thumb' }))),
      deliveriesTable(hooks.data.data));
    } catch (err) { taskOut.replaceChildren(h('p', { role: 'alert', class: 'form-error' }, err.message)); }
  }
  taskPrev.addEventListener('click', () => { taskPage -= 1; drawTasks(); });
  taskNext.addEventListener('click', () => { taskPage += 1; drawTasks(); });
  taskStatus.addEventListener('change', () => { taskPage = 0; drawTasks(); });
  const taskId = h('input', { type: 'text', name: 'task_id', autocomplete: 'off' });
  const taskForm = h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); showTask(taskId.value.trim()); } },
    field(t('acct.task-id'), taskId, { param: 'task_id' }), h('button', { type: 'submit' }, t('acct.look-up')));
  taskBox.append(h('h2', {}, t('acct.tasks')), h('div', { class: 'row' }, field(t('col.status'), taskStatus)),
    taskList, h('div', { class: 'row' }, taskPrev, taskNext), taskForm, taskOut);
  await drawTasks();

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
    if (key.owner) keyBox.append(await ownerKeys());
  } catch (err) { keyBox.append(h('p', { class: 'form-error' }, err.message)); }
}

// An owner key manages its account's keys: the same API any client of /v1/keys uses.
async function ownerKeys() {
  const list = h('div', {});
  const shown = h('div', { 'aria-live': 'polite' });
  async function draw() {
    const rows = (await api('v1/keys')).data.data;
    list.replaceChildren(table(t('acct.account-keys'), [
      [t('col.name'), (k) => (k.self ? `${k.name} (${t('acct.this-key')})` : k.name)],
      [t('acct.prefix'), (k) => h('code', {}, `${k.prefix}…`)], [t('acct.owner'), (k) => (k.owner ? '✓' : '')],
      [t('acct.models'), (k) => (k.models || [t('acct.all')]).join(', ')], ['rpm', (k) => (k.rpm ? String(k.rpm) : '–')],
      [t('acct.expires'), (k) => when(k.expires_at)],
      [t('col.status'), (k) => (k.revoked_at ? t('ops.revoked') : t('ops.active'))],
      [t('col.actions'), (k) => (k.revoked_at || k.self ? '' : h('button', { type: 'button', onclick: async () => {
        try {
          await api(`v1/keys/${encodeURIComponent(k.id)}/revoke`, { method: 'POST' });
          toast(t('ops.revoked'));
        } catch (err) { toast(err.message); }
        await draw();
      } }, t('ops.revoke', { name: k.name })))],
    ], rows));
  }
  await draw();
  return h('section', { 'aria-label': t('acct.account-keys') }, h('h2', {}, t('acct.account-keys')),
    h('p', { class: 'muted' }, t('acct.owner-help')), keyForm('v1/keys', shown, draw), shown, list);
}
