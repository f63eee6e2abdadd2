// customer: the views of a customer signed in with their app's JWT.
import { h, replace, field, uid } from './dom.js';
import { call } from './api.js';
import { credits, creditsNumber, integer, money, date, dateTime, lastDays } from './format.js';
import { card, notice, empty, loading, table, button, busy, toast, confirmDialog, errorText, copyText } from './ui.js';
import { draw } from './chart.js';

// SECTIONS: id, tab label, and the permission (GET /v1/me) a role needs
// to see the section at all.
export const SECTIONS = [
  ['overview', 'Overview', 'usage'],
  ['buy', 'Buy credits', 'billing'],
  ['usage', 'Usage', 'usage'],
  ['keys', 'API keys', 'keys'],
  ['plan', 'Plan', 'usage'],
  ['history', 'History', 'billing'],
  ['team', 'Team', 'members'],
];

// ROLES are the roles of an account's members, least powerful first, with
// what each may do.
const ROLES = [
  ['member', 'Member', 'uses the API with their own keys and sees usage and the balance'],
  ['billing', 'Billing', 'also buys credits, manages plans and auto-recharge, and reads the purchase history'],
  ['admin', 'Admin', 'also manages every key, the team and its budgets, and reads the audit log'],
  ['owner', 'Owner', 'everything, and only owners grant, change or remove the owner role'],
];
const roleLabel = (r) => (ROLES.find((x) => x[0] === r) || [r, r])[1];

// PERIODS of a member budget (UTC; weeks start on Monday).
const PERIODS = [['day', 'Day'], ['week', 'Week'], ['month', 'Month']];

// CREDITS_RE: an amount of credits as the API takes it (three decimals at most).
const CREDITS_RE = /^\d{1,12}(\.\d{1,3})?$/;

// customerViews returns the views the caller's role may see (ctx.can).
export function customerViews(ctx) {
  const can = ctx.can;
  const api = (method, path, body) => call(method, path, { token: ctx.token, body });
  let packsPromise = null;
  const packs = () => {
    packsPromise = packsPromise || call('GET', '/v1/billing/packs').then((r) => r.data).catch((e) => { packsPromise = null; throw e; });
    return packsPromise;
  };

  // guard renders a view's failure in place instead of leaving it blank; a
  // member whose role does not allow the view is told so, not shown an error.
  const failure = (err) => (err.status === 403 && err.code === 'permission_denied'
    ? notice('info', 'Your role in this account does not include this. Ask an owner or admin of the account.')
    : notice('error', errorText(err)));
  const guard = (el, work) => work().catch((err) => replace(el, failure(err)));

  async function overview(main) {
    const balanceEl = h('div', loading('Loading your balance'));
    const autoEl = h('div', loading());
    replace(main,
      h('h1.sr-only', 'Overview'),
      card('Balance', balanceEl),
      card('Auto-recharge', autoEl));
    await guard(balanceEl, async () => {
      const [cr, ac, ps] = await Promise.all([api('GET', '/api/billing/credits?limit=1'), api('GET', '/v1/api-credits'), packs().catch(() => [])]);
      renderBalance(balanceEl, cr, ac, ps);
      // A member whose role does not include billing reads the balance
      // alone (no autoRecharge): the setting is not theirs to see.
      if (cr.autoRecharge) renderAutoRecharge(autoEl, cr.autoRecharge, ps);
      else replace(autoEl, empty('Auto-recharge is managed by the account’s owners, admins and billing members.'));
    });
    if (autoEl.querySelector('.loading')) replace(autoEl);
  }

  function renderBalance(el, cr, ac, ps) {
    const hint = lowBalanceHint(cr, ps);
    replace(el,
      h('p.balance', h('span.amount', { 'data-testid': 'balance' }, credits(cr.balance)), h('span.unit', ' credits')),
      h('dl.facts',
        h('div', h('dt', 'Available'), h('dd', credits(ac.available))),
        h('div', h('dt', 'Held by calls in progress'), h('dd', credits(ac.reserved))),
        h('div', h('dt', 'Purchased'), h('dd', credits(ac.total_purchased))),
        h('div', h('dt', 'Used'), h('dd', credits(ac.total_consumed))),
        creditsNumber(ac.promotional) > 0
          ? h('div', h('dt', 'Promotional (spent first)'), h('dd', { 'data-testid': 'promotional' }, credits(ac.promotional),
            ac.promotional_expires_at ? ' · expires ' + new Date(ac.promotional_expires_at).toLocaleDateString() : ''))
          : null),
      hint ? notice('warn', hint, ' ', !can('billing')
        ? 'Ask an owner, admin or billing member of the account to add credits.'
        : ctx.config.payments ? h('a', { href: '#buy' }, 'Buy credits') : null) : null);
  }

  function lowBalanceHint(cr, ps) {
    const bal = creditsNumber(cr.balance);
    const ar = cr.autoRecharge || {};
    if (bal <= 0) return 'You are out of credits: API calls are refused until you add more.';
    if (ar.enabled && !ar.disabledReason) return '';
    if (ar.threshold !== null && ar.threshold !== undefined && bal < creditsNumber(ar.threshold)) {
      return 'Your balance is below your threshold of ' + credits(ar.threshold) + ' credits.';
    }
    const smallest = Math.min(...ps.map((p) => creditsNumber(p.credits_after_fee)));
    if (Number.isFinite(smallest) && bal < smallest / 10) return 'Your balance is running low.';
    return '';
  }

  function renderAutoRecharge(el, ar, ps) {
    if (!ps.length) {
      replace(el, empty('No credit packs are on sale, so auto-recharge is not available.'));
      return;
    }
    const enabled = h('input', { type: 'checkbox', id: 'ar-enabled' });
    enabled.checked = !!ar.enabled;
    const threshold = field({ label: 'When the balance falls below (credits)', inputmode: 'decimal', value: ar.threshold ?? '', placeholder: 'e.g. 1000', autocomplete: 'off' });
    const pack = field({ label: 'Buy this pack', type: 'select' });
    for (const p of ps) {
      const o = h('option', { value: p.key }, `${p.name} — ${money(p.price_minor, p.currency)} for ${credits(p.credits_after_fee)} credits`);
      if (p.key === ar.packId) o.selected = true;
      pack.input.append(o);
    }
    const limit = field({
      label: `Spending limit per billing period (${(ar.currency || 'usd').toUpperCase()})`,
      inputmode: 'decimal', value: (ar.spendingLimit / 100).toFixed(2),
      hint: `Spent this period: ${money(ar.spent, ar.currency)}`,
    });
    const status = h('div');
    if (ar.disabledReason) status.append(notice('warn', 'Auto-recharge was turned off: ', ar.disabledReason));
    else if (ar.lastError) status.append(notice('warn', 'The last charge failed: ', ar.lastError));
    if (!ctx.config.payments) status.append(notice('info', 'Payments are not configured on this server: the setting is saved but no card is charged.'));
    const save = h('button.btn.btn-primary', { type: 'submit' }, 'Save');
    const form = h('form.form', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          const body = { enabled: enabled.checked, packId: pack.input.value };
          if (threshold.input.value.trim() !== '') body.threshold = threshold.input.value.trim();
          const cents = Math.round(Number(limit.input.value) * 100);
          if (!Number.isFinite(cents) || cents < 0) {
            toast('The spending limit must be an amount such as 50.00');
            return;
          }
          body.spendingLimit = cents;
          busy(save, async () => {
            try {
              const res = await api('PUT', '/api/billing/credits/auto-recharge', body);
              toast(res.enabled ? 'Auto-recharge is on' : 'Auto-recharge is off');
            } catch (err) {
              toast(errorText(err));
            }
          });
        },
      },
    },
    h('div.switch', enabled, h('label', { for: 'ar-enabled' }, 'Recharge automatically when my balance runs low')),
    threshold.el, pack.el, limit.el, status, h('div.actions', save));
    replace(el, form);
  }

  async function buy(main) {
    const el = h('div', loading('Loading packs'));
    replace(main, h('h1.sr-only', 'Buy credits'), card('Buy credits', el), card('Redeem a code', redeemForm()));
    await guard(el, async () => {
      const ps = await packs();
      if (!ctx.config.payments) {
        replace(el, empty('Purchases are not available on this server yet.'));
        return;
      }
      if (!ps.length) {
        replace(el, empty('No credit packs are on sale right now.'));
        return;
      }
      replace(el,
        h('p.lead', 'Pay securely with Stripe. Credits are added as soon as the payment is confirmed.'),
        h('ul.packs', ps.map((p) => {
          const btn = button(`Buy ${p.name}`, () => busy(btn, async () => {
            try {
              const res = await api('POST', '/v1/billing/checkout', { pack: p.key });
              location.assign(res.url);
            } catch (err) {
              toast(errorText(err));
            }
          }), { 'data-pack': p.key });
          return h('li.pack',
            h('h3', p.name),
            h('p.pack-credits', h('strong', credits(p.credits_after_fee)), ' credits'),
            h('p.pack-price', money(p.price_minor, p.currency)),
            h('p.pack-fee', p.fee_minor > 0
              ? `Includes a ${money(p.fee_minor, p.currency)} processing fee (${(p.fee_bps / 100).toFixed(p.fee_bps % 100 ? 2 : 0)}%)`
              : 'No processing fee'),
            p.note ? h('p.pack-note', p.note) : null,
            btn);
        })));
    });
  }

  // redeemForm: a promotional code's credits, once per account. They are
  // spent before paid credits and may expire.
  function redeemForm() {
    const code = field({ label: 'Promotional code', maxlength: 64, autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'e.g. WELCOME-2026' });
    const submit = h('button.btn.btn-secondary', { type: 'submit' }, 'Redeem');
    const out = h('div');
    const form = h('form.form.form-inline', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          const value = code.input.value.trim();
          if (!value) return;
          busy(submit, async () => {
            try {
              const res = await api('POST', '/v1/billing/redeem', { code: value });
              form.reset();
              replace(out, notice('ok', h('strong', `${credits(res.credits)} promotional credits added.`),
                ` New balance: ${credits(res.balance)} credits.`,
                res.expires_at ? ` The promotional credits expire on ${date(res.expires_at)}.` : ''));
            } catch (err) {
              replace(out, failure(err));
            }
          });
        },
      },
    }, code.el, h('div.actions', submit));
    return h('div', h('p.lead', 'Promotional credits are spent before the credits you bought.'), form, out);
  }

  async function usage(main) {
    const chartEl = h('div.chart-box', loading('Loading usage'));
    const tableEl = h('div');
    const metric = { value: 'credits' };
    const toggle = h('div.segmented', { role: 'radiogroup', 'aria-label': 'Chart shows' });
    replace(main, h('h1.sr-only', 'Usage'),
      card('Usage, last 30 days', h('div.card-tools', toggle), chartEl),
      card('By model', tableEl));
    await guard(chartEl, async () => {
      const res = await api('GET', '/api/billing/usage/daily?days=30');
      const rows = res.data || [];
      const days = lastDays(30);
      const models = [...new Set(rows.map((r) => r.model))].sort();
      if (!rows.length) {
        replace(chartEl, empty('No usage in the last 30 days. Calls made with your API keys appear here within a few seconds.'));
        replace(tableEl, empty('Nothing to show yet.'));
        return;
      }
      const at = new Map(rows.map((r) => [r.date + '\u0000' + r.model, r]));
      const get = (d, i) => at.get(d + '\u0000' + models[i]);
      const render = () => draw(chartEl, {
        days, series: models,
        unit: metric.value === 'credits' ? 'credits' : 'tokens',
        ariaLabel: metric.value === 'credits' ? 'Credits used per day over the last 30 days, by model' : 'Tokens used per day over the last 30 days, by model',
        values: (d, i) => {
          const r = get(d, i);
          if (!r) return 0;
          return metric.value === 'credits' ? creditsNumber(r.credits) : r.inputTokens + r.outputTokens;
        },
        label: (d, i) => {
          const r = get(d, i);
          return `${d} · ${models[i]}: ${credits(r.credits)} credits, ${integer(r.inputTokens)} input and ${integer(r.outputTokens)} output tokens, ${integer(r.requests)} requests`;
        },
      });
      replace(toggle, [['credits', 'Credits'], ['tokens', 'Tokens']].map(([v, label]) => {
        const b = h('button.seg', { type: 'button', role: 'radio', 'aria-checked': String(metric.value === v) }, label);
        b.addEventListener('click', () => {
          metric.value = v;
          for (const o of toggle.children) o.setAttribute('aria-checked', String(o === b));
          render();
        });
        return b;
      }));
      render();
      ctx.onResize(render);
      // Sum per model with exact milli-credit integers.
      const sums = new Map();
      for (const r of rows) {
        const t = sums.get(r.model) || { model: r.model, requests: 0, inputTokens: 0, outputTokens: 0, mc: 0n };
        t.requests += r.requests; t.inputTokens += r.inputTokens; t.outputTokens += r.outputTokens;
        t.mc += toMC(r.credits);
        sums.set(r.model, t);
      }
      replace(tableEl, table('Usage by model over the last 30 days', [
        { label: 'Model', value: (r) => h('span.mono', r.model || '(unnamed)') },
        { label: 'Requests', num: true, value: (r) => integer(r.requests) },
        { label: 'Input tokens', num: true, value: (r) => integer(r.inputTokens) },
        { label: 'Output tokens', num: true, value: (r) => integer(r.outputTokens) },
        { label: 'Credits', num: true, value: (r) => credits(fromMC(r.mc)) },
      ], [...sums.values()].sort((a, b) => (b.mc > a.mc ? 1 : b.mc < a.mc ? -1 : 0))));
    });
  }

  async function keys(main) {
    const listEl = h('div', loading('Loading keys'));
    const createdEl = h('div');
    const name = field({ label: 'Name', maxlength: 100, placeholder: 'e.g. production server', autocomplete: 'off', required: true });
    const limit = field({ label: 'Credit limit (optional)', inputmode: 'decimal', placeholder: 'No limit', autocomplete: 'off', hint: 'The most this key may spend, in credits.' });
    const create = h('button.btn.btn-primary', { type: 'submit' }, 'Create key');
    const form = h('form.form.form-inline', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          const body = { name: name.input.value.trim() };
          if (limit.input.value.trim() !== '') body.credit_limit = limit.input.value.trim();
          busy(create, async () => {
            try {
              const k = await api('POST', '/v1/keys', body);
              form.reset();
              showNewKey(createdEl, k);
              await loadKeys(listEl);
            } catch (err) {
              replace(createdEl, notice('error', errorText(err)));
            }
          });
        },
      },
    }, name.el, limit.el, h('div.actions', create));
    replace(main, h('h1.sr-only', 'API keys'),
      card('Create an API key', form, createdEl),
      card('Your API keys', listEl));
    await loadKeys(listEl);
  }

  function showNewKey(el, k) {
    const secret = h('code.secret', { 'data-testid': 'new-key' }, k.key);
    const copy = button('Copy', async () => {
      const ok = await copyText(k.key, secret);
      replace(copy, ok ? 'Copied' : 'Press Ctrl+C');
      toast(ok ? 'Key copied to the clipboard' : 'Select the key and copy it');
    }, { kind: 'secondary', 'aria-label': 'Copy the new key' });
    replace(el, h('div.newkey', { role: 'status' },
      h('p', h('strong', 'Key “', k.name, '” created.'), ' Copy it now: it is shown only once.'),
      h('div.secret-row', secret, copy)));
  }

  async function loadKeys(el) {
    await guard(el, async () => {
      const res = await api('GET', '/v1/keys');
      const ks = (res.data || []).slice().sort((a, b) => (a.revoked - b.revoked) || b.created_at.localeCompare(a.created_at));
      if (!ks.length) {
        replace(el, empty('No API keys yet. Create one above to start calling the API.'));
        return;
      }
      replace(el, table('API keys', [
        { label: 'Name', value: (k) => h('span.keyname', k.name) },
        { label: 'Key', value: (k) => h('code', k.hint) },
        { label: 'Used', num: true, value: (k) => credits(k.used) },
        { label: 'Limit', num: true, value: (k) => (k.credit_limit === null ? 'No limit' : credits(k.credit_limit)) },
        { label: 'Created', value: (k) => date(k.created_at) },
        {
          label: 'Status', value: (k) => (k.revoked ? h('span.badge.badge-off', 'Revoked') : h('span.badge.badge-on', 'Active')),
        },
        {
          label: 'Actions', value: (k) => (k.revoked ? '' : button('Revoke', async (ev) => {
            const yes = await confirmDialog('Revoke this key?', `Calls made with “${k.name}” (${k.hint}) will be refused within a second. This cannot be undone.`, 'Revoke key');
            if (!yes) return;
            await busy(ev.target, async () => {
              try {
                await api('DELETE', '/v1/keys/' + encodeURIComponent(k.id));
                toast('Key revoked');
                await loadKeys(el);
              } catch (err) {
                toast(errorText(err));
              }
            });
          }, { kind: 'danger-quiet', 'aria-label': `Revoke key ${k.name}` })),
        },
      ], ks));
    });
  }

  async function plan(main) {
    const el = h('div', loading('Loading your plan'));
    replace(main, h('h1.sr-only', 'Plan'), card('Plan', el));
    await guard(el, async () => {
      const u = await api('GET', '/api/billing/usage');
      const live = u.subscription;
      const head = live
        ? h('div.plan-head',
          h('p.plan-name', live.planName, ' ', h('span.badge.badge-on', live.status.replace('_', ' '))),
          h('p.muted', `${integer(live.seats)} seat${live.seats === 1 ? '' : 's'} · period ${date(u.period.start)} – ${date(u.period.end)}`),
          live.cancelAt ? notice('info', `Cancelled: the plan ends on ${date(live.cancelAt)}.`) : null)
        : h('div.plan-head', h('p.plan-name', 'No plan'), h('p.muted', `Pay as you go with credits. Period ${date(u.period.start)} – ${date(u.period.end)}.`));
      const lim = u.usage;
      const meters = h('div.meters',
        meter('Requests', lim.requests.used, lim.requests.limit, integer),
        meter('Input tokens', lim.inputTokens.used, lim.inputTokens.limit, integer),
        meter('Output tokens', lim.outputTokens.used, lim.outputTokens.limit, integer),
        meter('Credits', lim.credits.used, lim.credits.limit, credits, creditsNumber),
        meter('Active API keys', lim.apiKeys.used, lim.apiKeys.limit, integer),
        meter('Requests this minute', lim.requestsPerMinute.used, lim.requestsPerMinute.limit, integer));
      const actions = h('div.actions');
      // Buying, the portal and cancelling are billing's (a member reads the plan).
      const billing = ctx.config.payments && can('billing');
      if (billing) {
        actions.append(button('Manage billing', (ev) => busy(ev.target, async () => {
          try {
            const body = ctx.config.returnToConsole ? { returnUrl: consoleURL('plan') } : {};
            const res = await api('POST', '/api/billing/portal', body);
            location.assign(res.url);
          } catch (err) {
            toast(errorText(err));
          }
        }), { kind: 'secondary' }));
        if (live && !live.cancelAt) {
          actions.append(button('Cancel plan', async (ev) => {
            const yes = await confirmDialog('Cancel your plan?', `The ${live.planName} plan stays active until the end of the current period, then ends.`, 'Cancel plan');
            if (!yes) return;
            await busy(ev.target, async () => {
              try {
                await api('POST', '/api/billing/cancel');
                toast('Your plan will end at the end of the period');
                await plan(main);
              } catch (err) {
                toast(errorText(err));
              }
            });
          }, { kind: 'danger-quiet' }));
        }
      }
      const offers = (!live && billing && ctx.config.plans.length)
        ? h('div', h('h3', 'Subscribe'), h('ul.plans', ctx.config.plans.map((p) => h('li.plan',
          h('span.plan-offer', p.name),
          button(`Subscribe to ${p.name}`, (ev) => busy(ev.target, async () => {
            try {
              const body = { planId: p.id };
              if (ctx.config.returnToConsole) {
                body.successUrl = consoleURL('plan', 'success');
                body.cancelUrl = consoleURL('plan', 'cancel');
              }
              const res = await api('POST', '/api/billing/checkout', body);
              location.assign(res.url);
            } catch (err) {
              toast(errorText(err));
            }
          }))))))
        : null;
      replace(el, head, h('h3', 'This period'), meters, offers, actions.children.length ? actions : null,
        ctx.config.payments && !can('billing') ? h('p.muted', 'The account’s owners, admins and billing members choose and pay for its plan.') : null);
    });
  }

  function meter(label, used, limit, fmt, num = (x) => x) {
    const hasLimit = limit !== null && limit !== undefined;
    const pct = hasLimit ? Math.min(100, Math.round((num(used) / Math.max(num(limit), 1e-9)) * 100)) : 0;
    const bar = hasLimit
      ? h('progress', { max: 100, value: pct, 'aria-label': `${label}: ${pct}% of the limit`, class: pct >= 90 ? 'hot' : null })
      : null;
    return h('div.meter',
      h('div.meter-row', h('span', label), h('span.num', fmt(used), hasLimit ? ` of ${fmt(limit)}` : ' · no limit')),
      bar);
  }

  async function history(main) {
    const purchasesEl = h('div', loading('Loading purchases'));
    const txEl = h('div', loading('Loading transactions'));
    replace(main, h('h1.sr-only', 'History'), card('Purchases', purchasesEl), card('Transactions', txEl));
    await Promise.all([
      pager(purchasesEl, async (cursor) => {
        const res = await api('GET', '/v1/billing/history?limit=10' + (cursor ? '&starting_after=' + encodeURIComponent(cursor) : ''));
        const d = res.data || [];
        return { rows: d, next: res.has_more && d.length ? d[d.length - 1].id : null };
      }, 'No purchases yet.', (rows) => table('Purchases', [
        { label: 'Date', value: (r) => dateTime(r.created_at) },
        { label: 'What', value: (r) => r.description || kindLabel(r.type) },
        { label: 'Paid', num: true, value: (r) => (r.price_minor != null ? money(r.price_minor, r.currency) : '—') },
        { label: 'Credits', num: true, value: (r) => h('span', { class: amountClass(r.amount) }, credits(r.amount)) },
        { label: 'Balance after', num: true, value: (r) => credits(r.balance_after) },
      ], rows)),
      pager(txEl, async (cursor) => {
        const res = await api('GET', '/api/billing/credits?limit=20' + (cursor ? '&startingAfter=' + encodeURIComponent(cursor) : ''));
        return { rows: res.transactions || [], next: res.hasMore ? res.nextCursor : null };
      }, 'No transactions yet.', (rows) => table('Transactions', [
        { label: 'Date', value: (r) => (r.type === 'usage' ? date(r.createdAt) : dateTime(r.createdAt)) },
        { label: 'Type', value: (r) => kindLabel(r.type) },
        { label: 'Description', value: (r) => r.description },
        { label: 'Credits', num: true, value: (r) => h('span', { class: amountClass(r.amount) }, credits(r.amount)) },
      ], rows)),
    ]);
  }

  // team: the account's members, their roles and budgets, and the audit
  // log, for owners and admins (the only roles shown the tab). A role
  // changed since the page loaded may still be answered 403: the view then
  // says who can help instead of showing an error.
  async function team(main) {
    const denied = () => replace(main, h('h1.sr-only', 'Team'), card('Team',
      notice('info', 'Only the account’s owners and admins see and manage its members and audit log. Ask one of them to add someone or change a role.')));
    // Only owners grant, change or remove the owner role, or set an owner's budget.
    const isOwner = ctx.me.role === 'owner';
    const grantable = ROLES.filter(([v]) => isOwner || v !== 'owner');
    const membersEl = h('div', loading('Loading members'));
    const auditEl = h('div', loading('Loading the audit log'));
    const formOut = h('div');
    const user = field({ label: 'User id', maxlength: 128, autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'e.g. user_42', hint: 'Their user id in your app (the token’s subject).' });
    const role = field({ label: 'Role', type: 'select', hint: 'Members use the API with their own keys; billing members also buy credits; admins also manage every key and the team; owners, everything.' });
    for (const [v, label] of grantable) role.input.append(h('option', { value: v }, label));
    const add = h('button.btn.btn-primary', { type: 'submit' }, 'Add member');
    let current = [];
    const form = h('form.form.form-inline', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          const body = { user: user.input.value.trim(), role: role.input.value };
          if (!body.user) return;
          const had = current.find((m) => m.user === body.user);
          busy(add, async () => {
            try {
              await api('POST', '/v1/members', body);
              form.reset();
              replace(formOut);
              toast(had ? `${body.user} is now ${body.role}` : `${body.user} added as ${body.role}`);
              await refresh();
            } catch (err) {
              replace(formOut, failure(err));
            }
          });
        },
      },
    }, user.el, role.el, h('div.actions', add));

    // afterChange reloads the list, or the whole console when the caller
    // changed its own role (what it may see changes with it).
    const afterChange = async (m) => {
      if (m.user === ctx.me.user) {
        location.reload();
        return;
      }
      await refresh();
    };

    // roleCell: a select per member whose role the caller may change (an
    // owner's only by an owner; the last owner's by no one), else the role.
    const roleCell = (m, owners) => {
      const badge = h('span.badge', { class: m.role === 'owner' || m.role === 'admin' ? 'badge-on' : 'badge-off' }, m.role);
      if (m.role === 'owner' && (!isOwner || owners <= 1)) return badge;
      const sel = h('select.row-select', { 'aria-label': `Role of ${m.user}`, 'data-user': m.user });
      for (const [v, label] of grantable) {
        const o = h('option', { value: v }, label);
        if (v === m.role) o.selected = true;
        sel.append(o);
      }
      sel.addEventListener('change', async () => {
        const to = sel.value;
        const what = (ROLES.find((r) => r[0] === to) || [])[2] || '';
        const self = m.user === ctx.me.user ? ' This is you: what you may do here changes with it.' : '';
        if (!await confirmDialog(`Make ${m.user} ${roleLabel(to).toLowerCase()}?`, `${roleLabel(to)}: ${what}.${self}`, 'Change role')) {
          sel.value = m.role;
          sel.focus();
          return;
        }
        sel.disabled = true;
        try {
          await api('PATCH', '/v1/members/' + encodeURIComponent(m.user), { role: to });
          toast(`${m.user} is now ${to}`);
          await afterChange(m);
        } catch (err) {
          sel.value = m.role;
          sel.disabled = false;
          toast(errorText(err));
        }
      });
      return sel;
    };

    async function loadMembers() {
      const res = await api('GET', '/v1/members');
      current = res.data || [];
      const owners = current.filter((m) => m.role === 'owner').length;
      // An owner's budget and membership are an owner's to change.
      const mine = (m) => isOwner || m.role !== 'owner';
      replace(membersEl, table('Team members', [
        { label: 'User', value: (m) => h('span.ident', m.user, m.user === ctx.me.user ? h('span.muted', ' (you)') : null) },
        { label: 'Role', value: (m) => roleCell(m, owners) },
        { label: 'Budget', num: true, value: (m) => (m.budget ? `${credits(m.budget.credits)} / ${m.budget.period}` : 'No budget') },
        // Spend is counted against a budget: without one there is none to show.
        { label: 'Used this period', num: true, value: (m) => (m.budget ? credits(m.period_used) : '—') },
        {
          label: 'Actions', value: (m) => h('div.row-actions',
            mine(m) ? button(m.budget ? 'Edit budget' : 'Set budget', () => budgetDialog(m), { kind: 'quiet', 'aria-label': `${m.budget ? 'Edit' : 'Set'} budget of ${m.user}` }) : null,
            // The last owner cannot be removed (the API refuses): no button.
            !mine(m) || (m.role === 'owner' && owners <= 1) ? null : button('Remove', async (ev) => {
              if (!await confirmDialog('Remove this member?', `${m.user} will no longer act for this account, and the API keys they created are revoked.`, 'Remove member')) return;
              await busy(ev.target, async () => {
                try {
                  await api('DELETE', '/v1/members/' + encodeURIComponent(m.user));
                  toast(`${m.user} removed`);
                  await afterChange(m);
                } catch (err) {
                  toast(errorText(err));
                }
              });
            }, { kind: 'danger-quiet', 'aria-label': `Remove member ${m.user}` })),
        },
      ], current));
    }

    // budgetDialog edits a member's budget: the credits all the keys they
    // created may spend together per period. Esc or Cancel changes nothing.
    function budgetDialog(m) {
      const titleId = uid('dlg');
      const amount = field({ label: 'Credits per period', inputmode: 'decimal', autocomplete: 'off', required: true, placeholder: 'e.g. 500',
        value: m.budget ? m.budget.credits : '', hint: 'What all the API keys this member created may spend together.' });
      const period = field({ label: 'Period', type: 'select', hint: 'Periods start at 00:00 UTC; weeks on Monday, months on the 1st.' });
      for (const [v, label] of PERIODS) {
        const o = h('option', { value: v }, label);
        if (v === (m.budget ? m.budget.period : 'month')) o.selected = true;
        period.input.append(o);
      }
      const out = h('div');
      const save = h('button.btn.btn-primary', { type: 'submit' }, 'Save budget');
      const send = (btn, budget) => busy(btn, async () => {
        try {
          const res = await api('PATCH', '/v1/members/' + encodeURIComponent(m.user), { budget });
          dlg.close();
          toast(res.budget ? `${m.user}’s budget is ${credits(res.budget.credits)} credits per ${res.budget.period}` : `${m.user} has no budget now`);
          await afterChange(m);
        } catch (err) {
          replace(out, failure(err));
        }
      });
      const dlg = h('dialog.dialog', { 'aria-labelledby': titleId },
        h('form.form', {
          on: {
            submit: (ev) => {
              ev.preventDefault();
              const v = amount.input.value.trim().replace(/,/g, '');
              if (!CREDITS_RE.test(v) || !/[1-9]/.test(v)) {
                replace(out, notice('error', 'Enter a number of credits greater than zero, such as 500 or 12.5.'));
                amount.input.focus();
                return;
              }
              send(save, { credits: v, period: period.input.value });
            },
          },
        },
        h('h2', { id: titleId }, `Budget of ${m.user}`),
        amount.el, period.el, out,
        h('div.actions',
          button('Cancel', () => dlg.close(), { kind: 'quiet' }),
          m.budget ? button('Remove budget', (ev) => send(ev.target, null), { kind: 'danger-quiet' }) : null,
          save)));
      dlg.addEventListener('close', () => dlg.remove());
      document.body.append(dlg);
      dlg.showModal();
      amount.input.focus();
    }

    async function loadAudit() {
      if (!can('audit')) {
        replace(auditEl, empty('The audit log is for the account’s owners and admins.'));
        return;
      }
      await guard(auditEl, async () => {
        const res = await api('GET', '/v1/audit?limit=50');
        const rows = res.data || [];
        if (!rows.length) {
          replace(auditEl, empty('Nothing recorded yet. Member and key changes appear here.'));
          return;
        }
        replace(auditEl, table('Audit log entries', [
          { label: 'When', value: (e) => dateTime(e.created_at) },
          { label: 'Actor', value: (e) => h('span.ident', e.actor) },
          { label: 'Action', value: (e) => h('code', e.action) },
          { label: 'Target', value: (e) => h('span.ident', e.target) },
          { label: 'Id', value: (e) => h('span.detail', e.id) },
        ], rows), res.has_more ? h('p.muted', 'The newest 50 entries.') : null);
      });
    }

    const refresh = () => guard(membersEl, loadMembers).then(loadAudit);
    try {
      await loadMembers();
    } catch (err) {
      if (err.status === 403) {
        denied();
        return;
      }
      replace(membersEl, notice('error', errorText(err)));
    }
    replace(main, h('h1.sr-only', 'Team'),
      card('Add a member', form, formOut),
      card('Members', membersEl),
      card('Audit log', auditEl));
    await loadAudit();
  }

  // pager shows pages one at a time with Newer/Older buttons (cursor pages).
  async function pager(el, fetchPage, emptyText, render) {
    const stack = [null];
    const show = async () => {
      const cursor = stack[stack.length - 1];
      await guard(el, async () => {
        const { rows, next } = await fetchPage(cursor);
        if (!rows.length && stack.length === 1) {
          replace(el, empty(emptyText));
          return;
        }
        const newer = button('Newer', () => { stack.pop(); show(); }, { kind: 'quiet', disabled: stack.length === 1 });
        const older = button('Older', () => { stack.push(next); show(); }, { kind: 'quiet', disabled: !next });
        replace(el, render(rows), h('nav.pager', { 'aria-label': 'Pages' }, newer, h('span.muted', `Page ${stack.length}`), older));
      });
    };
    await show();
  }

  const views = { overview, buy, usage, keys, plan, history, team };
  return Object.fromEntries(SECTIONS.filter(([, , need]) => can(need)).map(([id]) => [id, views[id]]));
}

function kindLabel(t) {
  return ({ purchase: 'Purchase', auto_recharge: 'Auto-recharge', refund: 'Refund', dispute: 'Dispute', dispute_won: 'Dispute won', grant: 'Credit', usage: 'Usage', adjustment: 'Adjustment', expiry: 'Expired' })[t] || t;
}

function amountClass(v) {
  return String(v).startsWith('-') ? 'neg' : 'pos';
}

export function consoleURL(section, billing) {
  const u = new URL(location.origin + location.pathname);
  if (billing) u.searchParams.set('billing', billing);
  u.hash = section;
  return u.toString();
}

// toMC/fromMC: exact credit sums as BigInt milli-credits.
function toMC(v) {
  const t = typeof v === 'number' ? v.toFixed(3) : String(v);
  const neg = t.startsWith('-');
  const [i, f = ''] = t.replace('-', '').split('.');
  const mc = BigInt(i) * 1000n + BigInt((f + '000').slice(0, 3));
  return neg ? -mc : mc;
}

function fromMC(mc) {
  const neg = mc < 0n;
  const a = neg ? -mc : mc;
  return (neg ? '-' : '') + (a / 1000n).toString() + '.' + (a % 1000n).toString().padStart(3, '0');
}
