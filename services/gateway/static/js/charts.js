// Small SVG charts drawn by hand: grouped bars, lines, and a scatter. Each returns an <svg>
// with role="img" and an aria-label; colours come from CSS classes (series--<name>).

import { svg } from "./dom.js";

const WIDTH = 480;
const HEIGHT = 300;
// The y axis's title sits above the plot, left-aligned, so no tick label (however wide: counts
// run to 10,000 and more) can reach under it; `top` leaves it room.
const MARGIN = { top: 28, right: 14, bottom: 46, left: 56 };
const PLOT_W = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_H = HEIGHT - MARGIN.top - MARGIN.bottom;

/** About `count` round tick values covering [min, max]. */
export function niceTicks(min, max, count = 5) {
  const span = max - min || 1;
  const rough = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const norm = rough / magnitude;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  const ticks = [];
  for (let value = Math.ceil(min / step) * step; value <= max + step * 1e-9; value += step) {
    ticks.push(Number(value.toFixed(10)));
  }
  return { ticks, step };
}

function tickLabel(value, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  return digits ? value.toFixed(digits) : value.toLocaleString();
}

function scale(domainMin, domainMax, rangeMin, rangeMax) {
  const span = domainMax - domainMin || 1;
  return (value) => rangeMin + ((value - domainMin) / span) * (rangeMax - rangeMin);
}

function frame(label) {
  return svg(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart" },
    svg("title", { text: label }),
  );
}

/** Axes with grid lines. `x`/`y` are {min, max, label}; x ticks are skipped for band charts. */
function axes(root, x, y, { xTicks = true } = {}) {
  const sx = scale(x.min, x.max, MARGIN.left, MARGIN.left + PLOT_W);
  const sy = scale(y.min, y.max, MARGIN.top + PLOT_H, MARGIN.top);
  const grid = svg("g", { class: "chart__grid" });
  const yt = niceTicks(y.min, y.max);
  for (const value of yt.ticks) {
    grid.append(
      svg("line", { x1: MARGIN.left, x2: MARGIN.left + PLOT_W, y1: sy(value), y2: sy(value) }),
      svg("text", { x: MARGIN.left - 6, y: sy(value), class: "chart__tick chart__tick--y", text: tickLabel(value, yt.step) }),
    );
  }
  if (xTicks) {
    const xt = niceTicks(x.min, x.max);
    for (const value of xt.ticks) {
      grid.append(
        svg("text", { x: sx(value), y: MARGIN.top + PLOT_H + 16, class: "chart__tick chart__tick--x", text: tickLabel(value, xt.step) }),
      );
    }
  }
  root.append(
    grid,
    svg("line", { class: "chart__axis", x1: MARGIN.left, x2: MARGIN.left + PLOT_W, y1: MARGIN.top + PLOT_H, y2: MARGIN.top + PLOT_H }),
    svg("line", { class: "chart__axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + PLOT_H }),
    svg("text", { class: "chart__label", x: MARGIN.left + PLOT_W / 2, y: HEIGHT - 6, text: x.label || "" }),
    svg("text", { class: "chart__label chart__label--y", x: 4, y: 16, text: y.label || "" }),
  );
  return { sx, sy };
}

/**
 * Grouped bars: one group per category, one bar per series.
 * series: [{name, values}] with values aligned to `categories`.
 */
export function barChart({ label, categories, series, yLabel }) {
  const root = frame(label);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const { sy } = axes(root, { min: 0, max: 1, label: "" }, { min: 0, max: max * 1.1, label: yLabel }, { xTicks: false });
  const band = PLOT_W / categories.length;
  const barWidth = (band * 0.7) / series.length;
  categories.forEach((category, ci) => {
    const left = MARGIN.left + ci * band + band * 0.15;
    root.append(svg("text", { class: "chart__tick chart__tick--x", x: MARGIN.left + ci * band + band / 2, y: MARGIN.top + PLOT_H + 16, text: category }));
    series.forEach((s, si) => {
      const value = s.values[ci] ?? 0;
      const x = left + si * barWidth;
      const y = sy(value);
      root.append(
        svg(
          "rect",
          { class: `chart__bar series--${s.name}`, x, y, width: barWidth - 2, height: MARGIN.top + PLOT_H - y },
          svg("title", { text: `${category}, ${s.name}: ${value.toLocaleString()}` }),
        ),
        svg("text", { class: "chart__value", x: x + (barWidth - 2) / 2, y: y - 4, text: value.toLocaleString() }),
      );
    });
  });
  return root;
}

/**
 * Lines through points. series: [{name, points: [[x, y], ...]}]; `x`/`y`: {min, max, label}.
 * `diagonal` draws the y = x reference (ROC, calibration); `markers` adds a dot per point.
 */
export function lineChart({ label, series, x, y, diagonal = false, markers = false }) {
  const root = frame(label);
  const { sx, sy } = axes(root, x, y);
  if (diagonal) {
    root.append(svg("line", { class: "chart__reference", x1: sx(x.min), y1: sy(y.min), x2: sx(x.max), y2: sy(y.max) }));
  }
  for (const s of series) {
    const points = s.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py));
    const path = points.map(([px, py], i) => `${i ? "L" : "M"}${sx(px).toFixed(1)},${sy(py).toFixed(1)}`).join("");
    root.append(svg("path", { class: `chart__line series--${s.name}`, d: path }));
    if (markers || s.markers) {
      for (const [px, py] of points) {
        root.append(svg("circle", { class: `chart__dot series--${s.name}`, cx: sx(px), cy: sy(py), r: 3.5 }));
      }
    }
  }
  return root;
}

/** Points sized by count: [[x, y, count], ...]. */
export function scatterChart({ label, points, x, y, describe }) {
  const root = frame(label);
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const { sx, sy } = axes(
    root,
    { min: 0, max: Math.max(1, ...xs) * 1.05, label: x.label },
    { min: 0, max: Math.max(1, ...ys) * 1.05, label: y.label },
  );
  const most = Math.max(1, ...points.map((p) => p[2] ?? 1));
  for (const [px, py, count = 1] of points) {
    root.append(
      svg(
        "circle",
        { class: "chart__point", cx: sx(px), cy: sy(py), r: 3 + 9 * Math.sqrt(count / most) },
        svg("title", { text: describe ? describe(px, py, count) : `${px}, ${py}: ${count}` }),
      ),
    );
  }
  return root;
}

/** A legend: [{name, text}] -> swatches with labels (an HTML list). */
export function legend(items) {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const { name, text } of items) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `legend__swatch series--${name}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, document.createTextNode(text));
    list.append(item);
  }
  return list;
}
