//! Extractors whose rejections answer in the API's error shape instead of axum's plain
//! text, so no framework-formatted error leaves the server.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters; a segment that does not decode (e.g. invalid UTF-8) names no
/// resource, so it is a 404.
pub(crate) struct Segments<T>(pub T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Segments(p.0))
            .map_err(|_| ApiError::NotFound)
    }
}

/// The value of query parameter `name`, CGI-unescaped (`+` is a space), if present.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_cgi_unescaped() {
        assert_eq!(
            query_param(Some("ccpk=a%2Bb%3D&version=2.0"), "ccpk").as_deref(),
            Some("a+b=")
        );
        assert_eq!(
            query_param(Some("include_file=true"), "include_file").as_deref(),
            Some("true")
        );
        assert_eq!(query_param(Some("version=2.0"), "ccpk"), None);
        assert_eq!(query_param(None, "ccpk"), None);
        assert_eq!(query_param(Some("x=%zz%4"), "x").as_deref(), Some("%zz%4"));
        assert_eq!(query_param(Some("x=a+b"), "x").as_deref(), Some("a b"));
    }
}
