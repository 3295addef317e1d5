//! The OpenAPI document of the JSON API (`GET /openapi.json`), generated from the routes'
//! own request and answer types and their `#[utoipa::path]` descriptions, made once. The
//! console's and the demo page's routes are not in it (design.md).

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
