// The Chart.js charts of the dashboard. Only the pieces we use are registered, so the bundle
// carries no unused chart types. Live charts never animate: a redraw is a state, not a tween.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js';

import { formatClock, formatCount, formatNumber } from './format.js';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);

export const COLORS = {
  indigo: '#4f46e5',
  indigoFill: 'rgba(79, 70, 229, 0.12)',
  teal: '#0d9488',
  tealFill: 'rgba(13, 148, 136, 0.15)',
  amber: '#d97706',
  amberLight: 'rgba(217, 119, 6, 0.35)',
  amberFill: 'rgba(217, 119, 6, 0.15)',
  roseFill: 'rgba(225, 29, 72, 0.1)',
  rose: '#e11d48',
  slate: '#64748b',
  grid: 'rgba(100, 116, 139, 0.14)',
};

Chart.defaults.font.family =
  "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
Chart.defaults.font.size = 11;
Chart.defaults.color = COLORS.slate;
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.plugins.legend.display = false;

const grid = { color: COLORS.grid, drawTicks: false };
/** Lines draw no points, except a lone one, which would otherwise draw nothing at all. */
const lonePoint = (ctx) => (ctx.dataset.data.length < 2 ? 3 : 0);
const countAxis = { beginAtZero: true, grid, border: { display: false }, ticks: { padding: 6, callback: (v) => formatCount(v) } };
const timeAxis = {
  type: 'linear',
  grid: { display: false },
  ticks: { maxRotation: 0, autoSkipPadding: 24, callback: (v) => formatClock(v) },
};

/** A line chart of `{x, y}` points against event time (x in ms since the epoch, shown UTC). */
export function timeLineChart(canvas, { label, color, fill }) {
  return new Chart(canvas, {
    type: 'line',
    data: {
      datasets: [
        { label, data: [], borderColor: color, backgroundColor: fill, fill: true, borderWidth: 2, pointRadius: lonePoint, pointBackgroundColor: color, tension: 0.25 },
      ],
    },
    options: {
      parsing: false,
      normalized: true,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      scales: { x: timeAxis, y: countAxis },
      plugins: {
        tooltip: { callbacks: { title: (items) => `${formatClock(items[0].parsed.x)} UTC` } },
      },
    },
  });
}

/** A tiny axis-less line, for a trend under a big number. */
export function sparkline(canvas, color, fill = COLORS.indigoFill) {
  return new Chart(canvas, {
    type: 'line',
    data: {
      datasets: [
        {
          data: [],
          borderColor: color,
          backgroundColor: fill,
          fill: true,
          borderWidth: 2,
          pointRadius: lonePoint,
          pointBackgroundColor: color,
          tension: 0.3,
        },
      ],
    },
    options: {
      parsing: false,
      events: [],
      layout: { padding: 2 },
      // Scaled to the data, not from zero: a trend line shows the change, the number the level.
      scales: { x: { type: 'linear', display: false, bounds: 'data' }, y: { display: false, grace: '10%' } },
      plugins: { tooltip: { enabled: false } },
    },
  });
}

/** A horizontal bar chart of labelled counts (one bar per label). */
export function horizontalBarChart(canvas, { label, color }) {
  return new Chart(canvas, {
    type: 'bar',
    data: { labels: [], datasets: [{ label, data: [], backgroundColor: color, borderRadius: 3, barPercentage: 0.8, categoryPercentage: 0.9 }] },
    options: {
      indexAxis: 'y',
      scales: {
        x: { ...countAxis, position: 'top' },
        y: { grid: { display: false }, border: { display: false }, ticks: { autoSkip: false, font: { family: 'ui-monospace, SFMono-Regular, Menlo, monospace', size: 11 } } },
      },
    },
  });
}

/** A vertical bar chart of labelled counts. */
export function barChart(canvas, { label, color }) {
  return new Chart(canvas, {
    type: 'bar',
    data: { labels: [], datasets: [{ label, data: [], backgroundColor: color, borderRadius: 2, barPercentage: 0.9, categoryPercentage: 0.9 }] },
    options: {
      scales: {
        x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 16 } },
        y: countAxis,
      },
    },
  });
}

/** Lines against batch id: `series` = `[{label, color, dash?}]`, one dataset each. */
export function batchLineChart(canvas, series, unit) {
  return new Chart(canvas, {
    type: 'line',
    data: {
      datasets: series.map((s) => ({
        label: s.label,
        data: [],
        borderColor: s.color,
        backgroundColor: s.fill ?? 'transparent',
        fill: Boolean(s.fill),
        borderDash: s.dash ?? [],
        borderWidth: s.dash ? 1.5 : 2,
        pointRadius: lonePoint,
        pointBackgroundColor: s.color,
        tension: 0.2,
      })),
    },
    options: {
      parsing: false,
      normalized: true,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      scales: {
        x: { type: 'linear', grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 24, precision: 0, callback: (v) => `#${v}` } },
        y: { ...countAxis, ticks: { ...countAxis.ticks, callback: (v) => formatNumber(v) } },
      },
      plugins: {
        legend: { display: series.length > 1, position: 'top', align: 'end', labels: { boxWidth: 12, boxHeight: 2 } },
        tooltip: {
          callbacks: {
            title: (items) => `batch ${items[0].parsed.x}`,
            label: (item) => `${item.dataset.label}: ${formatNumber(item.parsed.y)} ${unit}`,
          },
        },
      },
    },
  });
}

/**
 * Replaces the data of `chart`'s datasets (one array per dataset) and redraws. `colors`, when
 * given, colours the first dataset's bars one by one.
 */
export function setSeries(chart, datasets, { labels, xMin, xMax, colors } = {}) {
  datasets.forEach((data, i) => {
    chart.data.datasets[i].data = data;
  });
  if (colors) chart.data.datasets[0].backgroundColor = colors;
  if (labels) chart.data.labels = labels;
  if (xMin !== undefined) chart.options.scales.x.min = xMin;
  if (xMax !== undefined) chart.options.scales.x.max = xMax;
  chart.update('none');
  // How many points the chart draws, for tests and for anyone inspecting the page.
  chart.canvas.dataset.points = String(datasets[0]?.length ?? 0);
}
