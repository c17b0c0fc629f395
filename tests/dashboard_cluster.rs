//! A dashboard login URL works once in a whole cluster (issue 16): the record of used
//! logins is in the database, so a URL traded for a session on one instance is refused by
//! another on the same PostgreSQL database. Both instances run in-process on one data
//! directory (one server key, so each accepts the other's sealed logins).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::{ADMIN_USER, Harness, ORG, PgDb, Reply, config_for};
use pushy_server::store::{PostgresStore, Store};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

async fn visit(state: &pushy_server::http::AppState, path: &str) -> Reply {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let resp = pushy_server::service(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    Reply::read(resp).await
}

#[tokio::test]
async fn a_login_url_used_on_one_instance_is_refused_on_another() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let store = || async {
        let store = PostgresStore::connect(db.options(), 2).await.unwrap();
        Arc::new(store) as Arc<dyn Store>
    };
    let a = Harness::with_store(store().await, |_| {}).await;
    let b_token = CancellationToken::new();
    let b =
        pushy_server::build_state_with(config_for(a.tmp.path()), store().await, b_token.clone())
            .await
            .unwrap();

    let r = a
        .call(
            "POST",
            &format!("/organizations/{ORG}/pushy/dashboard/logins"),
            "{}",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let url = r.json()["url"].as_str().unwrap().to_owned();
    let path = url.split_once("push.example.com").unwrap().1;

    let first = visit(&b, path).await;
    assert_eq!(first.status, 303, "{}", first.text);
    let again = visit(&a.state, path).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert!(again.text.contains("already used"), "{}", again.text);

    b_token.cancel();
    a.token.cancel();
}
