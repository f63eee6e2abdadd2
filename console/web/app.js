// app: start-up, the token handoff, and the router (#overview, #keys, …).
import { h, replace, field } from './dom.js';
import { call, session } from './api.js';
import { card, notice, loading, errorText } from './ui.js';
import { SECTIONS, customerViews } from './customer.js';
import { operatorView } from './operator.js';

const main = document.getElementById('main');
const tabs = document.getElementById('tabs');
const banner = document.getElementById('banner');
const who = document.getElementById('who');
const signout = document.getElementById('signout');

let resizeHandler = null;
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (resizeHandler) resizeHandler(); }, 150);
});

// handoff: /console/#token=<JWT> moves the token into sessionStorage and
// out of the address bar and history at once. The fragment never reaches
// the server.
function handoff() {
  const m = /^#token=([^&]+)/.exec(location.hash);
  if (!m) return;
  session.setUser(decodeURIComponent(m[1]));
  sessionStorage.removeItem('tollgate.console.admin');
  history.replaceState(null, '', location.pathname + location.search + '#overview');
}

// checkoutReturn shows what ?billing=success|cancel means, then drops it
// from the address bar.
function checkoutReturn() {
  const params = new URLSearchParams(location.search);
  const b = params.get('billing');
  if (!b) return;
  if (b === 'success') {
    banner.append(notice('ok', h('strong', 'Thank you — payment received.'), ' Your credits appear in your balance as soon as Stripe confirms the payment, usually within seconds.'));
  } else if (b === 'cancel') {
    banner.append(notice('info', 'Checkout was cancelled. You have not been charged.'));
  }
  params.delete('billing');
  const q = params.toString();
  history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  return b === 'success';
}

async function start() {
  handoff();
  const paid = checkoutReturn();
  let config;
  try {
    config = await call('GET', 'config.json');
  } catch (err) {
    replace(main, notice('error', errorText(err)));
    return;
  }
  const ctx = { config, token: session.user(), admin: session.admin(), onResize: (fn) => { resizeHandler = fn; } };
  signout.addEventListener('click', () => {
    session.clear();
    location.replace(location.pathname);
  });
  if (ctx.admin) return operator(ctx);
  if (ctx.token) return customer(ctx, paid);
  landing(ctx);
}

function landing(ctx) {
  tabs.hidden = true;
  const parts = [card('Open your billing console',
    h('p', 'This console is opened from your account page in the app you use. Go back to the app and choose “Billing” or “Credits” to continue.'),
    ctx.config.auth ? null : notice('info', 'Customer sign-in is not configured on this server.'))];
  if (ctx.config.admin) {
    const tok = field({ label: 'Admin token', type: 'password', autocomplete: 'off', required: true });
    parts.push(card('Operator sign-in', h('form.form.form-inline', {
      on: {
        submit: (ev) => {
          ev.preventDefault();
          session.setAdmin(tok.input.value.trim());
          location.replace(location.pathname + '#operator');
          location.reload();
        },
      },
    }, tok.el, h('div.actions', h('button.btn.btn-primary', { type: 'submit' }, 'Sign in')))));
  }
  replace(main, ...parts);
}

function operator(ctx) {
  who.textContent = 'Operator';
  signout.hidden = false;
  tabs.hidden = true;
  operatorView(ctx, main);
}

// customer asks who the caller is (GET /v1/me: its role and what the role
// may do) before it shows anything, and shows only the sections and
// controls the role may use: a member never meets a 403.
async function customer(ctx, paid) {
  signout.hidden = false;
  tabs.hidden = true;
  let me;
  try {
    me = await call('GET', '/v1/me', { token: ctx.token });
  } catch (err) {
    replace(main, notice('error', err.status === 403 && err.code === 'not_a_member'
      ? 'You are not a member of this account. Ask an owner or admin of the account to add you.'
      : errorText(err)));
    return;
  }
  const perms = new Set(me.permissions || []);
  ctx.me = me;
  ctx.can = (p) => perms.has(p);
  who.textContent = me.user === me.account ? `${me.user} · ${me.role}` : `${me.user} · ${me.role} of ${me.account}`;
  const views = customerViews(ctx);
  const sections = SECTIONS.filter(([id]) => views[id]);
  const links = new Map();
  replace(tabs, h('ul', sections.map(([id, label]) => {
    const a = h('a', { href: '#' + id, id: 'tab-' + id }, label);
    links.set(id, a);
    return h('li', a);
  })));
  tabs.hidden = false;
  const route = async (focus) => {
    let id = location.hash.slice(1);
    if (!views[id]) id = 'overview';
    for (const [k, a] of links) {
      if (k === id) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    resizeHandler = null;
    document.title = `${sections.find((s) => s[0] === id)[1]} · Billing console`;
    replace(main, loading());
    await views[id](main);
    if (focus) main.focus({ preventScroll: true });
  };
  window.addEventListener('hashchange', () => route(true));
  route(false).then(() => { if (paid && ctx.can('billing')) pollBalance(ctx); });
}

// pollBalance refreshes the overview a few times after Checkout, until the
// webhook's credit shows.
async function pollBalance(ctx) {
  const first = await call('GET', '/api/billing/credits?limit=1', { token: ctx.token }).catch(() => null);
  if (!first) return;
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    const now = await call('GET', '/api/billing/credits?limit=1', { token: ctx.token }).catch(() => null);
    if (now && now.balance !== first.balance) {
      if (location.hash === '#overview' || location.hash === '') window.dispatchEvent(new HashChangeEvent('hashchange'));
      return;
    }
  }
}

start();
