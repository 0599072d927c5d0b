// Small inline SVG charts, drawn here (no library): columns with their values and labels.
const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// items: [{label, value}] → <figure> with an SVG column chart; the figure's name and a table-like
// description say the same for a screen reader.
export function columns(title, items, { format = (v) => String(v), id } = {}) {
  const fig = document.createElement('figure');
  fig.className = 'chart';
  if (id) fig.id = id;
  const caption = document.createElement('figcaption');
  caption.textContent = title;
  const W = Math.max(320, items.length * 56), H = 180, top = 18, bottom = 36;
  const max = Math.max(1, ...items.map((i) => i.value));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', preserveAspectRatio: 'xMinYMin meet' });
  svg.setAttribute('aria-label', `${title}: ` + (items.map((i) => `${i.label} ${format(i.value)}`).join(', ') || '0'));
  svg.append(s('line', { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, class: 'axis' }));
  const slot = W / Math.max(1, items.length);
  items.forEach((item, n) => {
    const hgt = ((H - top - bottom) * item.value) / max;
    const bw = Math.min(slot * 0.6, 48);
    const x = n * slot + (slot - bw) / 2;
    const bar = s('rect', { x, y: H - bottom - hgt, width: bw, height: Math.max(hgt, 0.5), class: 'bar',
      'data-label': item.label, 'data-value': item.value });
    bar.append(s('title', {}, `${item.label}: ${format(item.value)}`));
    svg.append(bar,
      s('text', { x: x + bw / 2, y: H - bottom - hgt - 4, 'text-anchor': 'middle', class: 'val' }, format(item.value)),
      s('text', { x: x + bw / 2, y: H - bottom + 14, 'text-anchor': 'middle', class: 'lbl' },
        item.label.length > 18 ? item.label.slice(0, 17) + '…' : item.label));
  });
  if (!items.length) svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'lbl' }, '—'));
  fig.append(caption, svg);
  return fig;
}

// Usage rows ({created_at, images, cost_micros, model}) → per-day totals, oldest first.
export function byDay(rows, value) {
  const days = new Map();
  for (const r of rows) {
    const d = new Date(r.created_at * 1000).toISOString().slice(5, 10);
    days.set(d, (days.get(d) || 0) + value(r));
  }
  return [...days.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([label, v]) => ({ label, value: v }));
}
