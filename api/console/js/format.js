// How numbers, times and statuses read on the pages.

// Byte counts arrive as strings (the API's Int64) or numbers.
export function bytes(value) {
  if (value === null || value === undefined) return '—';
  let n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? n : n.toFixed(1)} ${units[unit]}`;
}

export function millis(value) {
  if (value === null || value === undefined) return '—';
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(1)} s`;
}

export function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function ago(iso) {
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export const FINAL = ['PUSHED', 'FAILED', 'CANCELLED', 'DELETED'];

// The tag of a target, or its digest reference.
export function tagOf(target) {
  const slash = target.lastIndexOf('/');
  const colon = target.lastIndexOf(':');
  return colon > slash ? target.slice(colon + 1) : 'latest';
}

// The next tag to suggest after `tag`: v3 -> v4, else v1.
export function nextTag(tag) {
  const match = /^(.*?)(\d+)$/.exec(tag || '');
  return match ? `${match[1]}${Number(match[2]) + 1}` : 'v1';
}
