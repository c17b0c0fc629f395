//! `ApiError`: every error the HTTP API can answer, with its status, headers and which of
//! the two body shapes of http.md §1.3 it uses: `{"error":["msg"]}` (list) or
//! `{"error":"msg"}` (text). Framework-style errors (404, 405, 406, 415, 501) get a JSON
//! list body too instead of the original's HTML page (§1.3.6 recommendation).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pushy_protocol::chef_auth::HeaderError;
use pushy_store as store;

use crate::{auth, jobs};

/// The `WWW-Authenticate` value of 401s from the authentication stage (sic: 1.3 is
/// accepted too, §8.1 item 13).
const WWW_AUTHENTICATE: &str = "X-Ops-Sign version=\"1.0\" version=\"1.1\"";

/// Seconds a client is told to wait (`Retry-After`) when the store is unavailable.
const STORE_RETRY_AFTER: &str = "5";

/// What the client reads when the store failed: whether to retry, never the cause.
fn store_message(e: &store::Error) -> &'static str {
    if e.is_transient() {
        "the job store is unavailable; retry later"
    } else {
        "internal error"
    }
}

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route, or no such job / output / feed.
    #[error("The requested document was not found on this server.")]
    NotFound,
    /// A method outside HTTP's usual set.
    #[error("Method not implemented")]
    NotImplemented,
    /// A method the route does not allow; carries the `Allow` value.
    #[error("Method not allowed")]
    MethodNotAllowed(&'static str),
    /// The authentication headers failed the pre-checks.
    #[error("{0}")]
    Headers(#[from] HeaderError),
    /// Body over the limit.
    #[error("JSON must be no more than {0} bytes.")]
    BodyTooLarge(usize),
    /// The body did not arrive (in time, intact, or within the memory budget).
    #[error("{0}")]
    Body(#[from] BodyError),
    /// The job body failed validation.
    #[error("{0}")]
    InvalidJob(#[from] jobs::SpecError),
    /// `ccpk` query parameter absent.
    #[error("Missing ccpk")]
    MissingCcpk,
    /// `ccpk` is not a 40-character Z85 key.
    #[error("Bad ccpk")]
    BadCcpk,
    /// Refused in authentication or authorization.
    #[error(transparent)]
    Auth(#[from] auth::Error),
    /// `Accept` admits nothing the endpoint produces.
    #[error("Not acceptable")]
    NotAcceptable,
    /// The body is not `application/json`.
    #[error("Unsupported media type")]
    UnsupportedMediaType,
    /// The request conflicts with the job's state (aborting a finished job).
    #[error("{0}")]
    Conflict(String),
    /// The store failed; the cause is logged, the client sees a generic message. 503 with
    /// `Retry-After` when the store is unavailable (transient), else 500.
    #[error("{}", store_message(.0))]
    Store(#[from] store::Error),
    /// Something else failed inside the server; logged.
    #[error("internal error")]
    Internal(String),
    /// A dashboard request without a valid session (issue 16).
    #[error("{}", session_message(.0))]
    Session(Option<crate::dashboard::Refusal>),
    /// A dashboard write without the session's CSRF token (issue 16).
    #[error("missing or wrong X-CSRF-Token")]
    Csrf,
    /// A node search without a query, or one the Chef Server refused (issue 16).
    #[error("{0}")]
    BadSearch(String),
}

fn session_message(refusal: &Option<crate::dashboard::Refusal>) -> String {
    match refusal {
        None => "no dashboard session: run `push-jobs dashboard` for a login link".to_owned(),
        Some(r) => format!("{r}: run `push-jobs dashboard` for a new login link"),
    }
}

impl ApiError {
    /// The status the spec gives this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Headers(HeaderError::Missing(_) | HeaderError::UnsupportedVersion) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Headers(HeaderError::BadTimestamp | HeaderError::ClockSkew(_)) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(e) => e.status(),
            ApiError::InvalidJob(_) | ApiError::MissingCcpk | ApiError::BadSearch(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BadCcpk => StatusCode::UNAUTHORIZED,
            ApiError::Auth(e) => match e {
                auth::Error::OrgNotFound(_) => StatusCode::NOT_FOUND,
                auth::Error::UnknownPrincipal(_) | auth::Error::BadSignature(_) => {
                    StatusCode::UNAUTHORIZED
                }
                auth::Error::NotAssociated(..)
                | auth::Error::Forbidden(_)
                | auth::Error::ClientNodeMismatch => StatusCode::FORBIDDEN,
                auth::Error::ChefUnreachable(_) => StatusCode::BAD_GATEWAY,
                auth::Error::Chef(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Session(_) => StatusCode::UNAUTHORIZED,
            ApiError::Csrf => StatusCode::FORBIDDEN,
        }
    }

    /// Job validation errors and the 413 use the text shape; everything else the list.
    fn text_shaped(&self) -> bool {
        matches!(
            self,
            ApiError::BodyTooLarge(_) | ApiError::InvalidJob(_) | ApiError::Conflict(_)
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let cause = match &self {
                ApiError::Store(e) => format!("{e}: {:?}", std::error::Error::source(e)),
                ApiError::Auth(auth::Error::Chef(e)) => {
                    format!("{e}: {:?}", std::error::Error::source(e))
                }
                other => other.to_string(),
            };
            tracing::error!(%status, error = %cause, "request failed");
        }
        let message = self.to_string();
        let body = if self.text_shaped() {
            serde_json::json!({ "error": message })
        } else {
            serde_json::json!({ "error": [message] })
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Store(e) if e.is_transient() => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(STORE_RETRY_AFTER),
                );
            }
            ApiError::Body(e) => {
                if let Some(after) = e.retry_after() {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from_static(after));
                }
            }
            ApiError::Auth(auth::Error::UnknownPrincipal(_) | auth::Error::BadSignature(_)) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            _ => {}
        }
        response
    }
}

/// Why a request body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It did not arrive within `http_body_timeout`.
    #[error("Request body not received in time")]
    TimedOut,
    /// The connection failed or the framing was broken while it arrived.
    #[error("Request body could not be read")]
    Unreadable,
    /// Bodies in flight hold all of `http_body_memory`.
    #[error("Too many request bodies in progress; retry later")]
    Busy,
}

impl BodyError {
    /// 408, 400 or 503.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Retry-After` of a 503, seconds.
    pub fn retry_after(&self) -> Option<&'static str> {
        matches!(self, BodyError::Busy).then_some("5")
    }
}
