// ui: pieces every view uses: cards, tables, notices, the toast, confirms.
import { h, replace } from './dom.js';

export function card(title, ...body) {
  const id = 'h-' + title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  return h('section.card', { 'aria-labelledby': id }, h('h2', { id }, title), ...body);
}

export function notice(kind, ...text) {
  return h(`div.notice.notice-${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

export function empty(...text) {
  return h('p.empty', ...text);
}

export function loading(what = 'Loading') {
  return h('p.loading', { 'aria-busy': 'true' }, h('span.spinner', { 'aria-hidden': 'true' }), what + '…');
}

// table: columns [{label, value(row) → node|string, num?}] over rows.
export function table(caption, columns, rows) {
  return h('div.table-wrap', { tabindex: '0', role: 'region', 'aria-label': caption },
    h('table',
      h('caption.sr-only', caption),
      h('thead', h('tr', columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
      h('tbody', rows.map((r) => h('tr', columns.map((c) => h('td', { class: c.num ? 'num' : null, 'data-label': c.label }, c.value(r))))))));
}

export function button(label, onClick, { kind = 'primary', type = 'button', ...attrs } = {}) {
  return h(`button.btn.btn-${kind}`, { type, ...attrs, on: { click: onClick } }, label);
}

// busy disables a button while work runs and restores it after.
export async function busy(btn, work) {
  const was = btn.textContent;
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
    btn.textContent = was;
  }
}

let toastTimer = 0;
export function toast(text) {
  const el = document.getElementById('toast');
  replace(el, text);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

// confirmDialog asks with a native <dialog> (focus trapped, Esc cancels).
export function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const ok = h('button.btn.btn-danger', { type: 'submit', value: 'ok' }, confirmLabel);
    const dlg = h('dialog.dialog', { 'aria-labelledby': 'dlg-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'dlg-title' }, title),
        h('p', text),
        h('div.actions',
          h('button.btn.btn-quiet', { type: 'submit', value: 'cancel' }, 'Cancel'),
          ok)));
    dlg.addEventListener('close', () => {
      resolve(dlg.returnValue === 'ok');
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    ok.focus();
  });
}

export function errorText(err) {
  if (err && err.status === 401) return 'Your session has expired or is not valid. Open the console again from your app.';
  if (err && err.status === 503 && err.code === 'store_unavailable') return 'The billing service is busy right now. Try again in a moment.';
  return (err && err.message) || 'Something went wrong.';
}

// copyText copies to the clipboard, falling back to selecting the text.
export async function copyText(text, fallbackEl) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackEl) {
      const r = document.createRange();
      r.selectNodeContents(fallbackEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
    }
    return false;
  }
}
