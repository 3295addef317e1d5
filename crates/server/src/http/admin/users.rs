//! The users pages: the searchable list, one user's grant with its history and audit trail,
//! and revoking a grant.

use super::auth::{CsrfForm, Operator, Signed, check_origin, login_page, read_form, signed};
use super::html::{
    self, Section, badge, esc, path_segment, query, scope_list, state_text, utc, utc_or_never,
};
use super::{PageError, html_response, see_other};
use crate::app::App;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use grantkeeper_broker::RevocationOutcome;
use grantkeeper_core::GrantState;
use grantkeeper_store::{AuditFilter, GrantRecord, UserRecord, UserSearch};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt::Write;

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
            return Ok(login_page(
                &app,
                &headers,
                StatusCode::OK,
                notice,
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
    let _ = write!(
        body,
        r#"<form method="get" action="/admin/users" class="search" role="search">
<div><label for="q">Email or sub</label><input id="q" name="q" type="search" value="{}" maxlength="{MAX_QUERY}" placeholder="part of an email, or the start of a sub" spellcheck="false"></div>
<div><label for="state">Grant state</label><select id="state" name="state">"#,
        esc(&text)
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

    let filtered = !text.is_empty() || state.is_some();
    let _ = write!(
        body,
        r#"<p class="muted" id="result-count">{} user{} on this page{}.</p>"#,
        page.users.len(),
        if page.users.len() == 1 { "" } else { "s" },
        if filtered { " matching the search" } else { "" },
    );
    body.push_str(
        r#"<div class="scroll"><table id="users"><thead><tr><th scope="col">Email</th><th scope="col">Name</th><th scope="col">Sub</th><th scope="col">Grant</th><th scope="col">Scopes</th><th scope="col">Last refresh</th><th scope="col">Last error</th><th scope="col">Updated</th></tr></thead><tbody>"#,
    );
    for (user, grant) in &page.users {
        user_row(&mut body, user, grant);
    }
    if page.users.is_empty() {
        body.push_str(r#"<tr><td colspan="8">No users match.</td></tr>"#);
    }
    body.push_str("</tbody></table></div>\n<nav class=\"pager\" aria-label=\"Pages\">");
    let state_param = state.map(GrantState::as_str).unwrap_or_default();
    if after.is_some() {
        let _ = write!(
            body,
            r#"<a id="first-page" href="/admin/users{}">First page</a>"#,
            esc(&query(&[("q", &text), ("state", state_param)]))
        );
    }
    if let Some(next) = &page.next {
        let _ = write!(
            body,
            r#"<a id="next-page" rel="next" href="/admin/users{}">Next page</a>"#,
            esc(&query(&[
                ("q", &text),
                ("state", state_param),
                ("after", next)
            ]))
        );
    }
    body.push_str("</nav>");
    Ok(html_response(
        StatusCode::OK,
        html::page("Users", Some(&operator.shell(Section::Users)), &body),
    ))
}

fn user_row(out: &mut String, user: &UserRecord, grant: &GrantRecord) {
    let p = &user.profile;
    let updated = user.updated_at.max(grant.updated_at);
    let _ = write!(
        out,
        r#"<tr data-sub="{sub}" data-state="{state}"><td>{email}</td><td>{name}</td><td><a href="/admin/users/{link}">{sub}</a></td><td>{badge}</td><td>{scopes}</td><td>{refresh}</td><td class="wrap">{error}</td><td>{updated}</td></tr>"#,
        sub = esc(&p.sub),
        state = grant.state.as_str(),
        email = esc(p.email.as_deref().unwrap_or("—")),
        name = esc(p.name.as_deref().unwrap_or("—")),
        link = esc(&path_segment(&p.sub)),
        badge = badge(grant.state),
        scopes = scope_list(grant.scopes.iter()),
        refresh = esc(&utc_or_never(grant.last_refresh_at)),
        error = esc(grant.last_error.as_deref().unwrap_or("—")),
        updated = esc(&utc(updated)),
    );
}

#[derive(Deserialize, Default)]
struct UserQuery {
    before: Option<String>,
    revoked: Option<String>,
}

/// What the user page says above everything else, after an action.
enum Flash {
    Revoked,
    /// Revoked here; the revocation at Google is queued.
    Queued,
    Failed(String),
}

/// The flash of `?revoked=queued`.
pub const QUEUED_FLASH: &str =
    "Revoked here; the revocation at Google is queued and retried until Google accepts it.";

/// `GET /admin/users/{sub}`.
pub async fn user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
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
    let flash = q.revoked.as_deref().map(|r| match r {
        "queued" => Flash::Queued,
        _ => Flash::Revoked,
    });
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

    let p = &user.profile;
    let heading = p.email.as_deref().unwrap_or(&p.sub);
    let mut body = String::with_capacity(16 * 1024);
    let _ = write!(
        body,
        r#"<p><a href="/admin/users">← Users</a></p><h1 id="user" data-sub="{}">{}</h1>"#,
        esc(&p.sub),
        esc(heading)
    );
    match flash {
        Some(Flash::Revoked) => body.push_str(
            r#"<div class="alert ok" role="status" id="flash"><p>The grant was revoked at Google and marked revoked here.</p></div>"#,
        ),
        Some(Flash::Queued) => {
            let _ = write!(
                body,
                r#"<div class="alert ok" role="status" id="flash" data-revocation="queued"><p>{}</p></div>"#,
                esc(QUEUED_FLASH)
            );
        }
        Some(Flash::Failed(message)) => {
            let _ = write!(
                body,
                r#"<div class="alert error" role="alert" id="flash"><p>{}</p></div>"#,
                esc(&message)
            );
        }
        None => {}
    }

    body.push_str("<h2>Profile</h2><dl id=\"profile\">");
    let row = |out: &mut String, term: &str, value: &str| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(value));
    };
    row(&mut body, "Sub", &p.sub);
    row(
        &mut body,
        "Email",
        &match (&p.email, p.email_verified) {
            (Some(e), true) => format!("{e} (verified)"),
            (Some(e), false) => format!("{e} (not verified)"),
            (None, _) => "—".to_owned(),
        },
    );
    row(&mut body, "Name", p.name.as_deref().unwrap_or("—"));
    if let Some(hd) = &p.hd {
        row(&mut body, "Workspace domain", hd);
    }
    row(&mut body, "Locale", p.locale.as_deref().unwrap_or("—"));
    row(&mut body, "First seen", &utc(user.created_at));
    row(
        &mut body,
        "Last sign-in",
        &utc_or_never(user.last_sign_in_at),
    );
    body.push_str("</dl>");

    let _ = write!(
        body,
        r#"<h2>Grant</h2><dl id="grant"><dt>State</dt><dd>{}</dd>"#,
        badge(grant.state)
    );
    row(&mut body, "Reason", grant.reason.as_deref().unwrap_or("—"));
    let _ = write!(
        body,
        "<dt>Scopes</dt><dd>{}</dd>",
        scope_list(grant.scopes.iter())
    );
    row(
        &mut body,
        "Refresh token",
        if grant.refresh_token.is_some() {
            "held (sealed)"
        } else {
            "none held"
        },
    );
    row(
        &mut body,
        "Last refresh",
        &utc_or_never(grant.last_refresh_at),
    );
    row(
        &mut body,
        "Last error",
        grant.last_error.as_deref().unwrap_or("—"),
    );
    row(&mut body, "State changed", &utc(grant.state_changed_at));
    row(&mut body, "Updated", &utc(grant.updated_at));
    body.push_str("</dl>");

    // Revoking: a form with the session's token, or the button disabled with the reason.
    let action = format!("/admin/users/{}/revoke", path_segment(&p.sub));
    body.push_str("<h2>Revoke</h2>");
    if operator.can_write {
        let _ = write!(
            body,
            r#"<form method="post" action="{}"><p>Revokes the grant at Google and marks it revoked here; the app must ask the user to sign in again with consent.</p><input type="hidden" name="csrf" value="{}"><button type="submit" id="revoke" class="danger">Revoke grant</button></form>"#,
            esc(&action),
            esc(&operator.csrf),
        );
    } else {
        let _ = write!(
            body,
            r#"<p><button type="button" id="revoke" class="danger" disabled aria-describedby="revoke-why">Revoke grant</button></p><p id="revoke-why" class="muted">Revoking needs an API key with the users:write capability; the key of this session ({}) does not have it.</p>"#,
            esc(&operator.key_id)
        );
    }

    body.push_str(
        r#"<h2>History</h2><div class="scroll"><table id="history"><thead><tr><th scope="col">When</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Reason</th></tr></thead><tbody>"#,
    );
    for e in &events {
        let _ = write!(
            body,
            r#"<tr data-event="{}"><td>{}</td><td>{}</td><td>{}</td><td class="wrap">{}</td></tr>"#,
            e.id,
            esc(&utc(e.at)),
            e.from.map(badge).unwrap_or_else(|| "(new)".to_owned()),
            badge(e.to),
            esc(&e.reason),
        );
    }
    if events.is_empty() {
        body.push_str(r#"<tr><td colspan="4">No changes recorded.</td></tr>"#);
    }
    body.push_str("</tbody></table></div>");

    body.push_str(
        r#"<h2>Audit trail</h2><div class="scroll"><table id="audit"><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">Detail</th><th scope="col">Outcome</th><th scope="col">Times</th></tr></thead><tbody>"#,
    );
    for a in &audit {
        let _ = write!(
            body,
            r#"<tr data-audit="{}" data-times="{}"><td>{}</td><td>{}</td><td>{}</td><td class="wrap">{}</td><td>{}</td><td>{}</td></tr>"#,
            a.id,
            a.times,
            esc(&utc(a.at)),
            esc(&a.actor),
            esc(&a.action),
            esc(&a.detail),
            esc(&a.outcome),
            esc(&if a.times > 1 {
                format!("{} (last at {})", a.times, utc(a.last_at))
            } else {
                "1".to_owned()
            }),
        );
    }
    if audit.is_empty() {
        body.push_str(r#"<tr><td colspan="6">Nothing recorded.</td></tr>"#);
    }
    body.push_str("</tbody></table></div><nav class=\"pager\" aria-label=\"Audit pages\">");
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

/// `POST /admin/users/{sub}/revoke`: what `grantkeeper users revoke` does, by this operator.
pub async fn revoke(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sub): Path<String>,
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
        Ok(RevocationOutcome::Revoked) => "ok",
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
        Ok(RevocationOutcome::Revoked) => Ok(see_other(&format!(
            "/admin/users/{}?revoked=1",
            path_segment(&sub)
        ))),
        Ok(RevocationOutcome::Queued) => {
            tracing::warn!(
                %sub,
                outcome = "queued",
                "a grant was revoked from the console; Google could not revoke it, so its revocation there is queued and retried"
            );
            Ok(see_other(&format!(
                "/admin/users/{}?revoked=queued",
                path_segment(&sub)
            )))
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
