// Operators: accounts, keys, usage, tasks and webhooks, channels, prices, the audit log — all
// through the admin API (/admin/… behind the session proxy). Pages whose endpoints this gateway
// lacks say so instead of failing.
import { api, deliveriesTable, field, form, h, keyForm, money, t, table, toast, unavailable, when } from './core.js';
import { byDay, columns } from './chart.js';

const TABS = ['accounts', 'keys', 'usage', 'tasks', 'channels', 'prices', 'audit'];

export async function operators(view, sub) {
  const tab = TABS.includes(sub) ? sub : 'accounts';
  view.append(h('h1', {}, t('nav.operators')),
    h('nav', { class: 'tabs', 'aria-label': t('ops.sections') }, TABS.map((name) => h('a', {
      href: `#/operators/${name}`, 'aria-current': name === tab ? 'page' : false }, t(`ops.${name}`)))));
  const body = h('div', { class: 'ops' });
  view.append(body);
  await PAGES[tab](body);
}

async function optional(box, what, call) {
  try { return await call(); } catch (err) {
    if (err.status === 404 || err.status === 405) { box.append(unavailable(what)); return null; }
    box.append(h('p', { class: 'form-error', role: 'alert' }, err.message));
    return null;
  }
}

const PAGES = {
  async accounts(box) {
    const list = h('div', {});
    const detail = h('div', { class: 'detail', 'aria-live': 'polite' });
    const name = h('input', { type: 'text', name: 'name' });
    const balance = h('input', { type: 'text', name: 'balance', inputMode: 'decimal', value: '0' });
    const unlimited = h('input', { type: 'checkbox', name: 'unlimited' });
    async function draw() {
      const rows = (await api('admin/accounts?limit=1000')).data.data;
      list.replaceChildren(table(t('ops.accounts'), [
        [t('col.name'), (a) => a.name], [t('col.id'), (a) => h('code', {}, a.id)],
        [t('acct.balance'), (a) => (a.unlimited ? t('acct.unlimited') : h('span', { class: 'balance' }, money(a.balance)))],
        [t('col.created'), (a) => when(a.created_at)],
        [t('col.actions'), (a) => h('span', { class: 'actions' }, topUp(a), h('button', { type: 'button',
          onclick: () => check(a) }, t('ops.check', { name: a.name })))],
      ], rows));
    }
    function topUp(a) {
      const amount = h('input', { type: 'text', inputMode: 'decimal', size: 6, 'aria-label': t('ops.amount-for', { name: a.name }) });
      return form(t('ops.topup-for', { name: a.name }), [amount], t('ops.topup'), async () => {
        const r = (await api(`admin/accounts/${a.id}/topup`, { method: 'POST', json: { amount: amount.value } })).data;
        toast(t('ops.topped-up', { name: a.name, balance: money(r.balance) }));
        await draw();
      });
    }
    async function check(a) {
      const st = (await api(`admin/accounts/${a.id}`)).data;
      detail.replaceChildren(h('h2', {}, a.name), h('dl', {},
        h('dt', {}, t('acct.balance')), h('dd', {}, money(st.balance)),
        h('dt', {}, t('acct.held')), h('dd', {}, money(st.held)),
        h('dt', {}, t('ops.open-holds')), h('dd', {}, String(st.open_holds)),
        h('dt', {}, t('ops.ledger-sum')), h('dd', {}, money(st.ledger_sum)),
        h('dt', {}, t('ops.consistent')), h('dd', {}, st.consistent ? '✓' : '✗')));
    }
    box.append(h('h2', {}, t('ops.new-account')), form(t('ops.new-account'), [
      field(t('ops.account-name'), name, { param: 'name' }), field(t('ops.opening-balance'), balance, { param: 'balance' }),
      h('label', { class: 'tool' }, unlimited, t('ops.unlimited'))], t('ops.create-account'), async () => {
      await api('admin/accounts', { method: 'POST', json: { name: name.value, balance: balance.value || '0', unlimited: unlimited.checked } });
      toast(t('ops.created', { name: name.value }));
      name.value = '';
      await draw();
    }), list, detail);
    await draw();
  },

  async keys(box) {
    const accounts = (await api('admin/accounts?limit=1000')).data.data;
    const list = h('div', {});
    const shown = h('div', { 'aria-live': 'polite' });
    const account = h('select', { name: 'account_id' }, h('option', { value: '' }, t('ops.new-unlimited')),
      accounts.map((a) => h('option', { value: a.id }, `${a.name} (${a.id})`)));
    const owner = h('input', { type: 'checkbox', name: 'owner' });
    async function draw() {
      const rows = (await api('admin/keys')).data.data;
      list.replaceChildren(table(t('ops.keys'), [
        [t('col.name'), (k) => k.name], [t('acct.prefix'), (k) => h('code', {}, `${k.prefix}…`)],
        [t('col.account'), (k) => h('code', {}, k.account_id)], [t('acct.owner'), (k) => (k.owner ? '✓' : '')],
        [t('acct.models'), (k) => (k.models || [t('acct.all')]).join(', ')],
        ['rpm', (k) => (k.rpm ? String(k.rpm) : '–')], [t('acct.expires'), (k) => when(k.expires_at)],
        [t('col.status'), (k) => (k.revoked_at ? t('ops.revoked') : t('ops.active'))],
        [t('col.actions'), (k) => (k.revoked_at ? '' : h('button', { type: 'button', onclick: async () => {
          await api(`admin/keys/${k.id}/revoke`, { method: 'POST' });
          toast(t('ops.revoked'));
          await draw();
        } }, t('ops.revoke', { name: k.name })))],
      ], rows));
    }
    box.append(h('h2', {}, t('ops.new-key')), keyForm('admin/keys', shown, draw, [
      field(t('col.account'), account, { param: 'account_id' }), h('label', { class: 'tool' }, owner, t('ops.owner'))],
    (body) => {
      if (account.value) body.account_id = account.value;
      if (owner.checked) body.owner = true;
    }), shown, list);
    await draw();
  },

  async usage(box) {
    const accounts = (await api('admin/accounts?limit=1000')).data.data;
    const names = Object.fromEntries(accounts.map((a) => [a.id, a.name]));
    const who = h('select', {}, h('option', { value: '' }, t('acct.all')),
      accounts.map((a) => h('option', { value: a.id }, a.name)));
    const out = h('div', {});
    async function draw() {
      const since = Math.floor(Date.now() / 1000 - 30 * 86400);
      const u = (await api(`admin/usage?limit=500&since=${since}${who.value ? `&account_id=${who.value}` : ''}`)).data;
      const perAccount = new Map();
      for (const r of u.data) perAccount.set(names[r.account_id] || r.account_id, (perAccount.get(names[r.account_id] || r.account_id) || 0) + r.images);
      out.replaceChildren(
        h('div', { class: 'cards' },
          h('div', { class: 'card' }, h('span', {}, t('acct.requests')), h('strong', {}, String(u.totals.requests))),
          h('div', { class: 'card' }, h('span', {}, t('acct.images')), h('strong', { id: 'usage-images' }, String(u.totals.images))),
          h('div', { class: 'card' }, h('span', {}, t('ops.revenue')), h('strong', {}, money(u.totals.cost)))),
        h('div', { class: 'charts' },
          columns(t('acct.images-by-day'), byDay(u.data, (r) => r.images), { id: 'chart-day' }),
          columns(t('acct.images-by-model'), Object.entries(u.totals.by_model).map(([label, v]) => ({ label, value: v.images })),
            { id: 'chart-model' }),
          columns(t('ops.images-by-account'), [...perAccount].map(([label, value]) => ({ label, value })), { id: 'chart-account' })),
        table(t('acct.history'), [[t('col.time'), (r) => when(r.created_at)], [t('col.account'), (r) => names[r.account_id] || r.account_id],
          [t('col.model'), (r) => r.model], [t('col.status'), (r) => r.status], [t('col.images'), (r) => String(r.images)],
          [t('col.cost'), (r) => money(r.cost)], [t('col.latency'), (r) => `${r.latency_ms} ms`]], u.data.slice(0, 50)));
    }
    who.addEventListener('change', draw);
    box.append(field(t('col.account'), who), out);
    await draw();
  },

  async tasks(box) {
    const status = h('select', {}, h('option', { value: '' }, t('acct.all')),
      ['QUEUED', 'IN_PROGRESS', 'SUCCESS', 'FAILURE'].map((s) => h('option', { value: s }, s)));
    const list = h('div', {});
    const detail = h('div', { class: 'detail', 'aria-live': 'polite' });
    const hooks = h('div', {});
    async function inspect(id) {
      const task = (await api(`admin/tasks/${id}`)).data;
      const { webhooks, ...rest } = task;
      const retry = (d) => (d.status === 'delivered' ? '' : h('button', { type: 'button', onclick: async () => {
        try {
          await api(`admin/webhooks/deliveries/${d.id}/retry`, { method: 'POST' });
          toast(t('ops.retried'));
        } catch (err) { toast(err.message); }
        await inspect(id);
      } }, t('ops.retry-delivery', { id: d.id.slice(4, 12) })));
      detail.replaceChildren(h('h2', {}, t('acct.task-of', { id: id.slice(0, 8) })),
        h('pre', {}, JSON.stringify(rest, null, 2)), deliveriesTable(webhooks, retry));
    }
    async function draw() {
      const rows = (await api(`admin/tasks?limit=100${status.value ? `&status=${status.value}` : ''}`)).data.data;
      list.replaceChildren(table(t('ops.tasks'), [
        [t('col.time'), (r) => when(r.submit_time)], [t('col.id'), (r) => h('code', {}, r.task_id.slice(0, 12))],
        [t('col.model'), (r) => r.model], [t('col.status'), (r) => r.status], [t('acct.progress'), (r) => `${r.progress}%`],
        [t('acct.fail-reason'), (r) => r.fail_reason || ''],
        [t('col.actions'), (r) => h('button', { type: 'button', onclick: () => inspect(r.task_id) },
          t('ops.inspect-task', { id: r.task_id.slice(0, 8) }))]], rows));
      const endpoints = (await api('admin/webhooks')).data.data;
      hooks.replaceChildren(h('h2', {}, t('ops.webhooks')), table(t('ops.webhooks'), [
        ['URL', (e) => e.url], [t('ops.failures'), (e) => String(e.consecutive_failures)],
        [t('col.status'), (e) => (e.paused ? t('ops.paused') : t('ops.retrying'))], [t('ops.last-error'), (e) => e.last_error || ''],
        [t('col.actions'), (e) => h('button', { type: 'button', onclick: async () => {
          const r = (await api('admin/webhooks/resume', { method: 'POST', json: { url: e.url } })).data;
          toast(t('ops.resumed', { n: r.pending_deliveries }));
          await draw();
        } }, t('ops.retry'))]], endpoints, t('ops.no-failing-webhooks')));
    }
    status.addEventListener('change', draw);
    box.append(field(t('col.status'), status), list, detail, hooks);
    await draw();
  },

  async channels(box) {
    let editChannel = () => {}; // set once the form exists
    const list = h('div', {});
    const result = h('pre', { class: 'detail', 'aria-live': 'polite' });
    const act = (label, call) => h('button', { type: 'button', onclick: async () => {
      try { result.textContent = JSON.stringify((await call()).data, null, 2); await draw(); } catch (err) { result.textContent = err.message; }
    } }, label);
    const path = (c) => `admin/channels/${encodeURIComponent(c.name)}`;
    const draw = async () => {
      const got = await optional(list, t('ops.channels'), () => api('admin/channels'));
      if (!got) return false;
      const hl = (c) => c.health || {};
      list.replaceChildren(table(t('ops.channels'), [
        [t('col.name'), (c) => c.name], [t('ops.provider'), (c) => c.provider],
        [t('acct.models'), (c) => (c.serves || Object.keys(c.models || {})).join(', ')],
        [t('ops.source'), (c) => (c.read_only ? t('ops.from-config') : t('ops.from-db'))],
        [t('ops.health'), (c) => (c.disabled ? t('ops.disabled') : String(hl(c).state ?? '–'))],
        [t('ops.success-rate'), (c) => (hl(c).success_rate == null ? '–' : `${Math.round(hl(c).success_rate * 100)}%`)],
        [t('col.latency'), (c) => (hl(c).latency_ms == null ? '–' : `${hl(c).latency_ms} ms`)],
        [t('ops.in-flight'), (c) => String(hl(c).inflight ?? 0)],
        [t('ops.last-error'), (c) => hl(c).last_error || ''],
        [t('col.actions'), (c) => h('span', { class: 'actions' },
          act(t('ops.test', { name: c.name }), () => api(`${path(c)}/test`, { method: 'POST' })),
          c.read_only ? null : h('button', { type: 'button', onclick: () => editChannel(c) }, t('ops.edit', { name: c.name })),
          c.read_only ? null : act(c.disabled ? t('ops.enable') : t('ops.disable'),
            () => api(path(c), { method: 'PATCH', json: { disabled: !c.disabled } })),
          c.read_only ? null : act(t('ops.delete'), () => api(path(c), { method: 'DELETE' })))],
      ], got.data.data || []));
      return true;
    };
    box.append(list, result);
    if (!(await draw())) return;
    const inputs = Object.fromEntries(['name', 'provider', 'base_url', 'api_key', 'models', 'priority', 'weight'].map((k) =>
      [k, h('input', { type: k === 'api_key' ? 'password' : 'text', name: k, autocomplete: 'off',
        placeholder: k === 'models' ? '{"public-name": "upstream-model"}' : '' })]));
    // One form creates a channel, or edits the database channel whose "Edit" was clicked (PATCH
    // with the fields given; an empty API key keeps the stored one).
    let editing = null;
    const heading = h('h2', {}, t('ops.new-channel'));
    const cancel = h('button', { type: 'button', hidden: true }, t('ops.cancel'));
    const channelForm = form(t('ops.new-channel'),
      Object.entries(inputs).map(([k, el]) => field(k, el, { param: k })), t('ops.create-channel'), async () => {
        const body = {};
        for (const [k, el] of Object.entries(inputs)) {
          if (!el.value || (editing && k === 'name')) continue;
          if (k === 'models') {
            try { body.models = JSON.parse(el.value); } catch { throw Object.assign(new Error(t('ops.models-json')), { param: 'models' }); }
          } else body[k] = ['priority', 'weight'].includes(k) ? Number(el.value) : el.value;
        }
        if (editing) await api(path(editing), { method: 'PATCH', json: body });
        else await api('admin/channels', { method: 'POST', json: body });
        toast(t(editing ? 'ops.saved' : 'ops.created', { name: editing?.name || body.name }));
        edit(null);
        await draw();
      });
    const submit = channelForm.querySelector('button[type=submit]');
    function edit(c) {
      editing = c;
      for (const [k, el] of Object.entries(inputs)) {
        const v = c && k !== 'api_key' ? c[k] : '';
        el.value = v === undefined || v === null ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v));
      }
      inputs.name.readOnly = !!c;
      heading.textContent = c ? t('ops.edit-channel', { name: c.name }) : t('ops.new-channel');
      submit.textContent = c ? t('ops.save-channel') : t('ops.create-channel');
      cancel.hidden = !c;
      if (c) inputs.provider.focus();
    }
    editChannel = edit;
    cancel.addEventListener('click', () => edit(null));
    channelForm.append(cancel);
    box.append(heading, channelForm);
  },

  async prices(box) {
    const list = h('div', {});
    const draw = async () => {
      const got = await optional(list, t('ops.prices'), () => api('admin/prices'));
      if (!got) return false;
      const rest = (p) => Object.entries(p).filter(([k, v]) => !['object', 'model', 'source'].includes(k) && v !== null
        && !(typeof v === 'object' && !Object.keys(v).length)).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
      list.replaceChildren(table(t('ops.prices'), [
        [t('col.model'), (p) => p.model], [t('ops.price'), rest],
        [t('ops.source'), (p) => (p.source === 'database' ? t('ops.from-db') : t('ops.from-config'))],
        [t('col.actions'), (p) => (p.source === 'database' ? h('button', { type: 'button', onclick: async () => {
          await api(`admin/prices/${encodeURIComponent(p.model)}`, { method: 'DELETE' });
          await draw();
        } }, t('ops.reset-price', { model: p.model })) : '')],
      ], got.data.data || [], t('ops.all-free')));
      return true;
    };
    box.append(list);
    if (!(await draw())) return;
    const model = h('input', { type: 'text', name: 'model' });
    const perImage = h('input', { type: 'text', name: 'per_image', inputMode: 'decimal' });
    box.append(h('h2', {}, t('ops.set-price')), form(t('ops.set-price'), [field(t('col.model'), model, { param: 'model' }),
      field(t('ops.per-image'), perImage, { param: 'per_image' })], t('ops.save'), async () => {
      await api(`admin/prices/${encodeURIComponent(model.value.trim())}`, { method: 'PUT', json: { per_image: perImage.value } });
      await draw();
    }));
  },

  async audit(box) {
    const list = h('div', {});
    const more = h('button', { type: 'button', hidden: true }, t('next'));
    const rows = [];
    let before = null;
    const draw = async () => {
      const got = await optional(list, t('ops.audit'), () => api(`admin/audit?limit=50${before ? `&before=${before}` : ''}`));
      if (!got) return;
      rows.push(...got.data.data);
      before = got.data.next_before;
      more.hidden = !got.data.has_more;
      list.replaceChildren(table(t('ops.audit'), [
        [t('col.time'), (e) => when(e.at)], [t('ops.actor'), (e) => e.actor], [t('ops.action'), (e) => e.action],
        [t('ops.target'), (e) => e.target || ''], [t('ops.detail'), (e) => (e.detail ? JSON.stringify(e.detail) : '')],
      ], rows));
    };
    more.addEventListener('click', draw);
    box.append(list, more);
    await draw();
  },
};
