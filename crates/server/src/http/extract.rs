//! Extractors whose refusals are the contract's error bodies. axum's own answer plain text: a
//! path parameter that is not UTF-8 once percent-decoded (`/v1/users/%ff`) would be a
//! `text/plain` 400. Here it is `invalid_request` (the JSON body of the API, or the console's
//! HTML page).

use super::admin::PageError;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The route's path parameters; refused with the API's JSON error body.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(path_error)
    }
}

/// The route's path parameters; refused with the console's HTML error page.
pub struct PagePath<T>(pub T);

impl<T, S> FromRequestParts<S> for PagePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PagePath(value))
            .map_err(PageError::from)
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(_) => ApiError::InvalidRequest(
            "a path parameter is not valid: percent-decoded, it must be UTF-8 text".to_owned(),
        ),
        // The route has no such parameter: a mistake of ours, not the caller's.
        other => ApiError::Internal(format!("path parameters: {other}")),
    }
}
