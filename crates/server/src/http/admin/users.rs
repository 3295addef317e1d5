//! The users pages: the searchable list, one user's grant with its history and audit trail,
//! and revoking a grant.

use super::auth::{
    CsrfForm, LoginNote, Operator, SIGNED_OUT, Signed, check_origin, login_page, read_form, signed,
};
use super::html::{
    self, Section, badge, esc, path_segment, query, scope_list, short_scopes_in, state_text, time,
    time_or_never,
};
use super::{PageError, html_response, see_other};
use crate::app::App;
use crate::error::ApiError;
use crate::http::extract::PagePath;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use grantkeeper_broker::RevocationOutcome;
use grantkeeper_core::GrantState;
use grantkeeper_store::{AuditFilter, GrantRecord, UserRecord, UserSearch};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt::Write;
use time::OffsetDateTime;

/// Users per page of the list.
pub const PAGE: u32 = 50;
/// Audit rows per page of a user's trail.
pub const AUDIT_PAGE: u32 = 50;
/// Longest search text accepted.
const MAX_QUERY: usize = 256;

fn parse_query<T: DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, PageError> {
    match raw {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|_| {
            ApiError::InvalidRequest("The address's query string could not be read.".to_owned())
                .into()
        }),
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    state: Option<String>,
    after: Option<String>,
}

fn parse_state(text: Option<&str>) -> Result<Option<GrantState>, PageError> {
    match text.map(str::trim) {
        None | Some("" | "all") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::InvalidRequest(
                "The state filter must be all, active, failing, needs_consent or revoked."
                    .to_owned(),
            )
            .into()
        }),
    }
}

/// `GET /admin` and `GET /admin/users`: the users, or the sign-in page.
pub async fn users(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(notice) => {
            let note = match notice {
                Some(problem) => Some(LoginNote::Problem(problem)),
                None if raw.as_deref() == Some("signed-out=1") => Some(LoginNote::Done(SIGNED_OUT)),
                None => None,
            };
            return Ok(login_page(
                &app,
                &headers,
                StatusCode::OK,
                note,
                notice.is_some(),
            ));
        }
    };
    let q: ListQuery = parse_query(raw.as_deref())?;
    let text = q.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if text.chars().count() > MAX_QUERY {
        return Err(ApiError::InvalidRequest(format!(
            "The search text is longer than {MAX_QUERY} characters."
        ))
        .into());
    }
    let state = parse_state(q.state.as_deref())?;
    let after = q.after.filter(|a| !a.is_empty());
    let page = app
        .store()
        .search_users(&UserSearch {
            text: (!text.is_empty()).then(|| text.clone()),
            state,
            after: after.clone(),
            limit: PAGE,
        })
        .await?;

    let mut body = String::with_capacity(16 * 1024);
    body.push_str("<h1>Users</h1>\n");
    search_form(&mut body, &text, state);
    let filtered = !text.is_empty() || state.is_some();
    users_table(&mut body, &page.users, filtered, app.clock().now());
    pager(
        &mut body,
        &text,
        state,
        after.is_some(),
        page.next.as_deref(),
    );
    Ok(html_response(
        StatusCode::OK,
        html::page("Users", Some(&operator.shell(Section::Users)), &body),
    ))
}

/// The search form, filled in with the search shown.
fn search_form(body: &mut String, text: &str, state: Option<GrantState>) {
    let _ = write!(
        body,
        r#"<form method="get" action="/admin/users" class="search" role="search">
<div><label for="q">Email or sub</label><input id="q" name="q" type="search" value="{}" maxlength="{MAX_QUERY}" placeholder="part of an email, or the start of a sub" spellcheck="false"></div>
<div><label for="state">Grant state</label><select id="state" name="state">"#,
        esc(text)
    );
    let chosen = state.map(GrantState::as_str).unwrap_or("all");
    for (value, label) in std::iter::once(("all", "all"))
        .chain(GrantState::ALL.iter().map(|s| (s.as_str(), state_text(*s))))
    {
        let selected = if value == chosen { " selected" } else { "" };
        let _ = write!(
            body,
            r#"<option value="{value}"{selected}>{label}</option>"#
        );
    }
    body.push_str(
        "</select></div>\n<button type=\"submit\" id=\"search\">Search</button>\n</form>\n",
    );
}

/// The page's users, a row each, with their count.
fn users_table(
    body: &mut String,
    users: &[(UserRecord, GrantRecord)],
    filtered: bool,
    now: OffsetDateTime,
) {
    let _ = write!(
        body,
        r#"<p class="muted" id="result-count">{} user{} on this page{}.</p>"#,
        users.len(),
        if users.len() == 1 { "" } else { "s" },
        if filtered { " matching the search" } else { "" },
    );
    body.push_str(
        r#"<div class="scroll"><table id="users" class="cards"><thead><tr><th scope="col">User</th><th scope="col">Grant</th><th scope="col">Scopes</th><th scope="col">Last refresh</th><th scope="col" class="col-error">Last error</th><th scope="col">Updated</th></tr></thead><tbody>"#,
    );
    for (user, grant) in users {
        user_row(body, user, grant, now);
    }
    if users.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="empty">No users match.</td></tr>"#);
    }
    body.push_str("</tbody></table></div>\n");
}

/// Links to the first page (when not on it) and the next one (when there is one), keeping
/// the search.
fn pager(
    body: &mut String,
    text: &str,
    state: Option<GrantState>,
    past_first: bool,
    next: Option<&str>,
) {
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    let state_param = state.map(GrantState::as_str).unwrap_or_default();
    if past_first {
        let _ = write!(
            body,
            r#"<a id="first-page" href="/admin/users{}">First page</a>"#,
            esc(&query(&[("q", text), ("state", state_param)]))
        );
    }
    if let Some(next) = next {
        let _ = write!(
            body,
            r#"<a id="next-page" rel="next" href="/admin/users{}">Next page</a>"#,
            esc(&query(&[
                ("q", text),
                ("state", state_param),
                ("after", next)
            ]))
        );
    }
    body.push_str("</nav>");
}

/// One user: the whole row leads to their page (the link's area covers it); at phone width
/// a card with the grant's state first.
fn user_row(out: &mut String, user: &UserRecord, grant: &GrantRecord, now: OffsetDateTime) {
    let p = &user.profile;
    let updated = user.updated_at.max(grant.updated_at);
    let title = p.name.as_deref().or(p.email.as_deref()).unwrap_or(&p.sub);
    let email = match (&p.name, &p.email) {
        (Some(_), Some(email)) => format!(r#"<span>{}</span>"#, esc(email)),
        _ => String::new(),
    };
    let error = match grant.last_error.as_deref() {
        Some(e) => format!(r#"<span class="clamp" title="{0}">{0}</span>"#, esc(e)),
        None => "—".to_owned(),
    };
    let _ = write!(
        out,
        r#"<tr class="linked" data-sub="{sub}" data-state="{state}"><td class="user-cell" data-label="User"><a class="row-link" href="/admin/users/{link}">{title}</a>{email}<span class="sub mono" title="{sub}">{sub}</span></td><td class="lead nowrap" data-label="Grant">{badge}</td><td data-label="Scopes">{scopes}</td><td class="nowrap" data-label="Last refresh">{refresh}</td><td data-label="Last error">{error}</td><td class="nowrap" data-label="Updated">{updated}</td></tr>"#,
        sub = esc(&p.sub),
        state = grant.state.as_str(),
        link = esc(&path_segment(&p.sub)),
        title = esc(title),
        badge = badge(grant.state),
        scopes = scope_list(grant.scopes.iter()),
        refresh = time_or_never(grant.last_refresh_at, now),
        updated = time(updated, now),
    );
}

#[derive(Deserialize, Default)]
struct UserQuery {
    before: Option<String>,
    revoked: Option<String>,
}

/// What the user page says above everything else, after an action.
enum Flash {
    /// Revoked at Google and here.
    Revoked,
    /// Revoked here; the revocation at Google is queued.
    Queued,
    /// No token was held, so nothing was revoked at Google; marked revoked here.
    Local,
    /// The grant was revoked already; nothing changed.
    Already,
    Failed(String),
}

impl Flash {
    fn from_query(value: &str) -> Flash {
        match value {
            "queued" => Flash::Queued,
            "local" => Flash::Local,
            "already" => Flash::Already,
            _ => Flash::Revoked,
        }
    }

    fn html(&self) -> String {
        let (class, role, extra, text) = match self {
            Flash::Revoked => (
                "ok",
                "status",
                "",
                "Revoked: Google confirmed the revocation, and the grant is marked revoked here.",
            ),
            Flash::Queued => ("ok", "status", r#" data-revocation="queued""#, QUEUED_FLASH),
            Flash::Local => (
                "ok",
                "status",
                r#" data-revocation="local""#,
                "Marked revoked here. No token was held, so there was nothing to revoke at Google.",
            ),
            Flash::Already => (
                "ok",
                "status",
                r#" data-revocation="already""#,
                "The grant was already revoked; nothing changed.",
            ),
            Flash::Failed(message) => ("error", "alert", "", message.as_str()),
        };
        format!(
            r#"<div class="alert {class}" role="{role}" id="flash"{extra}><p>{}</p></div>"#,
            esc(text)
        )
    }
}

/// The flash of `?revoked=queued`.
pub const QUEUED_FLASH: &str =
    "Revoked here; the revocation at Google is queued and retried until Google accepts it.";

/// `GET /admin/users/{sub}`.
pub async fn user(
    State(app): State<App>,
    headers: HeaderMap,
    PagePath(sub): PagePath<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(_) => return Ok(see_other("/admin")),
    };
    let q: UserQuery = parse_query(raw.as_deref())?;
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(b.parse::<i64>().map_err(|_| {
            PageError::from(ApiError::InvalidRequest(
                "`before` must be the number of an audit row.".to_owned(),
            ))
        })?),
    };
    let flash = q.revoked.as_deref().map(Flash::from_query);
    let body = user_page(&app, &operator, &sub, before, flash).await?;
    Ok(html_response(StatusCode::OK, body))
}

async fn user_page(
    app: &App,
    operator: &Operator,
    sub: &str,
    before: Option<i64>,
    flash: Option<Flash>,
) -> Result<String, PageError> {
    let (user, grant) = app
        .store()
        .user(sub)
        .await?
        .ok_or_else(|| ApiError::NotFound("There is no user with this sub.".to_owned()))?;
    let events = app.store().grant_events(sub).await?;
    // The audit log writes its rows once a second; the trail shows every act up to this view.
    app.audit().flush().await;
    let mut audit = app
        .store()
        .audit(AuditFilter {
            sub: Some(sub.to_owned()),
            since: None,
            before_id: before,
            limit: AUDIT_PAGE + 1,
        })
        .await?;
    let older = if audit.len() > AUDIT_PAGE as usize {
        audit.truncate(AUDIT_PAGE as usize);
        audit.last().map(|row| row.id)
    } else {
        None
    };
    let now = app.clock().now();

    let p = &user.profile;
    let heading = p.email.as_deref().unwrap_or(&p.sub);
    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(
        body,
        r#"<p><a href="/admin/users">← Users</a></p><h1 id="user" data-sub="{}">{}</h1>"#,
        esc(&p.sub),
        esc(heading)
    );
    if let Some(flash) = &flash {
        body.push_str(&flash.html());
    }
    profile_section(&mut body, &user, now);
    grant_section(&mut body, &grant, now);
    revoke_section(&mut body, operator, &user, &grant);
    history_table(&mut body, &events, now);
    audit_table(&mut body, &audit, now);
    body.push_str("<nav class=\"pager\" aria-label=\"Audit pages\">");
    let here = format!("/admin/users/{}", path_segment(&p.sub));
    if before.is_some() {
        let _ = write!(
            body,
            r#"<a id="newest-audit" href="{}">Newest entries</a>"#,
            esc(&here)
        );
    }
    if let Some(older) = older {
        let _ = write!(
            body,
            r#"<a id="older-audit" rel="next" href="{}{}">Older entries</a>"#,
            esc(&here),
            esc(&query(&[("before", &older.to_string())]))
        );
    }
    body.push_str("</nav>");
    Ok(html::page(
        heading,
        Some(&operator.shell(Section::Users)),
        &body,
    ))
}

/// A `<dt>`/`<dd>` pair of text.
fn fact(out: &mut String, term: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(value));
}

/// A `<dt>`/`<dd>` pair whose value is markup the caller built.
fn fact_html(out: &mut String, term: &str, html: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{html}</dd>", esc(term));
}

fn profile_section(out: &mut String, user: &UserRecord, now: OffsetDateTime) {
    let p = &user.profile;
    out.push_str("<h2>Profile</h2><dl id=\"profile\">");
    fact(out, "Sub", &p.sub);
    fact(
        out,
        "Email",
        &match (&p.email, p.email_verified) {
            (Some(e), true) => format!("{e} (verified)"),
            (Some(e), false) => format!("{e} (not verified)"),
            (None, _) => "—".to_owned(),
        },
    );
    fact(out, "Name", p.name.as_deref().unwrap_or("—"));
    if let Some(hd) = &p.hd {
        fact(out, "Workspace domain", hd);
    }
    fact(out, "Locale", p.locale.as_deref().unwrap_or("—"));
    fact_html(out, "First seen", &time(user.created_at, now));
    fact_html(
        out,
        "Last sign-in",
        &time_or_never(user.last_sign_in_at, now),
    );
    out.push_str("</dl>");
}

fn grant_section(out: &mut String, grant: &GrantRecord, now: OffsetDateTime) {
    let _ = write!(
        out,
        r#"<h2>Grant</h2><dl id="grant"><dt>State</dt><dd>{}</dd>"#,
        badge(grant.state)
    );
    fact(out, "Reason", grant.reason.as_deref().unwrap_or("—"));
    fact_html(out, "Scopes", &scope_list(grant.scopes.iter()));
    fact(
        out,
        "Refresh token",
        if grant.refresh_token.is_some() {
            "held (sealed)"
        } else {
            "none held"
        },
    );
    fact_html(
        out,
        "Last refresh",
        &time_or_never(grant.last_refresh_at, now),
    );
    fact(
        out,
        "Last error",
        grant.last_error.as_deref().unwrap_or("—"),
    );
    fact_html(out, "State changed", &time(grant.state_changed_at, now));
    fact_html(out, "Updated", &time(grant.updated_at, now));
    out.push_str("</dl>");
}

/// Revoking: offered only for a grant that is not revoked already, and asking once (a
/// disclosure holds the form, so it works without script); disabled with the reason for a key
/// that may not.
fn revoke_section(out: &mut String, operator: &Operator, user: &UserRecord, grant: &GrantRecord) {
    let p = &user.profile;
    out.push_str("<h2>Revoke</h2>");
    if grant.state == GrantState::Revoked {
        out.push_str(
            r#"<p id="revoke-why">The grant is revoked: the app must ask the user to sign in again with consent.</p>"#,
        );
        return;
    }
    if !operator.can_write {
        let _ = write!(
            out,
            r#"<p><button type="button" id="revoke" class="danger" disabled aria-describedby="revoke-why">Revoke grant</button></p><p id="revoke-why" class="muted">Revoking needs an API key with the users:write capability; the key of this session ({}) does not have it.</p>"#,
            esc(&operator.key_id)
        );
        return;
    }
    let action = format!("/admin/users/{}/revoke", path_segment(&p.sub));
    let held = grant.refresh_token.is_some() || grant.access_token.is_some();
    let what = if held {
        "Revokes the grant at Google and marks it revoked here"
    } else {
        "No token is held, so nothing is revoked at Google; the grant is marked revoked here"
    };
    let _ = write!(
        out,
        r#"<details class="confirm" id="revoke-confirm"><summary id="revoke-ask">Revoke grant…</summary><form method="post" action="{action}"><p>Revoke the grant of {who}? {what}; the app must ask the user to sign in again with consent.</p><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="revoke" class="danger">Revoke grant</button></form></details>"#,
        action = esc(&action),
        who = esc(p.email.as_deref().unwrap_or(&p.sub)),
        what = esc(what),
        csrf = esc(&operator.csrf),
    );
}

fn history_table(out: &mut String, events: &[grantkeeper_store::GrantEvent], now: OffsetDateTime) {
    out.push_str(
        r#"<h2>History</h2><div class="scroll"><table id="history" class="cards"><thead><tr><th scope="col">When</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Reason</th></tr></thead><tbody>"#,
    );
    for e in events {
        let _ = write!(
            out,
            r#"<tr data-event="{}"><td class="nowrap" data-label="When">{}</td><td class="nowrap" data-label="From">{}</td><td class="lead nowrap" data-label="To">{}</td><td class="wrap" data-label="Reason">{}</td></tr>"#,
            e.id,
            time(e.at, now),
            e.from.map(badge).unwrap_or_else(|| "(new)".to_owned()),
            badge(e.to),
            esc(&e.reason),
        );
    }
    if events.is_empty() {
        out.push_str(r#"<tr><td colspan="4" class="empty">No changes recorded.</td></tr>"#);
    }
    out.push_str("</tbody></table></div>");
}

fn audit_table(out: &mut String, audit: &[grantkeeper_store::AuditRecord], now: OffsetDateTime) {
    out.push_str(
        r#"<h2>Audit trail</h2><div class="scroll"><table id="audit" class="cards"><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">Detail</th><th scope="col">Outcome</th><th scope="col">Times</th></tr></thead><tbody>"#,
    );
    for a in audit {
        let times = if a.times > 1 {
            format!("{} (last {})", a.times, time(a.last_at, now))
        } else {
            "1".to_owned()
        };
        let detail = if a.detail.is_empty() {
            "—".to_owned()
        } else {
            short_scopes_in(&a.detail)
        };
        let _ = write!(
            out,
            r#"<tr data-audit="{}" data-times="{}"><td class="nowrap" data-label="When">{}</td><td data-label="Who">{}</td><td data-label="Action">{}</td><td class="wrap" data-label="Detail">{}</td><td class="lead" data-label="Outcome">{}</td><td data-label="Times">{times}</td></tr>"#,
            a.id,
            a.times,
            time(a.at, now),
            esc(&a.actor),
            esc(&a.action),
            esc(&detail),
            esc(&a.outcome),
        );
    }
    if audit.is_empty() {
        out.push_str(r#"<tr><td colspan="6" class="empty">Nothing recorded.</td></tr>"#);
    }
    out.push_str("</tbody></table></div>");
}

/// `POST /admin/users/{sub}/revoke`: what `grantkeeper users revoke` does, by this operator.
pub async fn revoke(
    State(app): State<App>,
    headers: HeaderMap,
    PagePath(sub): PagePath<String>,
    body: Body,
) -> Result<Response, PageError> {
    check_origin(&app, &headers)?;
    let operator = match signed(&app, &headers).await? {
        Signed::In(operator) => operator,
        Signed::Out(notice) => {
            return Err(ApiError::Unauthorized(
                notice
                    .unwrap_or("You are not signed in to the console; nothing was changed.")
                    .to_owned(),
            )
            .into());
        }
    };
    let form: CsrfForm = read_form(&headers, body).await?;
    operator.check_csrf(form.csrf.as_deref())?;
    if !operator.can_write {
        return Err(ApiError::Forbidden(format!(
            "Revoking a grant needs an API key with the users:write capability; the key of \
             this session ({}) does not have it. Nothing was changed.",
            operator.key_id
        ))
        .into());
    }
    let grant = app
        .store()
        .grant(&sub)
        .await?
        .ok_or_else(|| ApiError::NotFound("There is no user with this sub.".to_owned()))?;
    let here = format!("/admin/users/{}", path_segment(&sub));
    if grant.state == GrantState::Revoked {
        return Ok(see_other(&format!("{here}?revoked=already")));
    }
    let held = grant.refresh_token.is_some() || grant.access_token.is_some();
    let reason = format!(
        "revoked by an operator in the console (key {})",
        operator.key_id
    );
    let result = app
        .broker()
        .revoke_or_queue(&sub, &reason)
        .await
        .map_err(ApiError::from);
    let outcome = match &result {
        Ok(RevocationOutcome::Revoked) if held => "ok",
        Ok(RevocationOutcome::Revoked) => "local",
        Ok(RevocationOutcome::Queued) => "queued",
        Err(e) => e.code(),
    };
    app.audit()
        .record(
            &operator.key_id,
            Some(&sub),
            "revoke",
            "console".to_owned(),
            outcome,
        )
        .await;
    // The page the browser goes to next shows this row.
    app.audit().flush().await;
    match result {
        Ok(RevocationOutcome::Revoked) if held => Ok(see_other(&format!("{here}?revoked=1"))),
        Ok(RevocationOutcome::Revoked) => Ok(see_other(&format!("{here}?revoked=local"))),
        Ok(RevocationOutcome::Queued) => {
            tracing::warn!(
                %sub,
                outcome = "queued",
                "a grant was revoked from the console; Google could not revoke it, so its revocation there is queued and retried"
            );
            Ok(see_other(&format!("{here}?revoked=queued")))
        }
        Err(e @ (ApiError::UpstreamUnavailable { .. } | ApiError::Upstream(_))) => {
            let status = e.status();
            tracing::warn!(
                code = e.code(),
                "a grant could not be revoked from the console"
            );
            let message = format!(
                "Google could not be reached or refused the request, so the grant was not \
                 revoked and nothing changed ({}). Try again shortly.",
                e.code()
            );
            let page = user_page(&app, &operator, &sub, None, Some(Flash::Failed(message))).await?;
            Ok(html_response(status, page))
        }
        Err(e) => Err(e.into()),
    }
}
