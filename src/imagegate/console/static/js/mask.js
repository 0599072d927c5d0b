// The mask painter: paint over the image the region to change; the mask sent is a PNG of the
// image's size, transparent where painted (the region to edit), opaque elsewhere.
import { h, t } from './core.js';

export class MaskPainter {
  constructor() {
    this.base = h('canvas', { class: 'mask-base', 'aria-hidden': 'true' });
    this.paint = h('canvas', { class: 'mask-paint', role: 'img', 'aria-label': t('mask.canvas') });
    this.size = h('input', { type: 'range', min: 4, max: 200, value: 40, id: 'mask-size' });
    this.ring = h('span', { class: 'mask-ring', hidden: true, 'aria-hidden': 'true' });
    this.mode = 'brush';
    this.painted = false;
    const tool = (value, label) => h('label', { class: 'tool' },
      h('input', { type: 'radio', name: 'mask-tool', value, checked: value === 'brush',
        onchange: () => { this.mode = value; } }), label);
    this.el = h('fieldset', { class: 'mask' },
      h('legend', {}, t('mask.title')),
      h('p', { class: 'muted' }, t('mask.help')),
      h('div', { class: 'mask-tools' },
        tool('brush', t('mask.brush')), tool('eraser', t('mask.eraser')),
        h('label', { for: 'mask-size' }, t('mask.size')), this.size,
        h('button', { type: 'button', onclick: () => this.clear() }, t('mask.clear')),
        h('button', { type: 'button', onclick: () => this.fill() }, t('mask.all'))),
      h('div', { class: 'mask-stage' }, this.base, this.paint, this.ring));
    let down = false;
    const at = (e) => {
      const r = this.paint.getBoundingClientRect();
      return [((e.clientX - r.left) * this.paint.width) / r.width, ((e.clientY - r.top) * this.paint.height) / r.height];
    };
    const dot = (e) => {
      const [x, y] = at(e);
      const ctx = this.paint.getContext('2d');
      const scale = this.paint.width / this.paint.getBoundingClientRect().width;
      ctx.globalCompositeOperation = this.mode === 'eraser' ? 'destination-out' : 'source-over';
      ctx.fillStyle = '#ff2d55';
      ctx.beginPath();
      ctx.arc(x, y, (Number(this.size.value) * scale) / 2, 0, Math.PI * 2);
      ctx.fill();
      if (this.mode === 'brush') this.painted = true;
    };
    // Keyboard: arrows move the brush (a ring), Space or Enter paints there.
    this.cursor = null;
    this.paint.tabIndex = 0;
    this.paint.addEventListener('keydown', (e) => {
      const step = Math.max(4, Math.round(this.paint.width / 32));
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      this.cursor ??= [this.paint.width / 2, this.paint.height / 2];
      if (moves[e.key]) {
        this.cursor = [Math.min(this.paint.width, Math.max(0, this.cursor[0] + moves[e.key][0])),
          Math.min(this.paint.height, Math.max(0, this.cursor[1] + moves[e.key][1]))];
      } else if (e.key !== ' ' && e.key !== 'Enter') return;
      e.preventDefault();
      const r = this.paint.getBoundingClientRect();
      const at = { clientX: r.left + (this.cursor[0] * r.width) / this.paint.width,
        clientY: r.top + (this.cursor[1] * r.height) / this.paint.height };
      if (!moves[e.key]) dot(at);
      this.ring.style.left = `${(this.cursor[0] * 100) / this.paint.width}%`;
      this.ring.style.top = `${(this.cursor[1] * 100) / this.paint.height}%`;
      this.ring.style.width = this.ring.style.height = `${this.size.value}px`;
      this.ring.hidden = false;
    });
    this.paint.addEventListener('blur', () => { this.ring.hidden = true; });
    this.paint.addEventListener('pointerdown', (e) => { down = true; this.paint.setPointerCapture(e.pointerId); dot(e); });
    this.paint.addEventListener('pointermove', (e) => { if (down) dot(e); });
    this.paint.addEventListener('pointerup', () => { down = false; });
  }

  async load(blob) {
    const img = await createImageBitmap(blob);
    for (const c of [this.base, this.paint]) { c.width = img.width; c.height = img.height; }
    this.base.getContext('2d').drawImage(img, 0, 0);
    this.painted = false;
  }

  clear() { this.paint.getContext('2d').clearRect(0, 0, this.paint.width, this.paint.height); this.painted = false; }

  fill() {
    const ctx = this.paint.getContext('2d');
    ctx.globalCompositeOperation = 'source-over';
    ctx.fillStyle = '#ff2d55';
    ctx.fillRect(0, 0, this.paint.width, this.paint.height);
    this.painted = true;
  }

  // The PNG mask, or null when nothing is painted (the whole image may change).
  async mask() {
    if (!this.painted || !this.paint.width) return null;
    const out = h('canvas', { width: this.paint.width, height: this.paint.height });
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.globalCompositeOperation = 'destination-out';
    ctx.drawImage(this.paint, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
  }
}
