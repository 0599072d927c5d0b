// The playground: pick a model, see only the controls it accepts, generate or edit, watch a task,
// stream partial images, and loop: a result → "Edit this" / "Use as reference".
import { api, ApiError, csrf, field, h, money, showError, t, toast } from './core.js';
import { MaskPainter } from './mask.js';

const EXAMPLES = ['example.1', 'example.2', 'example.3', 'example.4'];
const TIPS = ['tip.specific', 'tip.mood', 'tip.style', 'tip.negative', 'tip.steps'];

const readDataUrl = (blob) => new Promise((resolve, reject) => {
  const r = new FileReader();
  r.onload = () => resolve(r.result);
  r.onerror = reject;
  r.readAsDataURL(blob);
});

async function blobOf(src) {
  const r = await fetch(src);
  if (!r.ok) throw new Error(t('play.fetch-failed'));
  return r.blob();
}

export async function playground(view) {
  let models = [];
  try {
    models = (await api('v1/models')).data.data;
  } catch (err) {
    view.append(h('p', { class: 'notice', role: 'alert' }, err.message));
    return;
  }
  const s = { mode: 'generate', refs: [], edit: null, caps: null };
  const painter = new MaskPainter();
  const general = h('p', { class: 'form-error', role: 'alert' });
  const progress = h('progress', { max: 100, value: 0, id: 'progress', hidden: true });
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const gallery = h('div', { class: 'gallery', id: 'gallery' });

  const model = h('select', { name: 'model' }, models.map((m) => h('option', { value: m.id }, m.id)));
  const prompt = h('textarea', { name: 'prompt', rows: 4, placeholder: t('play.prompt-placeholder') });
  const ratio = h('select', { name: 'aspect_ratio' });
  const sizes = h('datalist', { id: 'size-list' });
  const size = h('input', { type: 'text', name: 'size', list: 'size-list', placeholder: '1024x1024', autocomplete: 'off' });
  const imageSize = h('select', { name: 'image_size' });
  const quality = h('select', { name: 'quality' });
  const n = h('input', { type: 'number', name: 'n', value: 1, min: 1, inputMode: 'numeric' });
  const partials = h('input', { type: 'number', name: 'partial_images', value: 2, min: 0, max: 3, inputMode: 'numeric' });
  const seed = h('input', { type: 'number', name: 'seed', inputMode: 'numeric', placeholder: t('play.seed-random') });
  const editFile = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', name: 'edit-image' });
  const refFiles = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', multiple: true });
  const refUrl = h('input', { type: 'url', placeholder: 'https://…' });
  const refList = h('ul', { class: 'refs', 'aria-label': t('play.refs') });
  const editPreview = h('div', { class: 'edit-preview' });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('play.generate'));
  const modeRadio = (value, label) => h('label', { class: 'tool' },
    h('input', { type: 'radio', name: 'mode', value, checked: value === 'generate',
      onchange: () => { s.mode = value; sync(); } }), label);
  const delivery = (value, label) => h('label', { class: 'tool' },
    h('input', { type: 'radio', name: 'delivery', value, checked: value === 'sync' }), label);

  const f = {
    model: field(t('play.model'), model, { param: 'model' }),
    mode: h('fieldset', { class: 'modes' }, h('legend', {}, t('play.mode')),
      modeRadio('generate', t('play.mode-generate')), modeRadio('edit', t('play.mode-edit'))),
    edit: h('div', { class: 'field', 'data-param': 'image' },
      h('label', { for: 'edit-image' }, t('play.edit-image')), Object.assign(editFile, { id: 'edit-image' }),
      editPreview, h('p', { class: 'field-error', role: 'alert' })),
    mask: h('div', { class: 'field', 'data-param': 'mask' }, painter.el, h('p', { class: 'field-error', role: 'alert' })),
    prompt: field(t('play.prompt'), prompt, { param: 'prompt' }),
    ratio: field(t('play.ratio'), ratio, { param: 'aspect_ratio' }),
    size: field(t('play.size'), size, { param: 'size' }),
    imageSize: field(t('play.image-size'), imageSize, { param: 'image_size' }),
    quality: field(t('play.quality'), quality, { param: 'quality' }),
    n: field(t('play.n'), n, { param: 'n' }),
    seed: field(t('play.seed'), seed, { param: 'seed' }),
    partials: field(t('play.partials'), partials, { param: 'partial_images' }),
    refs: h('div', { class: 'field', 'data-param': 'image' },
      h('label', { for: 'ref-files' }, t('play.refs')), Object.assign(refFiles, { id: 'ref-files' }),
      h('div', { class: 'row' }, h('label', { for: 'ref-url', class: 'sr-only' }, t('play.ref-url')),
        Object.assign(refUrl, { id: 'ref-url' }),
        h('button', { type: 'button', onclick: () => { if (refUrl.value) { s.refs.push({ src: refUrl.value }); refUrl.value = ''; drawRefs(); } } },
          t('play.add-url'))),
      h('small', {}, t('play.paste-hint')), refList, h('p', { class: 'field-error', role: 'alert' })),
  };

  const tips = h('details', { class: 'tips' }, h('summary', {}, t('play.tips')),
    h('ul', {}, TIPS.map((k) => h('li', {}, t(k)))),
    h('p', {}, t('play.examples')),
    h('div', { class: 'examples' }, EXAMPLES.map((k) => h('button', { type: 'button', class: 'chip',
      onclick: () => { prompt.value = t(k); prompt.focus(); } }, t(k)))));

  const form = h('form', { class: 'play-form', novalidate: true, 'aria-label': t('nav.playground') },
    f.model, f.mode, f.edit, f.mask, f.prompt, tips,
    h('div', { class: 'grid' }, f.ratio, f.size, f.imageSize, f.quality, f.n, f.seed),
    f.refs, sizes,
    h('fieldset', { class: 'modes' }, h('legend', {}, t('play.delivery')),
      delivery('sync', t('play.sync')), delivery('async', t('play.async')), delivery('stream', t('play.stream')), f.partials),
    general, h('div', { class: 'row' }, submit), progress, status);

  view.append(h('h1', {}, t('nav.playground')),
    h('div', { class: 'play' }, form, h('section', { 'aria-label': t('play.results') },
      h('h2', {}, t('play.results')), gallery)));

  function options(select, values, keep) {
    const before = select.value;
    select.replaceChildren(h('option', { value: '' }, t('play.default')), ...values.map((v) => h('option', { value: v }, v)));
    if (keep && values.includes(before)) select.value = before;
  }

  function refsAllowed() {
    const r = s.caps.reference_images;
    return r.max > (s.mode === 'edit' ? 1 : 0) && (s.mode === 'edit' || r.on_generations);
  }

  function sync() {
    const m = models.find((x) => x.id === model.value) || models[0];
    s.caps = m.capabilities;
    const c = s.caps;
    const canEdit = c.actions.includes('edit');
    if (!canEdit) s.mode = 'generate';
    f.mode.hidden = !canEdit || !c.actions.includes('generate');
    if (!c.actions.includes('generate')) s.mode = 'edit';
    for (const r of f.mode.querySelectorAll('input')) r.checked = r.value === s.mode;
    f.edit.hidden = s.mode !== 'edit';
    f.mask.hidden = s.mode !== 'edit' || !c.mask || !s.edit;
    options(ratio, c.aspect_ratios, true);
    f.ratio.hidden = !c.aspect_ratios.length;
    sizes.replaceChildren(...(c.sizes || []).map((v) => h('option', { value: v })));
    f.size.hidden = !(c.sizes ? c.sizes.length : c.params.includes('size'));
    options(imageSize, c.image_sizes || [], true);
    f.imageSize.hidden = !(c.image_sizes && c.image_sizes.length);
    options(quality, c.qualities || [], true);
    f.quality.hidden = !(c.qualities && c.qualities.length);
    n.max = c.max_n;
    f.seed.hidden = !c.params.includes('seed');
    f.partials.hidden = !c.params.includes('partial_images') || form.elements.delivery.value === 'sync';
    f.refs.hidden = !refsAllowed();
    submit.textContent = s.mode === 'edit' ? t('play.edit') : t('play.generate');
    prompt.maxLength = c.max_prompt_chars;
  }

  function drawRefs() {
    refList.replaceChildren(...s.refs.map((r, i) => h('li', {},
      h('img', { src: r.preview || r.src, alt: t('play.ref-alt', { n: i + 1 }) }),
      h('button', { type: 'button', onclick: () => { s.refs.splice(i, 1); drawRefs(); } }, t('play.remove')))));
  }

  async function setEdit(blob) {
    s.edit = blob;
    editPreview.replaceChildren();
    await painter.load(blob);
    sync();
  }

  async function addRefBlobs(blobs) {
    for (const b of blobs) s.refs.push({ blob: b, preview: await readDataUrl(b) });
    drawRefs();
  }

  prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  model.addEventListener('change', sync);
  form.addEventListener('change', (e) => { if (e.target.name === 'delivery') sync(); });
  editFile.addEventListener('change', () => editFile.files[0] && setEdit(editFile.files[0]));
  refFiles.addEventListener('change', () => addRefBlobs([...refFiles.files]));
  view.addEventListener('paste', (e) => {
    const blobs = [...(e.clipboardData?.files || [])].filter((b) => b.type.startsWith('image/'));
    if (!blobs.length) return;
    e.preventDefault();
    if (s.mode === 'edit' && !s.edit) setEdit(blobs.shift());
    if (blobs.length && refsAllowed()) addRefBlobs(blobs);
  });

  function params() {
    const p = { model: model.value, prompt: prompt.value };
    if (Number(n.value) !== 1 || n.value === '') p.n = n.value === '' ? '' : Number(n.value);
    if (!f.ratio.hidden && ratio.value) p.aspect_ratio = ratio.value;
    if (!f.size.hidden && size.value) p.size = size.value;
    if (!f.imageSize.hidden && imageSize.value) p.image_size = imageSize.value;
    if (!f.quality.hidden && quality.value) p.quality = quality.value;
    if (!f.seed.hidden && seed.value !== '') p.seed = Number(seed.value);
    return p;
  }

  async function request(how) {
    const p = params();
    const refs = f.refs.hidden ? [] : s.refs;
    const query = how === 'async' ? '?async=true' : '';
    if (s.mode === 'generate') {
      const body = { ...p };
      if (refs.length) body.image = await Promise.all(refs.map((r) => r.src || readDataUrl(r.blob)));
      if (how === 'stream') body.stream = true;
      if (how !== 'sync' && !f.partials.hidden && partials.value !== '') body.partial_images = Number(partials.value);
      return fetchApi(`v1/images/generations${query}`, { json: body });
    }
    const form = new FormData();
    for (const [k, v] of Object.entries(p)) form.append(k, String(v));
    if (how === 'stream') form.append('stream', 'true');
    if (how !== 'sync' && !f.partials.hidden && partials.value !== '') form.append('partial_images', partials.value);
    if (s.edit) form.append('image[]', s.edit, 'image.png');
    for (const r of refs) form.append('image[]', r.blob || await blobOf(r.src), 'reference.png');
    const mask = f.mask.hidden ? null : await painter.mask();
    if (mask) form.append('mask', mask, 'mask.png');
    return fetchApi(`v1/images/edits${query}`, { form });
  }

  async function fetchApi(path, { json, form }) {
    const headers = { 'X-CSRF-Token': csrf() };
    if (json) headers['Content-Type'] = 'application/json';
    const r = await fetch(`/console/api/${path}`, { method: 'POST', headers, body: json ? JSON.stringify(json) : form });
    if (!r.ok) {
      let body = null;
      try { body = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, body);
    }
    return r;
  }

  async function costOf(requestId) {
    if (!requestId) return null;
    try {
      const rows = (await api('v1/usage?limit=20')).data.data;
      return rows.find((r) => r.request_id === requestId)?.cost ?? null;
    } catch { return null; }
  }

  function show(items, meta) {
    for (const item of items) {
      const src = item.url || `data:image/${meta.format || 'png'};base64,${item.b64_json}`;
      const img = h('img', { src, alt: t('play.result-alt', { prompt: meta.prompt }), loading: 'lazy' });
      const info = h('figcaption', {});
      const describe = () => {
        const dims = img.naturalWidth ? `${img.naturalWidth}×${img.naturalHeight}` : meta.size || '';
        info.replaceChildren(h('span', {}, [dims, meta.model, meta.cost !== null && meta.cost !== undefined
          ? t('play.cost', { cost: money(meta.cost) }) : null, `${(meta.ms / 1000).toFixed(1)} s`].filter(Boolean).join(' · ')),
        h('span', { class: 'actions' },
          h('a', { href: src, download: `imagegate-${Date.now()}.${meta.format || 'png'}`, class: 'button' }, t('play.download')),
          h('button', { type: 'button', onclick: () => editThis(src) }, t('play.edit-this')),
          h('button', { type: 'button', onclick: () => useAsRef(src) }, t('play.use-ref'))));
      };
      img.addEventListener('load', describe);
      describe();
      gallery.prepend(h('figure', { class: 'result' }, img, info));
    }
  }

  async function editThis(src) {
    const m = models.find((x) => x.id === model.value);
    if (!m.capabilities.actions.includes('edit')) {
      const other = models.find((x) => x.capabilities.actions.includes('edit'));
      if (!other) { toast(t('play.no-edit-model')); return; }
      model.value = other.id;
    }
    s.mode = 'edit';
    try { await setEdit(await blobOf(src)); } catch (err) { toast(err.message); return; }
    prompt.focus();
    painter.el.scrollIntoView({ block: 'center' });
  }

  async function useAsRef(src) {
    if (!refsAllowed()) {
      const m = models.find((x) => x.capabilities.reference_images.max > 0);
      if (m && m.id !== model.value) { model.value = m.id; sync(); }
      if (!refsAllowed() && s.caps.actions.includes('edit')) { s.mode = 'edit'; sync(); }
    }
    if (s.mode === 'edit') s.refs.push({ blob: await blobOf(src), preview: src });
    else s.refs.push({ src });
    drawRefs();
    sync();
    toast(t('play.ref-added'));
  }

  async function readStream(r, meta) {
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let partial = null;
    const finals = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (!data || data === '[DONE]') continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new ApiError(400, ev);
        if (String(ev.type).endsWith('partial_image')) {
          const src = `data:image/${ev.output_format || 'png'};base64,${ev.b64_json}`;
          if (!partial) { partial = h('img', { alt: t('play.partial-alt'), class: 'partial' }); gallery.prepend(partial); }
          partial.src = src;
          gallery.dataset.partials = String(Number(gallery.dataset.partials || 0) + 1);
          status.textContent = t('play.partial', { n: ev.partial_image_index + 1 });
        } else if (String(ev.type).endsWith('completed')) {
          finals.push(ev);
          meta.size = ev.size;
          meta.format = ev.output_format;
        }
      }
    }
    partial?.remove();
    return finals;
  }

  async function watch(taskId, meta) {
    progress.hidden = false;
    let partial = null;  // the task's latest partial image, while it runs (models that stream)
    try {
      for (;;) {
        const task = (await api(`v1/images/tasks/${taskId}`)).data.data;
        progress.value = parseInt(task.progress, 10) || 0;
        progress.textContent = task.progress;
        status.textContent = t('play.task-status', { id: taskId.slice(0, 8), status: task.status, progress: task.progress });
        if (task.status === 'SUCCESS') return task.data.data;
        if (task.status === 'FAILURE') throw new Error(task.fail_reason || t('play.task-failed'));
        const preview = task.data && task.data.partial_image_url;
        if (preview) {
          if (!partial) { partial = h('img', { alt: t('play.partial-alt'), class: 'partial' }); gallery.prepend(partial); }
          partial.src = preview;
        }
        await new Promise((r) => setTimeout(r, 600));
      }
    } finally {
      partial?.remove();
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(form, null, general);
    const how = form.elements.delivery.value;
    const started = performance.now();
    const meta = { prompt: prompt.value, model: model.value, cost: null };
    submit.disabled = true;
    status.textContent = t('play.working');
    progress.hidden = how !== 'async';
    progress.removeAttribute('value');
    try {
      const r = await request(how);
      let items;
      let requestId = r.headers.get('x-request-id');
      if (how === 'stream' && (r.headers.get('content-type') || '').startsWith('text/event-stream')) {
        items = await readStream(r, meta);
      } else {
        const body = await r.json();
        if (how === 'async') {
          requestId = body.task_id;
          items = await watch(body.task_id, meta);
        } else {
          items = body.data;
          meta.size = body.size;
          meta.format = body.output_format;
        }
      }
      meta.ms = performance.now() - started;
      meta.cost = await costOf(requestId);
      show(items, meta);
      status.textContent = t('play.done', { n: items.length });
      if (how === 'async') progress.value = 100;
    } catch (err) {
      status.textContent = '';
      showError(form, err, general);
    } finally {
      submit.disabled = false;
      if (how !== 'async') progress.hidden = true;
    }
  });

  sync();
}
