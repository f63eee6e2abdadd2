// chart: a stacked bar chart per day, drawn as SVG by hand (no library).
// Series are models; colours come from CSS classes (.series-0 …), so the
// chart needs no inline style. Each bar carries a <title> tooltip, and the
// figure an aria-label; the table beside it holds the same numbers.
import { s, h } from './dom.js';
import { compact } from './format.js';

export const PALETTE = 8;

// draw renders days (YYYY-MM-DD, oldest first) × series into container.
// values(day, seriesIndex) → number; label(day, i, v) → tooltip text.
export function draw(container, { days, series, values, label, unit, ariaLabel }) {
  const width = Math.max(280, Math.floor(container.clientWidth || 640));
  const height = width < 480 ? 200 : 240;
  const pad = { top: 12, right: 8, bottom: 26, left: width < 480 ? 36 : 48 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;

  const totals = days.map((d) => series.reduce((sum, _, i) => sum + values(d, i), 0));
  const maxTotal = Math.max(0, ...totals);
  const ticks = niceTicks(maxTotal);
  const top = ticks[ticks.length - 1] || 1;
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const slot = plotW / days.length;
  const barW = Math.max(2, Math.min(22, slot * 0.7));

  const svg = s('svg.chart', {
    width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': ariaLabel,
  });
  const grid = s('g.grid');
  for (const t of ticks) {
    grid.append(
      s('line', { x1: pad.left, x2: width - pad.right, y1: y(t), y2: y(t) }),
      s('text.axis', { x: pad.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, compact(t)),
    );
  }
  svg.append(grid);

  const bars = s('g.bars');
  days.forEach((d, di) => {
    const x = pad.left + di * slot + (slot - barW) / 2;
    let acc = 0;
    series.forEach((name, si) => {
      const v = values(d, si);
      if (v <= 0) return;
      const y0 = y(acc);
      acc += v;
      const y1 = y(acc);
      bars.append(s(`rect.series-${si % PALETTE}`, {
        x: x.toFixed(1), y: y1.toFixed(1), width: barW.toFixed(1), height: Math.max(1, y0 - y1).toFixed(1), rx: 2,
      }, s('title', null, label(d, si, v))));
    });
  });
  svg.append(bars);

  // Day labels: about six, always the last day (today).
  const every = Math.max(1, Math.ceil(days.length / (width < 480 ? 4 : 7)));
  const labels = s('g.days');
  days.forEach((d, di) => {
    if ((days.length - 1 - di) % every !== 0) return;
    labels.append(s('text.axis', {
      x: (pad.left + di * slot + slot / 2).toFixed(1), y: height - 8, 'text-anchor': 'middle',
    }, shortDay(d)));
  });
  svg.append(labels);
  svg.append(s('text.unit', { x: pad.left, y: 10 }, unit));

  const legend = h('ul.legend', { 'aria-label': 'Models' },
    series.map((name, i) => h('li', h(`span.swatch.series-${i % PALETTE}`, { 'aria-hidden': 'true' }), name || '(unnamed)')));
  container.replaceChildren(svg, legend);
}

function shortDay(iso) {
  const d = new Date(iso + 'T00:00:00Z');
  return d.toLocaleDateString('en', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

// niceTicks: 0 and 3–5 round steps covering max.
export function niceTicks(max) {
  if (!(max > 0)) return [0, 1];
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((m) => m >= raw);
  const out = [];
  for (let v = 0; v < max + step * 0.999; v += step) out.push(Math.round(v * 1e6) / 1e6);
  if (out.length < 2) out.push(step);
  return out;
}
