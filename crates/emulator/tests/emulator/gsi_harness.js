// Runs the emulator's /gsi/client script in a fake browser window and checks what it does.
//
//   node gsi_harness.js SCRIPT_FILE AUTH_ENDPOINT EMULATOR_ORIGIN CLIENT_ID
//
// The window is a plain object used as the global of a fresh `vm` context, so the script sees
// the JavaScript built-ins and what the window offers, nothing of Node's. Timers are driven by
// hand, so the closed-popup check runs when the harness says, not after a delay. The last part
// is a real round trip: the harness fetches the consent page the popup was opened on, submits
// it, and hands the message of the popup's last page to the script; it prints the code it got
// on its last line (JSON) for the caller to exchange.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const vm = require('node:vm');

const [scriptFile, authEndpoint, emulatorOrigin, clientId] = process.argv.slice(2);
assert.ok(scriptFile && authEndpoint && emulatorOrigin && clientId, 'usage: SCRIPT AUTH ORIGIN CLIENT_ID');
assert.equal(typeof fetch, 'function', 'node 18 or later is needed (global fetch)');
const source = fs.readFileSync(scriptFile, 'utf8');

const APP_HOST = '127.0.0.1:5555';
let checks = 0;
function check(ok, what) {
  assert.ok(ok, what);
  checks += 1;
}
function same(actual, expected, what) {
  // Objects made inside the vm context have its prototypes: compare their JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(actual)), expected, what);
  checks += 1;
}

// A window.open result: records its URL, name and features, and whether it was closed.
function fakePopup(url, name, features) {
  return { url, name, features, closed: false, closedByScript: false, close() { this.closedByScript = true; this.closed = true; } };
}

function makeWindow(opts) {
  const w = {
    opened: [],
    assigned: [],
    listeners: {},
    timers: new Map(),
    nextTimer: 0,
    openReturnsNull: false,
    location: {
      protocol: 'http:',
      host: APP_HOST,
      assign(url) { w.assigned.push(url); },
    },
    open(url, name, features) {
      if (w.openReturnsNull) { return null; }
      const p = fakePopup(url, name, features);
      w.opened.push(p);
      return p;
    },
    addEventListener(type, fn) { (w.listeners[type] = w.listeners[type] || []).push(fn); },
    setInterval(fn, ms) { w.nextTimer += 1; w.timers.set(w.nextTimer, { fn, ms }); return w.nextTimer; },
    clearInterval(id) { w.timers.delete(id); },
    crypto: require('node:crypto').webcrypto,
    screenX: 0, screenY: 0, outerWidth: 1200, outerHeight: 900,
  };
  Object.assign(w, opts || {});
  w.window = w;
  return w;
}

function tick(w) {
  for (const t of Array.from(w.timers.values())) { t.fn(); }
}
function post(w, message) {
  for (const fn of w.listeners.message || []) { fn(message); }
}

// Loads the script into a new window (or the one given) and returns it.
function load(w) {
  const win = w || makeWindow();
  vm.createContext(win);
  vm.runInContext(source, win, { filename: 'gsi/client' });
  return win;
}

// A client whose callbacks record what they receive.
function client(win, extra) {
  const seen = { responses: [], errors: [] };
  const config = Object.assign({
    client_id: clientId,
    scope: 'openid email https://www.googleapis.com/auth/drive.appdata',
    callback: (r) => seen.responses.push(r),
    error_callback: (e) => seen.errors.push(e),
  }, extra || {});
  return { c: win.google.accounts.oauth2.initCodeClient(config), seen };
}

function queryOf(url) {
  const u = new URL(url);
  return { endpoint: u.origin + u.pathname, q: Object.fromEntries(u.searchParams.entries()) };
}

async function main() {
  // Loading: only window.google appears, merged into what was there.
  {
    const w = makeWindow({ google: { accounts: { id: { marker: 1 } } } });
    const before = Object.keys(w).sort();
    load(w);
    same(Object.keys(w).sort(), before, 'the script adds no global beyond window.google');
    check(w.google.accounts.id.marker === 1, 'an existing window.google is kept');
    check(typeof w.google.accounts.oauth2.initCodeClient === 'function', 'initCodeClient exists');
    check(w.listeners.message.length === 1, 'one message listener');
    const fresh = load();
    check(typeof fresh.google.accounts.oauth2.hasGrantedAllScopes === 'function', 'window.google is created');
    assert.throws(() => fresh.google.accounts.oauth2.initCodeClient({ scope: 'openid' }), /client_id/);
    assert.throws(() => fresh.google.accounts.oauth2.initCodeClient({ client_id: clientId }), /scope/);
    checks += 2;
  }

  // requestCode opens the consent page with Google's code-model parameters.
  {
    const w = load();
    const { c, seen } = client(w, { login_hint: 'alice@example.com' });
    c.requestCode();
    check(w.opened.length === 1, 'one popup opened');
    const popup = w.opened[0];
    const { endpoint, q } = queryOf(popup.url);
    check(endpoint === authEndpoint, `popup opens ${authEndpoint}, not ${endpoint}`);
    check(q.client_id === clientId, 'client_id');
    check(q.scope === 'openid email https://www.googleapis.com/auth/drive.appdata', 'scope');
    check(q.response_type === 'code', 'response_type=code');
    check(q.access_type === 'offline', 'access_type=offline');
    check(q.include_granted_scopes === 'true', 'include_granted_scopes defaults to true');
    check(q.login_hint === 'alice@example.com', 'login_hint');
    check(!('prompt' in q) && !('state' in q), 'no prompt or state unless asked');
    const relay = /^storagerelay:\/\/http\/127\.0\.0\.1:5555\?id=(auth\d+)$/.exec(q.redirect_uri);
    check(relay !== null, `storagerelay redirect_uri: ${q.redirect_uri}`);
    check(/width=500/.test(popup.features) && /height=600/.test(popup.features), 'a 500x600 popup');
    const timers = Array.from(w.timers.values());
    check(timers.length === 1 && timers[0].ms === 500, 'the popup is polled every 500 ms');

    // Messages that are not the answer to this request are ignored.
    const answer = { code: '4/0abc', scope: 'openid https://www.googleapis.com/auth/userinfo.email', authuser: '0', prompt: 'consent' };
    post(w, { origin: 'http://127.0.0.1:1', source: popup, data: answer });
    post(w, { origin: 'http://' + APP_HOST, source: popup, data: answer });
    post(w, { origin: emulatorOrigin, source: fakePopup('x'), data: answer });
    post(w, { origin: emulatorOrigin, source: popup, data: Object.assign({ state: 'forged' }, answer) });
    post(w, { origin: emulatorOrigin, source: popup, data: 'webpackHotUpdate' });
    post(w, { origin: emulatorOrigin, source: popup, data: { type: 'other' } });
    check(seen.responses.length === 0 && seen.errors.length === 0, 'foreign messages are ignored');

    post(w, { origin: emulatorOrigin, source: popup, data: answer });
    same(seen.responses, [answer], 'the answer reaches the callback');
    check(w.timers.size === 0, 'polling stops with the answer');
    post(w, { origin: emulatorOrigin, source: popup, data: answer });
    check(seen.responses.length === 1, 'an answer is delivered once');
    tick(w);
    check(seen.errors.length === 0, 'no error after an answer');
  }

  // An OAuth error comes to the callback, with the request's state.
  {
    const w = load();
    const { c, seen } = client(w, { state: 'st-1', include_granted_scopes: false });
    c.requestCode();
    const popup = w.opened[0];
    const { q } = queryOf(popup.url);
    check(q.state === 'st-1', 'state is sent');
    check(q.include_granted_scopes === 'false', 'include_granted_scopes=false is sent');
    post(w, { origin: emulatorOrigin, source: popup, data: { error: 'access_denied' } });
    check(seen.responses.length === 0, 'an answer without the state is ignored');
    post(w, { origin: emulatorOrigin, source: popup, data: { error: 'access_denied', state: 'st-1' } });
    same(seen.responses, [{ error: 'access_denied', state: 'st-1' }], 'access_denied reaches the callback');
    check(seen.errors.length === 0, 'not the error_callback');
  }

  // A popup that cannot open.
  {
    const w = load();
    w.openReturnsNull = true;
    const { c, seen } = client(w);
    c.requestCode();
    check(seen.errors.length === 1 && seen.errors[0].type === 'popup_failed_to_open', 'popup_failed_to_open');
    check(typeof seen.errors[0].message === 'string' && w.timers.size === 0, 'with a message, and nothing polled');
  }

  // A popup the user closes.
  {
    const w = load();
    const { c, seen } = client(w);
    c.requestCode();
    tick(w);
    check(seen.errors.length === 0, 'an open popup is no error');
    w.opened[0].closed = true;
    tick(w);
    tick(w);
    same(seen.errors.map((e) => e.type), ['popup_closed'], 'popup_closed');
    check(w.timers.size === 0 && seen.responses.length === 0, 'polling stops, no callback');
    tick(w);
    check(seen.errors.length === 1, 'reported once');
  }

  // An answer posted just before the popup closed wins over the closed check.
  {
    const w = load();
    const { c, seen } = client(w);
    c.requestCode();
    const popup = w.opened[0];
    popup.closed = true;
    tick(w);
    post(w, { origin: emulatorOrigin, source: popup, data: { code: '4/0late', scope: 'openid' } });
    tick(w);
    same(seen.responses, [{ code: '4/0late', scope: 'openid' }], 'the answer wins');
    check(seen.errors.length === 0, 'no popup_closed');
  }

  // A new requestCode replaces the pending one.
  {
    const w = load();
    const { c, seen } = client(w);
    c.requestCode();
    c.requestCode({ state: 'second' });
    const [first, second] = w.opened;
    check(first.closedByScript && !second.closed, 'the first popup is closed');
    check(queryOf(first.url).q.redirect_uri !== queryOf(second.url).q.redirect_uri, 'each popup has its own id');
    check(w.timers.size === 1, 'one poll');
    tick(w);
    tick(w);
    check(seen.errors.length === 0, 'the replaced popup is not reported closed');
    post(w, { origin: emulatorOrigin, source: first, data: { code: '4/0old', scope: 'openid' } });
    check(seen.responses.length === 0, 'the replaced popup is not listened to');
    post(w, { origin: emulatorOrigin, source: second, data: { code: '4/0new', scope: 'openid', state: 'second' } });
    same(seen.responses, [{ code: '4/0new', scope: 'openid', state: 'second' }], 'the new popup answers');
  }

  // select_account, and prompt as an extension.
  {
    const w = load();
    client(w, { select_account: true }).c.requestCode();
    client(w, { prompt: 'consent' }).c.requestCode();
    client(w, { prompt: 'consent', select_account: true, hd: 'example.com' }).c.requestCode();
    const prompts = w.opened.map((p) => queryOf(p.url).q.prompt);
    same(prompts, ['select_account', 'consent', 'consent select_account'], 'prompt values');
    check(queryOf(w.opened[2].url).q.hd === 'example.com', 'hd is passed on');
  }

  // Redirect mode navigates the window.
  {
    const w = load();
    const { c } = client(w, { ux_mode: 'redirect', redirect_uri: 'http://127.0.0.1:5555/oauth2/callback', state: 'r1' });
    c.requestCode();
    check(w.opened.length === 0 && w.assigned.length === 1, 'redirect mode opens no popup');
    const { endpoint, q } = queryOf(w.assigned[0]);
    check(endpoint === authEndpoint, 'redirect mode goes to the endpoint');
    check(q.redirect_uri === 'http://127.0.0.1:5555/oauth2/callback' && q.state === 'r1', 'with redirect_uri and state');
    check(q.response_type === 'code' && q.access_type === 'offline', 'a code for offline access');
  }

  // hasGrantedAllScopes / hasGrantedAnyScope read the response's scope string.
  {
    const o = load().google.accounts.oauth2;
    const r = { code: 'x', scope: 'openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/drive.appdata' };
    check(o.hasGrantedAllScopes(r, 'openid', 'https://www.googleapis.com/auth/drive.appdata'), 'all granted');
    check(o.hasGrantedAllScopes(r, 'email'), 'short names are understood');
    check(!o.hasGrantedAllScopes(r, 'openid', 'https://www.googleapis.com/auth/drive.file'), 'not all granted');
    check(o.hasGrantedAnyScope(r, 'https://www.googleapis.com/auth/drive.file', 'openid'), 'any granted');
    check(!o.hasGrantedAnyScope(r, 'https://www.googleapis.com/auth/drive.file'), 'none granted');
    check(!o.hasGrantedAllScopes({ error: 'access_denied' }, 'openid') && !o.hasGrantedAnyScope(null, 'openid'), 'no scope, nothing granted');
  }

  // A real round trip through the emulator's consent page: allow, then cancel.
  let result;
  for (const action of ['allow', 'cancel']) {
    const w = load();
    const { c, seen } = client(w, { login_hint: 'alice@example.com', state: 'rt-' + action });
    c.requestCode();
    const popup = w.opened[0];
    const page = await fetch(popup.url);
    const html = await page.text();
    check(page.status === 200, `the consent page answers 200 to the script's URL: ${page.status} ${html.slice(0, 300)}`);
    const form = formOf(html);
    form.fields.push(['account', 'alice@example.com'], ['action', action]);
    for (const grant of grantsOf(html)) { form.fields.push(['grant', grant]); }
    const done = await fetch(form.action, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form.fields).toString(),
    });
    const last = await done.text();
    check(done.status === 200, `the popup's last page: ${done.status}`);
    const data = JSON.parse(/var data = (.*?); var origin/.exec(last)[1]);
    const origin = JSON.parse(/var origin = (.*?);/.exec(last)[1]);
    check(origin === 'http://' + APP_HOST, `the page posts to the app's origin, not ${origin}`);
    post(w, { origin: emulatorOrigin, source: popup, data });
    check(seen.responses.length === 1 && seen.errors.length === 0, 'the callback has the answer');
    const r = JSON.parse(JSON.stringify(seen.responses[0]));
    check(r.state === 'rt-' + action, 'with the state');
    if (action === 'allow') {
      check(typeof r.code === 'string' && r.code.startsWith('4/'), 'a code');
      check(w.google.accounts.oauth2.hasGrantedAllScopes(r, 'openid', 'email', 'https://www.googleapis.com/auth/drive.appdata'), 'every scope granted');
      result = { code: r.code, scope: r.scope };
    } else {
      same(r, { error: 'access_denied', state: 'rt-cancel' }, 'cancel is access_denied');
    }
  }

  process.stdout.write(JSON.stringify(Object.assign({ checks }, result)) + '\n');
}

function unescapeHtml(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}
function attr(tag, name) {
  const m = new RegExp(`\\b${name}="([^"]*)"`).exec(tag);
  return m ? unescapeHtml(m[1]) : undefined;
}
function formOf(html) {
  const action = attr(/<form[^>]*>/.exec(html)[0], 'action');
  const fields = (html.match(/<input[^>]*type="hidden"[^>]*>/g) || []).map((t) => [attr(t, 'name'), attr(t, 'value')]);
  return { action, fields };
}
// The scope checkboxes the user may untick, all left ticked.
function grantsOf(html) {
  return (html.match(/<input[^>]*type="checkbox"[^>]*>/g) || [])
    .filter((t) => attr(t, 'name') === 'grant' && / checked/.test(t))
    .map((t) => attr(t, 'value'));
}

// A watchdog, so that a hung fetch fails the run instead of stalling it.
setTimeout(() => { console.error('gsi harness: no result after 60 s'); process.exit(2); }, 60000).unref();
main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
