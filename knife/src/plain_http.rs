//! Requests to an `http://` server without setting up TLS. reqwest built with native-tls
//! makes its TLS connector when the client is built, and OpenSSL then parses the system's
//! whole certificate bundle, twice: most of the CPU a short `push-jobs` call spends against
//! a plain-HTTP server. For such a server [`crate::api`] signs each request with
//! pushy-chef-http as usual ([`pushy_chef_http::RequestBuilder::prepare`]) and sends it
//! here, over hyper's HTTP/1.1 client (the one under reqwest, already in the build), so no
//! certificate is read; `https://` URLs keep going through reqwest.
//!
//! Not used when a proxy is configured in the environment: reqwest honours `http_proxy`
//! and friends, this client does not.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pushy_chef_http::Prepared;
use reqwest::Url;

/// The proxy variables reqwest reads for an `http://` URL (either case).
const PROXY_VARIABLES: [&str; 2] = ["http_proxy", "all_proxy"];

/// Why a plain-HTTP request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL, a header or the method cannot make an HTTP request.
    #[error("invalid request")]
    Request(#[from] http::Error),
    /// Connecting, sending or reading the answer's head failed.
    #[error(transparent)]
    Send(#[from] hyper_util::client::legacy::Error),
    /// The answer's body broke off.
    #[error("reading the answer")]
    Body(#[source] hyper::Error),
    /// No whole answer within the request's bound.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// An HTTP/1.1 client with a connection pool, for `http://` URLs only.
pub struct PlainHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    user_agent: String,
}

impl PlainHttp {
    /// A client for requests to `base`, when `base` is `http://` and `env` names no proxy
    /// for it; `None` otherwise (reqwest then sends, with TLS and proxies).
    pub fn for_base(
        base: &Url,
        env: &dyn Fn(&str) -> Option<String>,
        connect_timeout: Duration,
        user_agent: &str,
    ) -> Option<PlainHttp> {
        if base.scheme() != "http" || proxy_configured(env) {
            return None;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        // Like reqwest: small requests go out at once instead of waiting for Nagle.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Some(PlainHttp {
            client,
            user_agent: user_agent.to_owned(),
        })
    }

    /// Whether this client sends to `url` (a plain-HTTP URL).
    pub fn serves(&self, url: &Url) -> bool {
        url.scheme() == "http"
    }

    /// Sends `prepared` and returns the answer as a reqwest response, so callers read it
    /// the same way whichever client sent it. With a timeout, the whole answer (head and
    /// body) is read within it, as reqwest's request timeout does; without one (the event
    /// feed), the body streams.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn send(&self, prepared: Prepared) -> Result<reqwest::Response, Error> {
        let mut request = http::Request::builder()
            .method(prepared.method)
            .uri(prepared.url.as_str())
            .header(http::header::USER_AGENT, &self.user_agent);
        for (name, value) in &prepared.headers {
            request = request.header(name, value);
        }
        let body = Full::new(Bytes::from(prepared.body.unwrap_or_default()));
        let request = request.body(body)?;
        let Some(limit) = prepared.timeout else {
            let response = self.client.request(request).await?;
            return Ok(response.map(reqwest::Body::wrap).into());
        };
        let whole = async {
            let response = self.client.request(request).await?;
            let (head, body) = response.into_parts();
            let bytes = body.collect().await.map_err(Error::Body)?.to_bytes();
            Ok::<_, Error>(http::Response::from_parts(head, reqwest::Body::from(bytes)))
        };
        match tokio::time::timeout(limit, whole).await {
            Ok(answer) => Ok(answer?.into()),
            Err(_) => Err(Error::TimedOut(limit)),
        }
    }
}

/// Whether `env` sets a proxy reqwest would use for an `http://` URL.
fn proxy_configured(env: &dyn Fn(&str) -> Option<String>) -> bool {
    PROXY_VARIABLES.iter().any(|name| {
        [name.to_string(), name.to_ascii_uppercase()]
            .iter()
            .any(|n| env(n).is_some_and(|v| !v.trim().is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_plain_http_without_a_proxy_skips_reqwest() {
        let none = |_: &str| None;
        let t = Duration::from_secs(1);
        assert!(
            PlainHttp::for_base(&url("http://push:10003/organizations/o"), &none, t, "x").is_some()
        );
        assert!(PlainHttp::for_base(&url("https://push/organizations/o"), &none, t, "x").is_none());
        for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            let env = |n: &str| (n == var).then(|| "http://proxy:3128".to_owned());
            assert!(
                PlainHttp::for_base(&url("http://push/organizations/o"), &env, t, "x").is_none(),
                "{var}"
            );
        }
        let empty = |n: &str| (n == "http_proxy").then(String::new);
        assert!(PlainHttp::for_base(&url("http://push/organizations/o"), &empty, t, "x").is_some());
    }

    /// A one-request HTTP/1.1 server: answers `answer` and hands back the request head.
    async fn server(answer: &'static str) -> (Url, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = url(&format!("http://{}/o/", listener.local_addr().unwrap()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-request");
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
            // The test only needs the head; a dropped receiver is fine.
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            // Keep the connection open (a body left unfinished stays unfinished) until the
            // test's runtime ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(socket);
        });
        (base, rx)
    }

    fn prepared(url: Url, timeout: Option<Duration>) -> Prepared {
        Prepared {
            method: reqwest::Method::GET,
            url,
            headers: vec![
                ("Accept".to_owned(), "application/json".to_owned()),
                ("X-Ops-Userid".to_owned(), "alice".to_owned()),
            ],
            body: None,
            timeout,
        }
    }

    #[tokio::test]
    async fn a_bounded_request_comes_back_whole_with_our_headers() {
        let (base, head) = server(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 16\r\nX-A: b\r\n\r\n{\"error\":\"none\"}",
        )
        .await;
        let none = |_: &str| None;
        let plain =
            PlainHttp::for_base(&base, &none, Duration::from_secs(5), "push-jobs/t").unwrap();
        let resp = plain
            .send(prepared(
                base.join("pushy/jobs").unwrap(),
                Some(Duration::from_secs(5)),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-a"], "b");
        assert_eq!(resp.text().await.unwrap(), r#"{"error":"none"}"#);
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /o/pushy/jobs http/1.1\r\n"), "{head}");
        for line in [
            "user-agent: push-jobs/t",
            "accept: application/json",
            "x-ops-userid: alice",
            "host: 127.0.0.1:",
        ] {
            assert!(head.contains(line), "{line} not in {head}");
        }
        assert!(
            !head.contains("content-length"),
            "a GET without a body: {head}"
        );
    }

    #[tokio::test]
    async fn an_unbounded_request_streams_and_a_silent_server_times_out() {
        let (base, _head) =
            server("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n").await;
        let none = |_: &str| None;
        let plain = PlainHttp::for_base(&base, &none, Duration::from_secs(5), "t").unwrap();
        let mut resp = plain.send(prepared(base.clone(), None)).await.unwrap();
        let chunk = resp.chunk().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"data: 1\n\n");

        // Headers sent, body never finished: the bound ends the wait.
        let (base, _head) = server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{").await;
        let plain = PlainHttp::for_base(&base, &none, Duration::from_secs(5), "t").unwrap();
        let err = plain
            .send(prepared(base, Some(Duration::from_millis(300))))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TimedOut(_)), "{err:?}");
    }
}
