// format: amounts exactly as the API writes them, grouped for reading.

// parseJSON keeps each decimal number's text (credits: "2374050.000") instead
// of a float, where the browser gives the reviver the source text; elsewhere
// numbers stay numbers and credits() prints them with three decimals.
export function parseJSON(text) {
  return JSON.parse(text, (key, value, ctx) => {
    if (typeof value === 'number' && ctx && typeof ctx.source === 'string' && /[.eE]/.test(ctx.source)) {
      return ctx.source;
    }
    return value;
  });
}

// group inserts thousands separators into a run of digits.
export function group(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

// credits formats an amount of credits as the API does, digits grouped:
// "2374050.000" → "2,374,050.000". null → "—".
export function credits(v) {
  if (v === null || v === undefined || v === '') return '—';
  let text = typeof v === 'number' ? v.toFixed(3) : String(v);
  if (!/^-?\d+(\.\d+)?$/.test(text)) return text;
  const neg = text.startsWith('-');
  if (neg) text = text.slice(1);
  const [int, frac] = text.split('.');
  return (neg ? '-' : '') + group(int) + (frac !== undefined ? '.' + frac : '');
}

// creditsNumber is an amount as a float, for chart scales only (never money maths).
export function creditsNumber(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

export function integer(n) {
  if (n === null || n === undefined) return '—';
  return group(String(n));
}

// compact: 1234567 → "1.2M" (chart axes).
export function compact(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return trim(n / 1e9) + 'B';
  if (a >= 1e6) return trim(n / 1e6) + 'M';
  if (a >= 1e3) return trim(n / 1e3) + 'k';
  return trim(n);
}

function trim(n) {
  return String(Math.round(n * 10) / 10);
}

// money: minor units and currency → "$24.99" (Intl, exact for two-decimal currencies).
export function money(minor, currency) {
  const cur = (currency || 'usd').toUpperCase();
  const digits = ['JPY', 'KRW', 'VND', 'CLP', 'ISK', 'HUF'].includes(cur) ? 0 : 2;
  const major = digits ? (minor / 100).toFixed(2) : String(minor);
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency: cur }).format(Number(major));
  } catch {
    return major + ' ' + cur;
  }
}

export function date(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleDateString('en', { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' });
}

export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString('en', { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: 'UTC', timeZoneName: 'short' });
}

// lastDays is the UTC dates (YYYY-MM-DD) of the last n days, oldest first, today last.
export function lastDays(n, now = new Date()) {
  const out = [];
  const base = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = n - 1; i >= 0; i--) out.push(new Date(base - i * 86400000).toISOString().slice(0, 10));
  return out;
}
