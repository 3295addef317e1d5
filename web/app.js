// grantkeeper's demo page: Google Identity Services' code model in a popup, the code POSTed to
// the server with X-Requested-With, and the server's view of the grant. No build step.
"use strict";

const CONFIG = JSON.parse(document.getElementById("gk-config").textContent);
const $ = (id) => document.getElementById(id);
const XRW = { "X-Requested-With": "XmlHttpRequest" };
const DRIVE = CONFIG.drive_scope;

// What to tell a person for each error code of the HTTP contract.
const ERRORS = {
  invalid_request: "The request was malformed.",
  csrf: "The server refused the request as possibly cross-site (the X-Requested-With header was missing).",
  origin_not_allowed: "This page's origin is not among the server's allowed_origins.",
  code_rejected: "Google rejected the sign-in code (it expired or was already used). Sign in again.",
  id_token_invalid: "Google's identity token could not be verified, so nobody was signed in.",
  unauthorized: "You are signed out: your session ended. Sign in again.",
  forbidden: "That is not allowed.",
  not_found: "Not found: your account may have been deleted.",
  grant_revoked: "Google access was revoked: the server can no longer act for you until you reconnect.",
  scope_not_granted: "You have not granted the Drive access this needs.",
  payload_too_large: "That is too large.",
  unsupported_media_type: "The server does not accept this kind of content.",
  rate_limited: "Too many attempts: wait a little and try again.",
  upstream_error: "Google answered with an error.",
  upstream_unavailable: "Google is unavailable right now; nothing was lost. Try again shortly.",
};

let me = null; // the server's answer to GET /me, or null when signed out
let gisReady = false;

function say(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

function driveSay(message, isError) {
  $("drive-status").textContent = message;
  $("drive-status").className = isError ? "error" : "";
}

// An error body of the contract as a sentence: the friendly text, the server's detail, the code.
function describe(body, status) {
  if (!body || !body.error) return "The server answered " + status + " without an error body.";
  const friendly = ERRORS[body.error] || "The server refused the request.";
  const detail = body.message && body.message !== friendly ? " " + body.message : "";
  const wait = body.retry_after ? " Retry in " + body.retry_after + " s." : "";
  return friendly + detail + wait + " (" + body.error + ")";
}

// fetch with the session cookie; answers {ok, status, body} and never throws.
async function call(method, path, body, contentType) {
  const headers = { ...XRW };
  if (contentType) headers["Content-Type"] = contentType;
  let r;
  try {
    r = await fetch(path, { method, credentials: "same-origin", headers, body });
  } catch (e) {
    return { ok: false, status: 0, body: { error: "network", message: "The server could not be reached." } };
  }
  let parsed = null;
  if (r.status !== 204) parsed = await r.json().catch(() => null);
  if (!r.ok && parsed && r.headers.get("Retry-After")) parsed.retry_after = r.headers.get("Retry-After");
  return { ok: r.ok, status: r.status, body: parsed, revocation: r.headers.get("Grantkeeper-Revocation") };
}

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
  $("state").textContent = state.replace("_", " ");
  $("state").className = "badge " + state;
  $("state").setAttribute("aria-label", "Grant state: " + state.replace("_", " "));
  $("offline").textContent = me.offline_access ? "yes: the server holds a refresh token" : "no refresh token held";
  $("last-refresh").textContent = (me.grant && me.grant.last_refresh_at) || "not yet";
  const ul = $("scopes");
  ul.replaceChildren();
  for (const s of me.granted_scopes) {
    const li = document.createElement("li");
    li.textContent = shortScope(s);
    li.title = s;
    ul.append(li);
  }
  renderBanner(state);
  const usable = state === "active" || state === "failing";
  $("drive-missing").hidden = hasDrive() || !usable;
  $("drive-granted").hidden = !hasDrive() || !usable;
}

function renderBanner(state) {
  const banner = $("grant-banner");
  const reason = me.grant && me.grant.reason ? " (" + me.grant.reason + ")" : "";
  banner.className = "banner";
  $("repair").hidden = false;
  if (state === "revoked") {
    $("grant-banner-text").textContent = "Google access was revoked" + reason + ". The server can no longer act for you. Reconnect to grant it again.";
    banner.hidden = false;
  } else if (state === "needs_consent") {
    $("grant-banner-text").textContent = "The server holds no offline grant for you" + reason + ". Google sends one only when you consent again: reconnecting removes the old grant at Google first, then asks you.";
    banner.hidden = false;
  } else if (state === "failing") {
    banner.className = "banner info";
    $("grant-banner-text").textContent = "Google is having trouble refreshing your access; the server keeps trying and still holds your grant.";
    $("repair").hidden = true;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

async function loadMe(withFiles = true) {
  const r = await call("GET", "/me");
  me = r.ok ? r.body : null;
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
    if (!gisReady) say("Google Identity Services loaded but offers no code client.", true);
  });
  s.addEventListener("error", () => {
    say("Could not load Google Identity Services from " + CONFIG.gsi_script + ".", true);
  });
  document.head.append(s);
}

// Opens Google's consent popup for `scope`; resolves with the CodeResponse, or null when the
// person closed the popup or it could not open (already reported).
function requestCode(scope, options) {
  return new Promise((resolve) => {
    if (!gisReady) { say("Google Identity Services is not loaded yet.", true); resolve(null); return; }
    const client = google.accounts.oauth2.initCodeClient({
      client_id: CONFIG.client_id,
      scope,
      ux_mode: "popup",
      include_granted_scopes: true,
      select_account: !!options.selectAccount,
      login_hint: options.loginHint || undefined,
      callback: resolve,
      error_callback: (err) => {
        if (err && err.type === "popup_failed_to_open") say("The browser blocked Google's sign-in popup: allow popups for this page.", true);
        else if (err && err.type === "popup_closed") say("The sign-in window was closed; nothing changed.", false);
        else say("Google sign-in failed (" + ((err && err.type) || "unknown") + ").", true);
        resolve(null);
      },
    });
    client.requestCode();
  });
}

// Sends a code to the server and shows the outcome. `wanted` is the scope that was asked for.
async function exchange(response, wanted) {
  if (!response) return;
  if (response.error) {
    const text = response.error === "access_denied"
      ? "You declined on Google's page; nothing changed."
      : "Google refused: " + (response.error_description || response.error) + ".";
    say(text, response.error !== "access_denied");
    return;
  }
  say("Exchanging the code with the server…");
  const r = await call("POST", "/authcode", response.code, "application/octet-stream");
  if (!r.ok) { say(describe(r.body, r.status), true); return; }
  await loadMe();
  const granted = (response.scope || "").split(" ");
  const missing = wanted.split(" ").filter((s) => s.startsWith("https://") && !granted.includes(s));
  if (!me) {
    say("Signed in, but the session did not stick: are cookies blocked?", true);
  } else if (me.needs_consent) {
    say("Signed in, but Google sent no refresh token, so the server cannot act for you offline.", true);
  } else if (missing.length) {
    say("Signed in without " + missing.map(shortScope).join(", ") + ": the page asks for it below when you want it.");
  } else {
    say("Signed in as " + (me.user.email || me.user.sub) + ".");
  }
}

async function signIn() {
  const response = await requestCode(CONFIG.sign_in_scope, { selectAccount: true });
  await exchange(response, CONFIG.sign_in_scope);
}

// Incremental authorization: Drive alone, keeping what was granted before.
async function allowDrive() {
  const response = await requestCode(DRIVE, { loginHint: me && me.user.email });
  await exchange(response, DRIVE);
}

async function repair() {
  const state = me ? stateOf(me) : "revoked";
  const hint = me && me.user.email;
  if (state === "needs_consent") {
    // Google sends a new refresh token only once the old grant is gone.
    const r = await call("POST", "/disconnect");
    if (!r.ok && r.status !== 401) { say(describe(r.body, r.status), true); return; }
  }
  const response = await requestCode(CONFIG.sign_in_scope, { loginHint: hint });
  if (!response && state === "needs_consent") { me = null; render(); }
  await exchange(response, CONFIG.sign_in_scope);
}

// --- Drive on the offline path ---------------------------------------------------------------

// A failed Drive call: show it, and when the grant changed, show that too.
async function driveFailed(r) {
  const text = describe(r.body, r.status);
  driveSay(text, true);
  if (r.body && ["grant_revoked", "scope_not_granted", "unauthorized", "not_found"].includes(r.body.error)) {
    await loadMe(false);
    say(text, true);
  }
}

async function loadFiles() {
  const ul = $("files");
  const r = await call("GET", "/demo/files");
  if (!r.ok) { ul.replaceChildren(); await driveFailed(r); return; }
  const files = (r.body.result && r.body.result.files) || [];
  ul.replaceChildren();
  if (!files.length) {
    const li = document.createElement("li");
    li.textContent = "No files yet.";
    ul.append(li);
  }
  for (const f of files) {
    const li = document.createElement("li");
    li.dataset.fileId = f.id;
    const span = document.createElement("span");
    span.textContent = f.name + " (" + (f.size || 0) + " bytes, " + f.modifiedTime + ")";
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.setAttribute("aria-label", "Delete " + f.name);
    del.addEventListener("click", () => deleteFile(f));
    li.append(span, del);
    ul.append(li);
  }
}

async function deleteFile(f) {
  const r = await call("DELETE", "/demo/files/" + encodeURIComponent(f.id));
  if (!r.ok) { await driveFailed(r); return; }
  driveSay("Deleted " + f.name + ".");
  await loadFiles();
}

async function addFile(event) {
  event.preventDefault();
  const body = JSON.stringify({ name: $("file-name").value, content: $("file-content").value });
  const r = await call("POST", "/demo/files", body, "application/json");
  if (!r.ok) { await driveFailed(r); return; }
  driveSay("Added " + $("file-name").value + ".");
  await loadFiles();
}

async function runJob() {
  driveSay("Running…");
  const r = await call("POST", "/demo/offline-job");
  if (!r.ok) { await driveFailed(r); return; }
  driveSay("Refreshed the grant at Google (new token valid until " + r.body.expires_at + ") and read " + r.body.files + " file(s).");
  await loadMe();
}

// --- The emulator's control API (dev only) ---------------------------------------------------

async function emulatorRevoke() {
  if (!me || !me.user.email) return;
  const url = CONFIG.emulator_control + "/users/" + encodeURIComponent(me.user.email) + "/revoke";
  let ok = false;
  try {
    ok = (await fetch(url, { method: "POST" })).ok;
  } catch (e) {
    ok = false;
  }
  say(ok
    ? "Google revoked every grant of " + me.user.email + ". The server finds out at its next call to Google: reload the files."
    : "The emulator did not answer.", !ok);
}

// --- Leaving ---------------------------------------------------------------------------------

async function signOut() {
  const r = await call("POST", "/logout");
  if (!r.ok) { say(describe(r.body, r.status), true); return; }
  me = null;
  render();
  say("Signed out. The server keeps its offline access until you disconnect.");
}

async function disconnect() {
  say("Disconnecting…");
  const r = await call("POST", "/disconnect");
  if (!r.ok) { say(describe(r.body, r.status), true); return; }
  me = null;
  render();
  say(r.revocation === "queued"
    ? "Disconnected: the server deleted your tokens. Google could not be reached; the server keeps asking it to revoke the grant until it does."
    : "Disconnected: the server revoked its access at Google and deleted your tokens.");
}

// --- Wiring ---------------------------------------------------------------------------------

$("provider-note").textContent = CONFIG.provider === "google"
  ? "signing in with Google"
  : "signing in with the built-in Google emulator";
$("signin").addEventListener("click", signIn);
$("allow-drive").addEventListener("click", allowDrive);
$("repair").addEventListener("click", repair);
$("add-file").addEventListener("submit", addFile);
$("reload-files").addEventListener("click", loadFiles);
$("run-job").addEventListener("click", runJob);
$("signout").addEventListener("click", signOut);
$("emulator-tools").hidden = !CONFIG.emulator_control;
$("emulator-revoke").addEventListener("click", emulatorRevoke);
$("disconnect").addEventListener("click", disconnect);
loadGis();
loadMe();
