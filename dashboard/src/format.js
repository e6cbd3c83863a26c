// Formatting of numbers, durations and event times for display. Event times are shown in UTC:
// replays (the MSNBC day is 1999-09-28) have nothing to do with the viewer's time zone.

const INTEGER = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const DECIMAL = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

/** `1234567` → `"1,234,567"`; `null`/`undefined`/NaN → an em dash. */
export function formatCount(n) {
  return Number.isFinite(n) ? INTEGER.format(n) : '—';
}

/** One decimal for small values, none from 100 up: `3.14` → `"3.1"`, `1234.5` → `"1,235"`. */
export function formatNumber(n) {
  if (!Number.isFinite(n)) return '—';
  return Math.abs(n) >= 100 ? INTEGER.format(n) : DECIMAL.format(n);
}

/** A duration in ms, in the largest sensible unit: `850` → `"850 ms"`, `95000` → `"1m 35s"`. */
export function formatDuration(ms) {
  if (!Number.isFinite(ms)) return '—';
  if (Math.abs(ms) < 1000) return `${formatNumber(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${DECIMAL.format(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s - m * 60)}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${m - h * 60}m`;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** ms since the epoch → `"14:32:05"` (UTC). */
export function formatClock(ms) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

/** ms since the epoch → `"1999-09-28"` (UTC). */
export function formatDate(ms) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** A half-open window `[start, end)` → `"14:32:00 – 14:32:30"`. */
export function formatWindow(startMs, endMs) {
  if (!Number.isFinite(startMs) || !Number.isFinite(endMs)) return '—';
  return `${formatClock(startMs)} – ${formatClock(endMs)}`;
}
