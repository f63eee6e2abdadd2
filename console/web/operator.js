// operator: the views of an operator signed in with the admin token.
import { h, replace, field } from './dom.js';
import { call } from './api.js';
import { credits, dateTime, date } from './format.js';
import { card, notice, empty, loading, table, button, busy, toast, confirmDialog, errorText } from './ui.js';

export function operatorView(ctx, main) {
  const api = (method, path, body) => call(method, path, { token: ctx.admin, body });
  const resultEl = h('div');
  const id = field({ label: 'Account id', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'e.g. acct_123' });
  const find = h('button.btn.btn-primary', { type: 'submit' }, 'Find account');
  const form = h('form.form.form-inline', {
    on: {
      submit: (ev) => {
        ev.preventDefault();
        busy(find, () => open(id.input.value.trim()));
      },
    },
  }, id.el, h('div.actions', find));
  const booksEl = h('div');
  const hooksEl = h('div', loading('Loading webhook deliveries'));
  const hooksRefresh = button('Refresh', (ev) => busy(ev.target, () => webhooks(hooksEl)), { kind: 'quiet', 'aria-label': 'Refresh webhook deliveries' });
  replace(main, h('h1.sr-only', 'Operator'), card('Find an account', form), resultEl,
    card('Webhooks', h('div.card-tools', hooksRefresh), hooksEl), card('Books', booksEl));
  books(booksEl);
  webhooks(hooksEl);
  id.input.focus();

  async function open(accountID) {
    if (!accountID) return;
    replace(resultEl, loading('Loading account'));
    const path = '/admin/v1/accounts/' + encodeURIComponent(accountID);
    try {
      const a = await api('GET', path);
      const balanceEl = h('div');
      const keysEl = h('div', loading('Loading keys'));
      const ledgerEl = h('div', loading('Loading ledger'));
      renderAccount(balanceEl, a);
      const refresh = async () => {
        renderAccount(balanceEl, await api('GET', path));
        await loadLedger(path, ledgerEl);
      };
      replace(resultEl,
        card('Account', balanceEl, grantForm(path, refresh)),
        card('API keys', keysEl),
        card('Ledger', ledgerEl));
      await Promise.all([loadKeys(path, keysEl), loadLedger(path, ledgerEl)]);
    } catch (err) {
      replace(resultEl, notice('error', err.status === 404 ? 'No account with that id.' : err.status === 401 ? 'The admin token was refused. Sign out and sign in again.' : errorText(err)));
    }
  }

  function renderAccount(el, a) {
    replace(el,
      h('p.account-id', 'Account ', h('code', a.id), ' · created ', date(a.created_at)),
      h('p.balance', h('span.amount', { 'data-testid': 'op-balance' }, credits(a.balance)), h('span.unit', ' credits')),
      h('dl.facts',
        h('div', h('dt', 'Available'), h('dd', credits(a.available))),
        h('div', h('dt', 'Reserved'), h('dd', credits(a.reserved))),
        h('div', h('dt', 'Purchased'), h('dd', credits(a.total_purchased))),
        h('div', h('dt', 'Granted'), h('dd', credits(a.total_granted))),
        h('div', h('dt', 'Adjusted'), h('dd', credits(a.total_adjusted))),
        h('div', h('dt', 'Promotional'), h('dd', credits(a.total_promotional), ' (', credits(a.promotional), ' left)')),
        h('div', h('dt', 'Consumed'), h('dd', credits(a.total_consumed))),
        h('div', h('dt', 'Calls past their hold'), h('dd', String(a.over_hold_calls), ' (', credits(a.over_hold), ' credits)'))));
  }

  function grantForm(path, refresh) {
    const amount = field({ label: 'Credits', inputmode: 'decimal', required: true, placeholder: 'e.g. 500 or -20', autocomplete: 'off', hint: 'Negative amounts are adjustments.' });
    const ref = field({ label: 'Reference', required: true, maxlength: 200, value: 'console-' + new Date().toISOString().slice(0, 10) + '-' + Math.random().toString(36).slice(2, 8), autocomplete: 'off', hint: 'Applied once, ever: retrying with the same reference credits nothing more.' });
    const desc = field({ label: 'Description (optional)', maxlength: 500, autocomplete: 'off' });
    const submit = h('button.btn.btn-primary', { type: 'submit' }, 'Grant credits');
    const out = h('div');
    const form = h('form.form.grant', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          const body = { credits: amount.input.value.trim(), reference: ref.input.value.trim() };
          if (desc.input.value.trim()) body.description = desc.input.value.trim();
          busy(submit, async () => {
            try {
              const res = await api('POST', path + '/credits', body);
              replace(out, notice(res.applied ? 'ok' : 'info', res.applied
                ? `Applied. New balance: ${credits(res.balance)} credits.`
                : `Reference already used: nothing was credited. Balance: ${credits(res.balance)} credits.`));
              await refresh();
            } catch (err) {
              replace(out, notice('error', errorText(err)));
            }
          });
        },
      },
    }, h('h3', 'Grant or adjust credits'), h('div.grid-3', amount.el, ref.el, desc.el), h('div.actions', submit), out);
    return form;
  }

  async function loadKeys(path, el) {
    try {
      const res = await api('GET', path + '/keys');
      const ks = res.data || [];
      if (!ks.length) {
        replace(el, empty('This account has no API keys.'));
        return;
      }
      replace(el, table('API keys', [
        { label: 'Name', value: (k) => h('span.keyname', k.name) },
        { label: 'Key', value: (k) => h('code', k.hint) },
        { label: 'Id', value: (k) => h('code', k.id) },
        { label: 'Used', num: true, value: (k) => credits(k.used) },
        { label: 'Limit', num: true, value: (k) => (k.credit_limit === null ? 'No limit' : credits(k.credit_limit)) },
        { label: 'Status', value: (k) => (k.revoked ? h('span.badge.badge-off', 'Revoked') : h('span.badge.badge-on', 'Active')) },
        {
          label: 'Actions', value: (k) => (k.revoked ? '' : button('Revoke', async (ev) => {
            if (!await confirmDialog('Revoke this key?', `Calls made with “${k.name}” will be refused within a second.`, 'Revoke key')) return;
            await busy(ev.target, async () => {
              try {
                await api('DELETE', path + '/keys/' + encodeURIComponent(k.id));
                toast('Key revoked');
                await loadKeys(path, el);
              } catch (err) {
                toast(errorText(err));
              }
            });
          }, { kind: 'danger-quiet', 'aria-label': `Revoke key ${k.name}` })),
        },
      ], ks));
    } catch (err) {
      replace(el, notice('error', errorText(err)));
    }
  }

  async function loadLedger(path, el) {
    const stack = [null];
    const show = async () => {
      const cursor = stack[stack.length - 1];
      try {
        const res = await api('GET', path + '/ledger?limit=25' + (cursor ? '&starting_after=' + encodeURIComponent(cursor) : ''));
        const rows = res.data || [];
        if (!rows.length && stack.length === 1) {
          replace(el, empty('The ledger is empty.'));
          return;
        }
        const next = res.has_more && rows.length ? rows[rows.length - 1].id : null;
        replace(el, table('Ledger', [
          { label: 'When', value: (e) => dateTime(e.created_at) },
          { label: 'Type', value: (e) => e.type },
          { label: 'Amount', num: true, value: (e) => h('span', { class: String(e.amount).startsWith('-') ? 'neg' : 'pos' }, credits(e.amount)) },
          { label: 'Balance after', num: true, value: (e) => credits(e.balance_after) },
          { label: 'Reference', value: (e) => h('code.wrap', e.reference) },
          { label: 'Detail', value: (e) => detail(e.fields) },
        ], rows),
        h('nav.pager', { 'aria-label': 'Ledger pages' },
          button('Newer', () => { stack.pop(); show(); }, { kind: 'quiet', disabled: stack.length === 1 }),
          h('span.muted', `Page ${stack.length}`),
          button('Older', () => { stack.push(next); show(); }, { kind: 'quiet', disabled: !next })));
      } catch (err) {
        replace(el, notice('error', errorText(err)));
      }
    };
    await show();
  }

  // webhooks lists the newest deliveries of outgoing events to the
  // operator's endpoints (billing.webhooks), newest first: what was sent,
  // where, and what became of it.
  async function webhooks(el) {
    try {
      const res = await api('GET', '/admin/v1/webhooks/deliveries?limit=50');
      const ds = res.data || [];
      if (!ds.length) {
        replace(el, empty(ctx.config.webhooks
          ? `No deliveries yet. Events are sent to ${ctx.config.webhooks === 1 ? 'the configured endpoint' : `the ${ctx.config.webhooks} configured endpoints`} as they happen.`
          : 'No webhook endpoints are configured (billing.webhooks), so no events are sent.'));
        return;
      }
      const counts = { pending: 0, delivered: 0, failed: 0 };
      for (const d of ds) if (counts[d.state] !== undefined) counts[d.state] += 1;
      replace(el,
        h('p.muted', { 'data-testid': 'delivery-counts' },
          `The newest ${ds.length}: ${counts.delivered} delivered, ${counts.pending} pending, ${counts.failed} failed.`),
        table('Webhook deliveries', [
          { label: 'Created', value: (d) => dateTime(d.created_at) },
          { label: 'Event', value: (d) => h('code', d.type) },
          {
            label: 'Account', value: (d) => h('button.linkish.ident', {
              type: 'button', 'aria-label': `Open account ${d.account}`,
              on: { click: () => { id.input.value = d.account; busy(find, () => open(d.account)); window.scrollTo(0, 0); } },
            }, d.account),
          },
          { label: 'Endpoint', value: (d) => h('span.ident', d.url) },
          { label: 'State', value: (d) => deliveryState(d.state) },
          { label: 'Attempts', num: true, value: (d) => String(d.attempts) },
          { label: 'Last result', value: (d) => lastResult(d) },
          { label: 'Next attempt', value: (d) => (d.next_attempt_at ? dateTime(d.next_attempt_at) : '—') },
        ], ds));
    } catch (err) {
      replace(el, notice('error', err.status === 401 ? 'The admin token was refused. Sign out and sign in again.' : errorText(err)));
    }
  }

  // books shows the books' status (the PostgreSQL journal: reconcile and
  // journal lag) when the server has them: config.books names the route.
  async function books(el) {
    if (!ctx.config.books) {
      replace(el, empty('The books (a PostgreSQL journal with reconciliation) are not configured on this server; Redis holds the ledger.'));
      return;
    }
    replace(el, loading('Loading the books’ status'));
    try {
      const st = await api('GET', ctx.config.books);
      replace(el, h('dl.facts', Object.entries(st).map(([k, v]) => h('div', h('dt', k), h('dd', typeof v === 'object' ? JSON.stringify(v) : String(v))))));
    } catch (err) {
      replace(el, notice('error', errorText(err)));
    }
  }
}

function deliveryState(state) {
  const kind = { delivered: 'badge-on', pending: 'badge-warn', failed: 'badge-bad' }[state] || 'badge-off';
  return h('span.badge', { class: kind }, state);
}

// lastResult: the last attempt's HTTP status and error, as text.
function lastResult(d) {
  const parts = [];
  if (d.last_status !== null && d.last_status !== undefined) parts.push(h('span.mono', String(d.last_status)));
  if (d.last_error) parts.push(h('span.detail', (parts.length ? ' · ' : ''), d.last_error));
  if (!parts.length) return d.attempts ? '' : h('span.muted', 'Not tried yet');
  return h('span.result', parts);
}

function detail(fields) {
  if (!fields) return '';
  const keep = ['model', 'description', 'pack', 'input_tokens', 'output_tokens', 'source', 'stripe_payment_id'];
  const parts = keep.filter((k) => fields[k] !== undefined && fields[k] !== '').map((k) => `${k}: ${fields[k]}`);
  return h('span.detail', parts.join(' · '));
}
