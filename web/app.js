// grantkeeper's demo page: Google Identity Services' code model in a popup, the code POSTed to
// the server with X-Requested-With, and the server's view of the grant. No build step.
//
// How it speaks to the person: one short message next to the controls that caused it, the
// technical detail behind "Details"; a message goes once its cause is gone; a control that
// starts a request stays disabled until the request ends; a state the server reports
// (revoked, needs consent, no Drive access) shows where it matters, with the action that
// repairs it.
"use strict";

const CONFIG = JSON.parse(document.getElementById("gk-config").textContent);
const $ = (id) => document.getElementById(id);
const XRW = { "X-Requested-With": "XmlHttpRequest" };
const DRIVE = CONFIG.drive_scope;

// What to tell a person for each error code of the HTTP contract. Revoked grants and missing
// scopes are not messages: the page shows the grant's state instead.
const ERRORS = {
  network: "Could not reach the server. Check your connection and try again.",
  invalid_request: "The server could not read that request.",
  csrf: "The server refused the request from this page.",
  origin_not_allowed: "The server does not accept requests from this page's address.",
  code_rejected: "Google's sign-in code expired or was already used. Try again.",
  id_token_invalid: "Google's answer could not be verified, so nobody was signed in.",
  unauthorized: "Your session has ended. Sign in again.",
  forbidden: "Google sign-in is refused for this account.",
  not_found: "That is gone: it was deleted meanwhile.",
  grant_revoked: "Google access was revoked.",
  scope_not_granted: "You have not allowed the Drive access this needs.",
  payload_too_large: "That is too large.",
  unsupported_media_type: "The server does not accept this kind of content.",
  rate_limited: "Too many attempts. Wait a moment and try again.",
  upstream_error: "Google answered with an error. Try again.",
  upstream_unavailable: "Google cannot be reached right now; nothing was lost. Try again shortly.",
};

let me = null; // the server's answer to GET /me, or null when signed out
let gisReady = false;

// --- Messages ----------------------------------------------------------------------------

// Shows `text` in the message element `id` (kind: "ok", "error" or ""), with `detail` behind
// a disclosure, and brings it into view if the person is scrolled away from it.
function say(id, text, kind = "", detail = "") {
  const el = $(id);
  el.replaceChildren();
  const p = document.createElement("p");
  p.textContent = text;
  el.append(p);
  if (detail) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Details";
    const body = document.createElement("p");
    body.className = "detail";
    body.textContent = detail;
    details.append(summary, body);
    el.append(details);
  }
  el.className = "msg" + (kind ? " " + kind : "");
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.hidden = false;
  reveal(el);
}

// Brings `el` into view when the person is scrolled away from it.
function reveal(el) {
  const r = el.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) el.scrollIntoView({ block: "nearest" });
}

function unsay(...ids) {
  for (const id of ids) {
    $(id).hidden = true;
    $(id).replaceChildren();
  }
}

// Every message of the signed-in view: cleared when the person or the account changes.
const ACCOUNT_MESSAGES = ["drive-msg", "emulator-msg", "leave-msg"];

// An error answer as a message: the plain sentence, and the technical detail.
function sayError(id, r, plain) {
  const code = (r.body && r.body.error) || (r.status ? "http_" + r.status : "network");
  const text = plain || ERRORS[code] || "Something went wrong. Try again.";
  const detail = r.status
    ? "HTTP " + r.status + " " + code + (r.body && r.body.message ? ": " + r.body.message : "")
      + (r.retryAfter ? " (retry after " + r.retryAfter + " s)" : "")
    : (r.detail || "no answer");
  say(id, text, "error", detail);
}

// --- Requests ----------------------------------------------------------------------------

// fetch with the session cookie; answers {ok, status, body} and never throws. `status` 0 means
// no answer came (the network or the server is down).
async function call(method, path, body, contentType) {
  const headers = { ...XRW };
  if (contentType) headers["Content-Type"] = contentType;
  let r;
  try {
    r = await fetch(path, { method, credentials: "same-origin", headers, body });
  } catch (e) {
    return { ok: false, status: 0, body: { error: "network" }, detail: String(e) };
  }
  let parsed = null;
  if (r.status !== 204) parsed = await r.json().catch(() => null);
  return {
    ok: r.ok,
    status: r.status,
    body: parsed,
    retryAfter: r.headers.get("Retry-After"),
    revocation: r.headers.get("Grantkeeper-Revocation"),
  };
}

// Runs `work` with `controls` disabled (and the first marked busy) until it ends, so that a
// double click starts one request.
async function busy(controls, work) {
  const list = controls.map((c) => (typeof c === "string" ? $(c) : c));
  if (list.some((c) => c.disabled)) return;
  for (const c of list) c.disabled = true;
  list[0].setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    list[0].removeAttribute("aria-busy");
    for (const c of list) c.disabled = false;
  }
}

const DRIVE_CONTROLS = () => [
  ...document.querySelectorAll("#drive-granted button, #drive-missing button, #grant-notice button"),
];

// --- Times -------------------------------------------------------------------------------

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const EXACT = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// "3 minutes ago", "in 59 minutes", or the date and time in the reader's locale when far.
function relative(t) {
  const s = (t.getTime() - Date.now()) / 1000;
  const a = Math.abs(s);
  if (a < 45) return RELATIVE.format(0, "second");
  if (a < 45 * 60) return RELATIVE.format(Math.round(s / 60), "minute");
  if (a < 22 * 3600) return RELATIVE.format(Math.round(s / 3600), "hour");
  if (a < 6 * 86400) return RELATIVE.format(Math.round(s / 86400), "day");
  return EXACT.format(t);
}

// A <time> element: relative text, the exact time on hover.
function timeElement(iso) {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return document.createTextNode(iso || "");
  const el = document.createElement("time");
  el.dateTime = t.toISOString();
  el.title = EXACT.format(t);
  el.textContent = relative(t);
  return el;
}

setInterval(() => {
  for (const el of document.querySelectorAll("time[datetime]")) {
    el.textContent = relative(new Date(el.dateTime));
  }
}, 30000);

function bytes(n) {
  const v = Number(n || 0);
  if (v < 1024) return v + (v === 1 ? " byte" : " bytes");
  return (v / 1024).toFixed(1) + " KB";
}

// --- The account as the server keeps it -------------------------------------------------

function shortScope(s) {
  return s.replace("https://www.googleapis.com/auth/", "");
}

function hasDrive() {
  return !!me && me.granted_scopes.includes(DRIVE);
}

function stateOf(data) {
  if (data.grant) return data.grant.state;
  return data.needs_consent ? "needs_consent" : "active";
}

const STATE_TEXT = { active: "active", failing: "failing", needs_consent: "needs consent", revoked: "revoked" };

// Shows the signed-in user as the server keeps them, or the sign-in screen.
function render() {
  $("signed-out").hidden = !!me;
  $("account").hidden = !me;
  if (!me) return;
  const u = me.user;
  $("name").textContent = u.name || u.email || u.sub;
  $("email").textContent = (u.email || "") + (u.email_verified ? " (verified)" : "");
  $("sub").textContent = u.sub;
  if (u.picture) { $("avatar").src = u.picture; $("avatar").hidden = false; } else { $("avatar").hidden = true; }
  const state = stateOf(me);
  $("state").textContent = STATE_TEXT[state] || state;
  $("state").className = "badge " + state;
  $("state").setAttribute("aria-label", "Grant state: " + (STATE_TEXT[state] || state));
  $("offline").textContent = {
    revoked: "no: access was revoked at Google",
    needs_consent: "no: Google sent no refresh token",
  }[state] || "yes: the server holds a refresh token";
  const last = me.grant && me.grant.last_refresh_at;
  $("last-refresh").replaceChildren(last ? timeElement(last) : document.createTextNode("not yet"));
  renderScopes(state);
  renderNotice(state);
  const usable = state === "active" || state === "failing";
  $("drive-missing").hidden = hasDrive() || !usable;
  $("drive-granted").hidden = !hasDrive() || !usable;
  // Once the server itself knows the grant is gone, "it finds out at its next call" is moot.
  if (!usable) unsay("emulator-msg");
}

function renderScopes(state) {
  const ul = $("scopes");
  ul.replaceChildren();
  const gone = state === "revoked";
  for (const s of gone ? [] : me.granted_scopes) {
    const li = document.createElement("li");
    li.textContent = shortScope(s);
    li.title = s;
    ul.append(li);
  }
  ul.hidden = gone;
  $("no-scopes").hidden = !gone;
  $("no-scopes").textContent = gone ? "None: Google access was revoked. Reconnect to grant it again." : "";
}

// The grant's state where it matters: in the card of what the server does for the person.
function renderNotice(state) {
  const notice = $("grant-notice");
  const reason = (me.grant && me.grant.reason) || "";
  const text = {
    revoked: "Google no longer lets this app act for you, so the server cannot reach your Drive. Reconnect your Google account to grant access again.",
    needs_consent: "The server holds no offline access for you: Google sends it only when you consent again. Reconnecting removes the old grant at Google first, then asks you.",
    failing: "Google is having trouble refreshing your access. The server keeps trying and still holds your grant.",
  }[state];
  notice.hidden = !text;
  if (!text) return;
  notice.className = "notice" + (state === "failing" ? " info" : "");
  $("grant-notice-text").textContent = text;
  $("grant-notice-reason").textContent = reason;
  $("grant-notice-details").hidden = !reason;
  $("repair").hidden = state === "failing";
}

// Reads the session's user; with `withFiles`, also their files when Drive is usable.
async function loadMe(withFiles = true) {
  const r = await call("GET", "/me");
  if (r.status === 0) return r; // the view stays as it was: nothing is known to have changed
  const before = me && me.user.sub;
  me = r.ok ? r.body : null;
  if (!me || me.user.sub !== before) unsay(...ACCOUNT_MESSAGES);
  render();
  if (withFiles && hasDrive() && !$("drive-granted").hidden) await loadFiles();
  return r;
}

// --- Google Identity Services -------------------------------------------------------------

function loadGis() {
  const s = document.createElement("script");
  s.src = CONFIG.gsi_script;
  s.async = true;
  s.addEventListener("load", () => {
    gisReady = !!(window.google && google.accounts && google.accounts.oauth2);
    $("signin").disabled = !gisReady;
    if (!gisReady) say("signin-msg", "Google sign-in is not available right now.", "error", "Identity Services loaded but offers no code client.");
  });
  s.addEventListener("error", () => {
    say("signin-msg", "Google sign-in could not be loaded. Check your connection and reload the page.", "error",
      "Could not load " + CONFIG.gsi_script);
  });
  document.head.append(s);
}

// Opens Google's consent popup for `scope`; resolves with {response} (Google's answer) or
// {problem: [text, kind, detail]} when the popup closed or could not open.
function requestCode(scope, options) {
  return new Promise((resolve) => {
    if (!gisReady) { resolve({ problem: ["Google sign-in is not loaded yet. Try again in a moment.", "error", ""] }); return; }
    const client = google.accounts.oauth2.initCodeClient({
      client_id: CONFIG.client_id,
      scope,
      ux_mode: "popup",
      include_granted_scopes: true,
      select_account: !!options.selectAccount,
      login_hint: options.loginHint || undefined,
      callback: (response) => resolve({ response }),
      error_callback: (err) => {
        const type = (err && err.type) || "unknown";
        if (type === "popup_failed_to_open") resolve({ problem: ["The browser blocked Google's window: allow pop-ups for this page and try again.", "error", type] });
        else if (type === "popup_closed") resolve({ problem: ["Google's window was closed; nothing changed.", "", ""] });
        else resolve({ problem: ["Google sign-in failed. Try again.", "error", type] });
      },
    });
    client.requestCode();
  });
}

// Sends Google's answer to the server. `expectSub`: the account it must be (incremental
// authorization). Answers {ok} or {problem: [text, kind, detail]}.
async function exchange(got, expectSub) {
  if (got.problem) return got;
  const response = got.response;
  if (response.error) {
    return response.error === "access_denied"
      ? { problem: ["You declined on Google's page; nothing changed.", "", ""] }
      : { problem: ["Google refused the request.", "error", response.error + (response.error_description ? ": " + response.error_description : "")] };
  }
  const query = expectSub ? "?sub=" + encodeURIComponent(expectSub) : "";
  const r = await call("POST", "/authcode" + query, response.code, "application/octet-stream");
  if (!r.ok) {
    const plain = expectSub && r.body && r.body.error === "forbidden"
      ? "Google's window returned another account. Choose " + (me && me.user.email || "the signed-in account") + " there to continue."
      : null;
    return { problem: [plain || ERRORS[r.body && r.body.error] || "The server could not sign you in.", "error", r] };
  }
  const loaded = await loadMe();
  if (!me) return { problem: ["Signed in, but the session did not stick: are cookies blocked for this page?", "error", "HTTP " + loaded.status + " on GET /me"] };
  return { ok: true, granted: (response.scope || "").split(" ") };
}

// Shows an exchange's problem in the message `id`.
function sayProblem(id, problem) {
  const [text, kind, detail] = problem;
  if (detail && typeof detail === "object") sayError(id, detail, text);
  else say(id, text, kind, detail);
}

async function signIn() {
  unsay("signin-msg");
  await busy(["signin"], async () => {
    const got = await requestCode(CONFIG.sign_in_scope, { selectAccount: true });
    const done = await exchange(got, null);
    if (done.problem) sayProblem("signin-msg", done.problem);
  });
}

// Incremental authorization: Drive alone, keeping what was granted before, for this account.
async function allowDrive() {
  unsay("drive-msg");
  await busy(DRIVE_CONTROLS(), async () => {
    const got = await requestCode(DRIVE, { loginHint: me.user.email });
    const done = await exchange(got, me.user.sub);
    if (done.problem) { sayProblem("drive-msg", done.problem); return; }
    if (hasDrive()) say("drive-msg", "Drive access granted: the server can now reach your app folder.", "ok");
    else say("drive-msg", "Drive access was not granted: you left it unticked on Google's page.");
  });
}

async function repair() {
  unsay("drive-msg");
  const state = stateOf(me);
  const { sub, email } = me.user;
  await busy(DRIVE_CONTROLS(), async () => {
    if (state === "needs_consent") {
      // Google sends a new refresh token only once the old grant is gone.
      const r = await call("POST", "/disconnect");
      if (!r.ok && r.status !== 401) { sayError("drive-msg", r); return; }
    }
    const got = await requestCode(CONFIG.sign_in_scope, { loginHint: email });
    const done = await exchange(got, sub);
    if (done.problem) {
      if (state === "needs_consent") {
        // The old grant is gone, and with it the session.
        me = null;
        render();
        sayProblem("signin-msg", done.problem);
      } else {
        sayProblem("drive-msg", done.problem);
      }
    }
  });
}

// --- Drive on the offline path ---------------------------------------------------------------

// A failed Drive call. A changed grant shows as its state, not as a message; an ended session
// as the sign-in screen.
async function driveFailed(r) {
  const code = r.body && r.body.error;
  if (["grant_revoked", "scope_not_granted", "not_found"].includes(code)) {
    unsay("drive-msg");
    await loadMe(false);
    if (me) {
      // The state now shows in the Drive card, where the person acted.
      if (!$("grant-notice").hidden) reveal($("grant-notice"));
      else if (!$("drive-missing").hidden) reveal($("drive-missing"));
      return;
    }
  }
  if (!me || code === "unauthorized") {
    me = null;
    unsay(...ACCOUNT_MESSAGES);
    render();
    say("signin-msg", ERRORS.unauthorized, "error");
    return;
  }
  if (r.status === 0) $("files").classList.add("stale");
  sayError("drive-msg", r);
}

function renderFiles(files) {
  const ul = $("files");
  ul.classList.remove("stale");
  ul.replaceChildren();
  if (!files.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No files yet.";
    ul.append(li);
  }
  for (const f of files) {
    const li = document.createElement("li");
    li.dataset.fileId = f.id;
    const info = document.createElement("div");
    info.className = "file";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = f.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.append(bytes(f.size) + " · modified ", timeElement(f.modifiedTime));
    info.append(name, meta);
    const actions = document.createElement("div");
    actions.className = "row-actions";
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.className = "delete";
    del.setAttribute("aria-label", "Delete " + f.name);
    del.addEventListener("click", () => confirmDelete(li, f));
    actions.append(del);
    li.append(info, actions);
    ul.append(li);
  }
}

async function loadFiles() {
  const r = await call("GET", "/demo/files");
  if (!r.ok) { await driveFailed(r); return false; }
  if (r.body.status >= 400) {
    say("drive-msg", "Drive refused to list your files.", "error", "Drive answered HTTP " + r.body.status + ": " + JSON.stringify(r.body.result));
    return false;
  }
  renderFiles((r.body.result && r.body.result.files) || []);
  return true;
}

async function reloadFiles() {
  unsay("drive-msg");
  await busy(["reload-files", ...DRIVE_CONTROLS()], async () => {
    if (await loadFiles()) say("drive-msg", "Files reloaded from Drive.", "ok");
  });
}

// Deleting asks once, in the file's row.
function confirmDelete(li, f) {
  const actions = li.querySelector(".row-actions");
  const ask = document.createElement("span");
  ask.textContent = "Delete " + f.name + "?";
  const yes = document.createElement("button");
  yes.type = "button";
  yes.className = "danger-solid";
  yes.textContent = "Delete";
  yes.setAttribute("aria-label", "Yes, delete " + f.name);
  const no = document.createElement("button");
  no.type = "button";
  no.textContent = "Keep";
  no.setAttribute("aria-label", "Keep " + f.name);
  const original = [...actions.childNodes];
  no.addEventListener("click", () => { actions.replaceChildren(...original); original[0].focus(); });
  yes.addEventListener("click", () => deleteFile(f, yes));
  actions.replaceChildren(ask, yes, no);
  no.focus();
}

async function deleteFile(f, button) {
  unsay("drive-msg");
  await busy([button, ...DRIVE_CONTROLS()], async () => {
    const r = await call("DELETE", "/demo/files/" + encodeURIComponent(f.id));
    if (!r.ok) {
      if (r.body && r.body.error === "not_found") { await loadFiles(); say("drive-msg", f.name + " was already gone.", ""); return; }
      await driveFailed(r);
      return;
    }
    if (await loadFiles()) say("drive-msg", "Deleted " + f.name + ".", "ok");
  });
}

async function addFile(event) {
  event.preventDefault();
  unsay("drive-msg");
  const name = $("file-name").value;
  await busy(["add", ...DRIVE_CONTROLS()], async () => {
    const body = JSON.stringify({ name, content: $("file-content").value });
    const r = await call("POST", "/demo/files", body, "application/json");
    if (!r.ok) { await driveFailed(r); return; }
    if (r.body.status >= 400) {
      say("drive-msg", "Drive refused to add the file.", "error", "Drive answered HTTP " + r.body.status + ": " + JSON.stringify(r.body.result));
      return;
    }
    if (await loadFiles()) say("drive-msg", "Added " + name + ".", "ok");
  });
}

async function runJob() {
  unsay("drive-msg");
  await busy(["run-job", ...DRIVE_CONTROLS()], async () => {
    const r = await call("POST", "/demo/offline-job");
    if (!r.ok) { await driveFailed(r); return; }
    await loadMe();
    const until = new Date(r.body.expires_at);
    say("drive-msg",
      "The job refreshed your access at Google (the new token expires " + relative(until) + ") and read "
        + r.body.files + (r.body.files === 1 ? " file." : " files."),
      "ok",
      "New access token valid until " + EXACT.format(until) + "; Drive answered HTTP " + r.body.drive_status + ".");
  });
}

// --- The emulator's control API (dev only) ---------------------------------------------------

async function emulatorRevoke() {
  unsay("emulator-msg");
  const email = me.user.email;
  await busy(["emulator-revoke"], async () => {
    const url = CONFIG.emulator_control + "/users/" + encodeURIComponent(email) + "/revoke";
    let r = null;
    try {
      r = await fetch(url, { method: "POST" });
    } catch (e) {
      say("emulator-msg", "The emulator could not be reached.", "error", String(e));
      return;
    }
    if (!r.ok) { say("emulator-msg", "The emulator refused to revoke.", "error", "HTTP " + r.status); return; }
    say("emulator-msg", "Google revoked every grant of " + email + ". The server finds out at its next call to Google: reload the files.", "ok");
  });
}

// --- Leaving ---------------------------------------------------------------------------------

async function signOut() {
  unsay("leave-msg");
  await busy(["signout", "disconnect"], async () => {
    const r = await call("POST", "/logout");
    if (!r.ok) { sayError("leave-msg", r); return; }
    me = null;
    unsay(...ACCOUNT_MESSAGES);
    render();
    say("signin-msg", "Signed out. The server keeps its offline access until you disconnect.", "ok");
  });
}

// Disconnecting asks once.
function askDisconnect() {
  unsay("leave-msg");
  $("leave-actions").hidden = true;
  $("disconnect-confirm").hidden = false;
  $("disconnect-no").focus();
}

function cancelDisconnect() {
  $("disconnect-confirm").hidden = true;
  $("leave-actions").hidden = false;
  $("disconnect").focus();
}

async function disconnect() {
  await busy(["disconnect-yes", "disconnect-no"], async () => {
    const r = await call("POST", "/disconnect");
    if (!r.ok) { sayError("leave-msg", r); return; }
    me = null;
    unsay(...ACCOUNT_MESSAGES);
    cancelDisconnect();
    render();
    say("signin-msg", r.revocation === "queued"
      ? "Disconnected: the server deleted your tokens. Google could not be reached; the server keeps asking it to revoke the grant until it does."
      : "Disconnected: the server revoked its access at Google and deleted your tokens.", "ok");
  });
}

// --- Wiring ---------------------------------------------------------------------------------

$("provider-note").textContent = CONFIG.provider === "google"
  ? "signing in with Google"
  : "signing in with the built-in Google emulator";
$("signin").addEventListener("click", signIn);
$("allow-drive").addEventListener("click", allowDrive);
$("repair").addEventListener("click", repair);
$("add-file").addEventListener("submit", addFile);
$("reload-files").addEventListener("click", reloadFiles);
$("run-job").addEventListener("click", runJob);
$("signout").addEventListener("click", signOut);
$("emulator-tools").hidden = !CONFIG.emulator_control;
$("emulator-revoke").addEventListener("click", emulatorRevoke);
$("disconnect").addEventListener("click", askDisconnect);
$("disconnect-no").addEventListener("click", cancelDisconnect);
$("disconnect-yes").addEventListener("click", disconnect);
loadGis();
// Only a browser with a session asks who it is: a signed-out load makes no failing request.
if (CONFIG.signed_in) loadMe(); else render();
