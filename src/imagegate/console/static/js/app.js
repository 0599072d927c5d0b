// The console's shell: language, sign-in and out, and the pages behind #/….
import { csrf, field, h, loadLanguage, showError, t } from './core.js';
import { account } from './account.js';
import { operators } from './operators.js';
import { playground } from './playground.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const signout = document.getElementById('signout');
const lang = document.getElementById('lang');
let session = null;

async function whoAmI() {
  const r = await fetch('/console/session', { credentials: 'same-origin' });
  return r.ok ? r.json() : null;
}

function signInPage() {
  const input = h('input', { type: 'password', name: 'credential', autocomplete: 'current-password', required: true });
  const general = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'signin', novalidate: true, 'aria-label': t('signin.title') },
    h('h1', {}, t('signin.title')), h('p', { class: 'muted' }, t('signin.help')),
    field(t('signin.key'), input, { param: 'credential', hint: t('signin.hint') }),
    h('button', { type: 'submit', class: 'primary' }, t('signin.button')), general);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(form, null, general);
    const r = await fetch('/console/session', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ credential: input.value }), credentials: 'same-origin' });
    input.value = ''; // the key lives on only in the HttpOnly session cookie
    if (!r.ok) {
      const body = await r.json().catch(() => null);
      showError(form, { message: body?.error?.message || t('signin.failed'), param: 'credential' }, general);
      return;
    }
    session = await r.json();
    const home = session.role === 'operator' ? '#/operators' : '#/playground';
    if (location.hash === home) route();
    else location.hash = home; // hashchange draws it
  });
  view.replaceChildren(form);
  input.focus();
}

async function route() {
  session ??= await whoAmI();
  nav.hidden = !session;
  signout.hidden = !session;
  if (!session) { signInPage(); return; }
  for (const a of nav.querySelectorAll('a')) a.hidden = a.dataset.role && a.dataset.role !== session.role;
  const [page, sub] = location.hash.replace(/^#\/?/, '').split('/');
  const target = page || (session.role === 'operator' ? 'operators' : 'playground');
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${target}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // A fresh container per visit: a page still loading for an earlier visit draws into a detached one.
  const here = h('div', { class: 'page' });
  view.replaceChildren(here);
  if (target === 'operators' && session.role !== 'operator') {
    here.append(h('h1', {}, t('nav.operators')), h('p', { class: 'notice', role: 'alert' }, t('ops.forbidden')));
    return;
  }
  if (target !== 'operators' && session.role === 'operator') {
    here.append(h('p', { class: 'notice' }, t('ops.callers-only')));
    return;
  }
  const pages = { playground, account, operators };
  await (pages[target] || playground)(here, sub);
  view.focus({ preventScroll: true });
}

signout.addEventListener('click', async () => {
  await fetch('/console/session', { method: 'DELETE', headers: { 'X-CSRF-Token': csrf() }, credentials: 'same-origin' });
  session = null;
  history.replaceState(null, '', '/console/');
  route();
});
document.addEventListener('ig:signed-out', () => { // a revoked key or an expired session
  session = null;
  nav.hidden = true;
  signout.hidden = true;
  signInPage();
});
window.addEventListener('hashchange', route);
lang.addEventListener('change', async () => { await loadLanguage(lang.value); route(); });

const chosen = localStorage.getItem('ig-lang') || (navigator.language.startsWith('zh') ? 'zh' : 'en');
lang.value = chosen;
loadLanguage(chosen).then(route);
