// api: the billing API over fetch. Credentials travel in the Authorization
// header only; they never appear in a URL.
import { parseJSON } from './format.js';

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `request failed (${status})`);
    this.status = status;
    this.code = e.code || '';
    this.param = e.param || '';
  }
}

export async function call(method, path, { token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer',
    });
  } catch {
    throw new ApiError(0, { error: { message: 'The billing service could not be reached. Check your connection and try again.', code: 'network' } });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = parseJSON(text); } catch { data = null; }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// Session storage: the customer's JWT and the operator's admin token live
// in this tab only.
const KEY_USER = 'tollgate.console.token';
const KEY_ADMIN = 'tollgate.console.admin';

export const session = {
  user: () => sessionStorage.getItem(KEY_USER) || '',
  admin: () => sessionStorage.getItem(KEY_ADMIN) || '',
  setUser(t) { sessionStorage.setItem(KEY_USER, t); },
  setAdmin(t) { sessionStorage.setItem(KEY_ADMIN, t); },
  clear() { sessionStorage.removeItem(KEY_USER); sessionStorage.removeItem(KEY_ADMIN); },
};
