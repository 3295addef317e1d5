//! The OpenAPI document of the JSON API (`GET /openapi.json`), generated from the routes'
//! own request and answer types and their `#[utoipa::path]` descriptions, made once. The
//! console's and the demo page's routes are not in it (design.md).

use crate::error::ErrorBody;
use std::marker::PhantomData;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Object, ObjectBuilder, OpenApi, Type};
use utoipa::{Modify, OpenApi as _};

/// The document, as served.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&document()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document could not be written");
        String::from("{}")
    })
});

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "grantkeeper",
        version = "1",
        description = "Offline access to Google APIs for users who signed in with Google. The \
                       sign-in endpoints serve web and mobile clients (a session cookie); /v1 \
                       serves the app's other services with an API key. Every error body is \
                       the `Error` schema, except /risc's refusals (RFC 8935).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "sign-in", description = "Browsers and mobile apps: a one-time code in, a session cookie out"),
        (name = "users", description = "The app's services (API key): users, access tokens, Google API calls as a user"),
        (name = "jobs", description = "The app's services (API key, scope jobs): work over every user's grant, in leased batches"),
        (name = "operations", description = "Health, readiness, metrics, security events, this document"),
    ),
    modifiers(&Security)
)]
struct Base;

/// The whole document: the base, then each router's part.
fn document() -> OpenApi {
    let mut doc = Base::openapi();
    for part in [
        super::signin::Api::openapi(),
        super::v1::Api::openapi(),
        super::jobs::Api::openapi(),
        super::health::Api::openapi(),
        super::metrics::Api::openapi(),
        super::risc::Api::openapi(),
    ] {
        doc.merge(part);
    }
    // One handler serves the proxy's six methods; an operation id names one operation.
    if let Some(item) = doc.paths.paths.get_mut("/v1/users/{sub}/google/{path}") {
        for (method, operation) in [
            ("get", item.get.as_mut()),
            ("head", item.head.as_mut()),
            ("post", item.post.as_mut()),
            ("put", item.put.as_mut()),
            ("patch", item.patch.as_mut()),
            ("delete", item.delete.as_mut()),
        ] {
            if let Some(operation) = operation {
                operation.operation_id = Some(format!("proxy_{method}"));
            }
        }
    }
    doc
}

/// The two ways a caller is known: an API key (`/v1`) and the session cookie (sign-in routes).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `grantkeeper api-keys create`, with the scope each \
                         operation names (`users:read`, `users:write`, `token`, `proxy`, \
                         `jobs`). Over `limits.v1_per_second`: 429 `rate_limited`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::cookies::COOKIE_NAME,
                "The session cookie that `POST /authcode` sets (HttpOnly, SameSite=Lax)",
            ))),
        );
    }
}

/// A string schema that takes only `values`.
pub(crate) fn string_enum(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// The scopes an API key may hold, each as a route's 403 names it ([`KeyErrors`]).
pub(crate) mod scope {
    pub(crate) trait Scope {
        const FORBIDDEN: &'static str;
    }

    pub(crate) struct UsersRead;
    pub(crate) struct UsersWrite;
    pub(crate) struct Token;
    pub(crate) struct Proxy;
    pub(crate) struct Jobs;

    impl Scope for UsersRead {
        const FORBIDDEN: &'static str = "`forbidden`: the key lacks scope `users:read`";
    }
    impl Scope for UsersWrite {
        const FORBIDDEN: &'static str = "`forbidden`: the key lacks scope `users:write`";
    }
    impl Scope for Token {
        const FORBIDDEN: &'static str = "`forbidden`: the key lacks scope `token`";
    }
    impl Scope for Proxy {
        const FORBIDDEN: &'static str = "`forbidden`: the key lacks scope `proxy`";
    }
    impl Scope for Jobs {
        const FORBIDDEN: &'static str = "`forbidden`: the key lacks scope `jobs`";
    }
}

/// What every `/v1` route behind an API key of scope `S` may answer, whatever it does
/// (`extract::api_key`): no key or an unknown one, a key without `S`, a key over its rate, or
/// a key that could not be looked up because the store is unavailable. A route lists it in its
/// `responses`, then its own answers; one of its own with the same status replaces the set's.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the document; never built")]
pub(crate) enum KeyErrors<S: scope::Scope> {
    #[response(
        status = 401,
        description = "`unauthorized`: no API key, or not one of ours"
    )]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = S::FORBIDDEN)]
    Forbidden(ErrorBody, PhantomData<S>),
    #[response(
        status = 429,
        description = "`rate_limited`: the key is over `limits.v1_per_second` (Retry-After)"
    )]
    RateLimited(ErrorBody),
    #[response(
        status = 503,
        description = "`upstream_unavailable`: the store is unavailable (Retry-After)"
    )]
    Unavailable(ErrorBody),
}

/// A route about one user, named by `{sub}`, that is not stored.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "`not_found`: no user with this sub")]
#[allow(
    dead_code,
    reason = "describes an answer for the document; never built"
)]
pub(crate) struct NoSuchUser(ErrorBody);

/// A route about one job, named by `{id}`, that does not exist.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "`not_found`: no job with this id")]
#[allow(
    dead_code,
    reason = "describes an answer for the document; never built"
)]
pub(crate) struct NoSuchJob(ErrorBody);
