//! The console's HTML: the escaping every dynamic value goes through, the page shell with its
//! one stylesheet, and the small formatters the pages share.
//!
//! Pages are built with `write!` into a `String`, every value from outside (user profiles,
//! reasons, errors, query text) through [`esc`] and every URL part through [`path_segment`] or
//! [`query`]. A templating crate would add a macro or build step for a handful of pages; the
//! rule "only literals unescaped" is easy to keep and to check here, and the tests render
//! hostile values through the real pages.

use grantkeeper_core::GrantState;
use std::fmt::{self, Write};
use time::OffsetDateTime;
use time::macros::format_description;

/// Text made safe for element content and quoted attribute values, in HTML and in SVG.
#[derive(Clone, Copy)]
pub struct Esc<'a>(&'a str);

/// Escapes `text` for HTML or SVG when formatted.
pub fn esc(text: &str) -> Esc<'_> {
    Esc(text)
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            let entity = match rest.as_bytes().get(i) {
                Some(b'&') => "&amp;",
                Some(b'<') => "&lt;",
                Some(b'>') => "&gt;",
                Some(b'"') => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// One path segment, percent-encoded (everything but RFC 3986's unreserved characters), so
/// that any `sub` makes a link that routes back to it.
pub fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// Every byte but RFC 3986's unreserved characters (letters, digits, `-`, `.`, `_`, `~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A query string (`?a=1&b=2`) of the pairs whose value is not empty; empty when none.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(kept).unwrap_or_default())
}

/// A time to the second, in UTC: `2025-03-01 12:00:05 UTC`.
pub fn utc(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default()
}

/// `at` relative to `now` when within a day ("just now", "3 minutes ago", "in 2 hours"),
/// else None.
pub fn relative(at: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    let secs = (at - now).whole_seconds();
    let abs = secs.unsigned_abs();
    let (n, unit) = match abs {
        0..45 => return Some("just now".to_owned()),
        45..2700 => (((abs + 30) / 60).max(1), "minute"),
        2700..79_200 => ((abs + 1800) / 3600, "hour"),
        _ => return None,
    };
    let plural = if n == 1 { "" } else { "s" };
    Some(if secs < 0 {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    })
}

/// A time as the console shows it: relative when recent, else in UTC to the second, with the
/// exact time on hover. The console's script rewrites it in the reader's locale and time zone
/// (by the `datetime` attribute); without script this stands.
pub fn time(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let exact = utc(at);
    let iso = at
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let shown = relative(at, now).unwrap_or_else(|| exact.clone());
    format!(
        r#"<time datetime="{}" title="{}">{}</time>"#,
        esc(&iso),
        esc(&exact),
        esc(&shown)
    )
}

/// Like [`time`], or "never".
pub fn time_or_never(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    at.map_or_else(|| "never".to_owned(), |at| time(at, now))
}

/// Text with Google's API scopes in it (an audit row's detail) with the scopes shortened as
/// the rest of the console shows them.
pub fn short_scopes_in(text: &str) -> String {
    text.replace("https://www.googleapis.com/auth/", "")
}

/// The text of a grant state's badge.
pub fn state_text(state: GrantState) -> &'static str {
    match state {
        GrantState::Active => "active",
        GrantState::Failing => "failing",
        GrantState::NeedsConsent => "needs consent",
        GrantState::Revoked => "revoked",
    }
}

/// A grant state as a coloured badge whose text says the state (the colour only repeats it).
pub fn badge(state: GrantState) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        state.as_str(),
        state_text(state)
    )
}

/// A scope as a person reads it: Google's API scopes without their common prefix.
pub fn short_scope(scope: &str) -> &str {
    scope
        .strip_prefix("https://www.googleapis.com/auth/")
        .or_else(|| scope.strip_prefix("https://"))
        .unwrap_or(scope)
}

/// Scopes by their short names, each with its full name as a tooltip.
pub fn scope_list<'a>(scopes: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, scope) in scopes.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            r#"<span title="{}">{}</span>"#,
            esc(scope),
            esc(short_scope(scope))
        );
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// Which part of the console a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Users,
    Activity,
    Jobs,
}

/// The signed-in operator as the page shell shows them.
pub struct Shell<'a> {
    pub section: Section,
    pub key_id: &'a str,
    pub key_name: &'a str,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
}

const STYLE: &str = r#"
*,*::before,*::after{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff}
header .bar{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;max-width:76rem;margin:0 auto;padding:.6rem 1rem}
header .brand{font-weight:600;margin-right:auto}
header nav{display:flex;gap:.25rem}
header a{color:#fff;padding:.25rem .5rem;border-radius:4px;text-decoration:none}
header a[aria-current=page]{background:#3b4a63}
header form{margin:0}
header .who{font-size:.85rem;color:#c9d1de;overflow-wrap:anywhere}
header .who b{color:#fff;font-weight:600}
main{max-width:76rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.25rem 0 1rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
p,dd,li{overflow-wrap:anywhere}
a{color:#1b5fbf}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em}
time{white-space:nowrap}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid #d8dde5;border-radius:6px;background:#fff}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-weight:600;white-space:nowrap}
td.nowrap{white-space:nowrap}
td.wrap{overflow-wrap:anywhere;min-width:10rem}
caption{text-align:left;padding:.4rem .6rem;font-weight:600}
tbody tr:last-child td{border-bottom:0}
tr.linked{position:relative}
tr.linked:hover td{background:#f3f6fb}
a.row-link{font-weight:600}
a.row-link::after{content:"";position:absolute;inset:0}
.user-cell span{display:block}
.sub{color:#5b6677;font-size:.8rem;max-width:14rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.clamp{display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden}
th.col-error{width:24%}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:999px;font-size:.8rem;font-weight:600;border:1px solid;white-space:nowrap}
.badge.active{background:#e3f5e8;color:#14532d;border-color:#7cc795}
.badge.failing{background:#fff4d6;color:#713f12;border-color:#e3b341}
.badge.needs_consent{background:#e8eefc;color:#1e3a8a;border-color:#93a9e6}
.badge.revoked{background:#fde7e7;color:#7f1d1d;border-color:#e69a9a}
.badge.job-running{background:#e8eefc;color:#1e3a8a;border-color:#93a9e6}
.badge.job-finished{background:#e3f5e8;color:#14532d;border-color:#7cc795}
.badge.job-cancelled{background:#eef1f5;color:#3d4757;border-color:#aab3c0}
.meter{display:flex;height:.7rem;min-width:8rem;border-radius:999px;overflow:hidden;background:#e6e9ee;border:1px solid #c5cbd4}
.meter span{display:block;height:100%}
.meter .done{background:#2f855a}
.meter .failed{background:#b42318}
.meter .skipped{background:#8a96a8}
.meter .flight{background:#93a9e6}
.meter-text{display:block;font-size:.8rem;color:#5b6677;margin-top:.15rem}
th.col-progress{width:30%}
form.search{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin:0 0 1rem}
form.search div{display:flex;flex-direction:column;gap:.2rem;min-width:0;flex:1 1 10rem}
label{font-size:.85rem;font-weight:600}
input,select,button{font:inherit;padding:.4rem .55rem;border:1px solid #aab3c0;border-radius:5px;background:#fff;color:inherit;max-width:100%}
button{cursor:pointer;background:#1b5fbf;border-color:#1b5fbf;color:#fff;font-weight:600}
button.quiet{background:transparent;border-color:#8a96a8;color:#fff}
button.danger{background:#b42318;border-color:#b42318}
button:disabled{background:#c5cbd4;border-color:#c5cbd4;color:#4a5568;cursor:not-allowed}
details.confirm{margin:.5rem 0}
details.confirm>summary{display:inline-block;cursor:pointer;padding:.4rem .75rem;border:1px solid #b42318;border-radius:5px;color:#b42318;font-weight:600;list-style:none}
details.confirm>summary::-webkit-details-marker{display:none}
details.confirm[open]>summary{background:#fde7e7}
details.confirm form{margin:.6rem 0 0;padding:.75rem;border:1px solid #e69a9a;border-radius:6px;background:#fff}
details.confirm form p{margin:0 0 .6rem}
.login{max-width:26rem;margin:3rem auto;background:#fff;border:1px solid #d8dde5;border-radius:8px;padding:1.25rem}
.login form{display:flex;flex-direction:column;gap:.5rem}
.alert{padding:.6rem .8rem;border-radius:6px;margin:0 0 1rem;border:1px solid}
.alert p{margin:0}
.alert.error{background:#fde7e7;border-color:#e69a9a;color:#7f1d1d}
.alert.ok{background:#e3f5e8;border-color:#7cc795;color:#14532d}
dl{display:grid;grid-template-columns:minmax(7rem,max-content) 1fr;gap:.3rem 1rem;margin:0;background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:.75rem}
dt{font-weight:600;color:#4a5568}
dd{margin:0;min-width:0}
.pager{display:flex;gap:1rem;margin:.75rem 0}
.muted{color:#5b6677}
tr.warn td{background:#fff4e5}
.charts{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,22rem),1fr))}
figure{margin:0;background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:.5rem}
figcaption{font-weight:600;padding:.25rem .25rem .5rem}
svg{display:block;width:100%;height:auto}
.ranges{display:flex;flex-wrap:wrap;gap:.5rem;margin:0 0 1rem}
.ranges a{padding:.25rem .6rem;border:1px solid #aab3c0;border-radius:5px;text-decoration:none}
.ranges a[aria-current=page]{background:#1b5fbf;border-color:#1b5fbf;color:#fff}
.vh{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}
@media (max-width:760px){
main{padding:.75rem}
header .bar{padding:.5rem .75rem}
dl{grid-template-columns:1fr;gap:0}
dt{margin-top:.4rem}
dt:first-child{margin-top:0}
.scroll{overflow:visible;border:0;background:transparent}
table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
table.cards thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.cards tr{display:flex;flex-direction:column;gap:.15rem;background:#fff;border:1px solid #d8dde5;border-radius:6px;padding:.55rem .7rem;margin:0 0 .6rem}
table.cards td{position:relative;border:0;padding:.1rem 0 .1rem 6.5rem;min-height:1.4rem;min-width:0;white-space:normal;overflow-wrap:anywhere}
table.cards td::before{content:attr(data-label);position:absolute;left:0;top:.1rem;width:6rem;font-weight:600;color:#4a5568;font-size:.8rem;line-height:1.6}
table.cards td.lead{order:-1}
table.cards td.full{padding-left:0}
table.cards td.full::before{content:none}
table.cards td.empty{padding-left:0}
table.cards td.empty::before{content:none}
tr.warn{background:#fff4e5}
tr.warn td{background:transparent}
.sub{max-width:none}
}
"#;

/// The console's icon, inline (the console serves no images), as the demo page's.
const ICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='7' fill='%231d2430'/%3E%3Cpath d='M10 15v-3a6 6 0 0 1 12 0v3' fill='none' stroke='%23fff' stroke-width='2.5'/%3E%3Crect x='8' y='15' width='16' height='11' rx='2' fill='%23fff'/%3E%3C/svg%3E";

/// A whole page: the shell (navigation and sign-out when signed in) around `body`.
pub fn page(title: &str, shell: Option<&Shell<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 1024);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{} · grantkeeper</title>
<link rel="icon" href="{ICON}">
<style>{STYLE}</style>
<script src="/admin/console.js" defer></script>
</head>
<body>
<header>
<div class="bar">
<span class="brand">grantkeeper console</span>
"#,
        esc(title)
    );
    if let Some(shell) = shell {
        let current = |s: Section| {
            if shell.section == s {
                r#" aria-current="page""#
            } else {
                ""
            }
        };
        let _ = write!(
            out,
            r#"<nav aria-label="Console">
<a id="nav-users" href="/admin/users"{}>Users</a>
<a id="nav-activity" href="/admin/activity"{}>Activity</a>
<a id="nav-jobs" href="/admin/jobs"{}>Jobs</a>
</nav>
<span class="who" title="API key {}">Signed in with key <b>{}</b></span>
<form method="post" action="/admin/logout">
<input type="hidden" name="csrf" value="{}">
<button type="submit" id="logout" class="quiet">Sign out</button>
</form>
"#,
            current(Section::Users),
            current(Section::Activity),
            current(Section::Jobs),
            esc(shell.key_id),
            esc(shell.key_name),
            esc(shell.csrf),
        );
    }
    let _ = write!(
        out,
        "</div>\n</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain Émile 日本").to_string(), "plain Émile 日本");
        assert_eq!(esc("").to_string(), "");
        assert_eq!(esc("&amp;").to_string(), "&amp;amp;");
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(path_segment("107abc"), "107abc");
        assert_eq!(path_segment("a/b c?d#e"), "a%2Fb%20c%3Fd%23e");
        assert_eq!(path_segment("\"><x"), "%22%3E%3Cx");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn queries_leave_out_empty_values() {
        assert_eq!(query(&[("q", ""), ("state", "")]), "");
        assert_eq!(
            query(&[("q", "a b&c"), ("state", "active"), ("after", "")]),
            "?q=a+b%26c&state=active"
        );
    }

    #[test]
    fn times_are_relative_when_recent_and_utc_to_the_second_else() {
        let now = datetime!(2025-03-01 12:00:00 UTC);
        assert_eq!(
            utc(datetime!(2025-03-01 12:34:56 +02:00)),
            "2025-03-01 10:34:56 UTC"
        );
        let ago = |secs: i64| relative(now - time::Duration::seconds(secs), now);
        assert_eq!(ago(10).as_deref(), Some("just now"));
        assert_eq!(ago(60).as_deref(), Some("1 minute ago"));
        assert_eq!(ago(3 * 60 + 10).as_deref(), Some("3 minutes ago"));
        assert_eq!(ago(2 * 3600).as_deref(), Some("2 hours ago"));
        assert_eq!(ago(-3600).as_deref(), Some("in 1 hour"));
        assert_eq!(ago(2 * 86_400), None);
        let html = time(now - time::Duration::minutes(3), now);
        assert_eq!(
            html,
            r#"<time datetime="2025-03-01T11:57:00Z" title="2025-03-01 11:57:00 UTC">3 minutes ago</time>"#
        );
        let old = time(datetime!(2025-02-01 08:00:00 UTC), now);
        assert!(old.ends_with(">2025-02-01 08:00:00 UTC</time>"), "{old}");
        assert_eq!(time_or_never(None, now), "never");
        assert_eq!(
            short_scopes_in("web https://www.googleapis.com/auth/drive.appdata openid"),
            "web drive.appdata openid"
        );
    }

    #[test]
    fn scopes_are_shortened_with_the_full_name_kept() {
        assert_eq!(
            short_scope("https://www.googleapis.com/auth/drive.appdata"),
            "drive.appdata"
        );
        assert_eq!(short_scope("openid"), "openid");
        let list = scope_list(["openid", "https://www.googleapis.com/auth/userinfo.email"]);
        assert_eq!(
            list,
            r#"<span title="openid">openid</span>, <span title="https://www.googleapis.com/auth/userinfo.email">userinfo.email</span>"#
        );
        assert_eq!(scope_list([]), "none");
    }

    #[test]
    fn the_shell_escapes_what_it_shows() {
        let html = page(
            "<t>",
            Some(&Shell {
                section: Section::Users,
                key_id: "key_1",
                key_name: "<b>ops</b>",
                csrf: "abc",
            }),
            "<p>body</p>",
        );
        assert!(html.contains("<title>&lt;t&gt; · grantkeeper</title>"));
        assert!(html.contains("<b>&lt;b&gt;ops&lt;/b&gt;</b>"));
        assert!(!html.contains("<b>ops"));
        assert!(html.contains(r#"<a id="nav-users" href="/admin/users" aria-current="page">"#));
        assert!(html.contains(r#"name="csrf" value="abc""#));
        assert!(html.contains("<p>body</p>"));
    }
}
