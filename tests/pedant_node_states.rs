//! Pedant `integration/node_states_spec.rb` (http.md §7.3 items 27–37; item 38, the
//! auth-header suite, is in `pedant_auth_headers.rs`). `some_node` never connected.

mod common;
use common::*;
use serde_json::{Value, json};

fn list_url() -> String {
    format!("/organizations/{ORG}/pushy/node_states")
}

fn named_url() -> String {
    format!("/organizations/{ORG}/pushy/node_states/some_node")
}

fn offline() -> Value {
    json!({"availability": "unavailable", "node_name": "some_node", "status": "offline"})
}

fn assert_405(r: &Reply) {
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
}

/// Item 27: the list URL as pedant writes it, with a trailing `/`.
#[tokio::test]
async fn node_states_list_put_post_delete_are_405() {
    let h = Harness::new().await;
    for method in ["PUT", "POST", "DELETE"] {
        for path in [format!("{}/", list_url()), list_url()] {
            assert_405(&h.call(method, &path, "", ADMIN_USER).await);
        }
    }
}

/// Item 28.
#[tokio::test]
async fn node_states_named_put_post_delete_are_405() {
    let h = Harness::new().await;
    for method in ["PUT", "POST", "DELETE"] {
        assert_405(&h.call(method, &named_url(), "", ADMIN_USER).await);
    }
}

/// Item 29: no node connected, so the list is empty.
#[tokio::test]
async fn node_states_list_no_groups_members_are_200() {
    let h = Harness::new().await;
    for who in [ADMIN_USER, NORMAL_USER, NON_ADMIN_CLIENT, ADMIN_CLIENT] {
        let r = h.call("GET", &format!("{}/", list_url()), "", who).await;
        r.expect(200, json!([]));
    }
}

/// Item 30.
#[tokio::test]
async fn node_states_list_invalid_outside_bad_client_are_refused() {
    let h = Harness::new().await;
    let url = format!("{}/", list_url());
    h.call("GET", &url, "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("GET", &url, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    let r = h.call("GET", &url, "", BAD_CLIENT).await;
    r.expect(
        401,
        json!({"error": ["Invalid signature for user or client 'bad_client'"]}),
    );
}

/// Item 31 (and item 33, skipped in pedant: a never-seen node is 200, not 404).
#[tokio::test]
async fn node_states_named_no_groups_is_200_offline_unavailable() {
    let h = Harness::new().await;
    for who in [ADMIN_USER, NORMAL_USER, NON_ADMIN_CLIENT] {
        h.call("GET", &named_url(), "", who)
            .await
            .expect(200, offline());
    }
    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states/not_a_number"),
            "",
            ADMIN_USER,
        )
        .await;
    r.expect(
        200,
        json!({"availability": "unavailable", "node_name": "not_a_number", "status": "offline"}),
    );
}

/// Item 32.
#[tokio::test]
async fn node_states_named_invalid_outside_bad_client_are_refused() {
    let h = Harness::new().await;
    h.call("GET", &named_url(), "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("GET", &named_url(), "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    let r = h.call("GET", &named_url(), "", BAD_CLIENT).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

fn readers_group(h: &Harness) {
    h.set_group(
        "pushy_job_readers",
        &[NORMAL_USER, OUTSIDE_USER],
        &[NON_ADMIN_CLIENT],
        &[],
    );
}

/// Item 34.
#[tokio::test]
async fn node_states_list_with_readers_group() {
    let h = Harness::new().await;
    readers_group(&h);
    let url = format!("{}/", list_url());
    h.call("GET", &url, "", NORMAL_USER)
        .await
        .expect(200, json!([]));
    h.call("GET", &url, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    h.call("GET", &url, "", NON_ADMIN_CLIENT)
        .await
        .expect(200, json!([]));
    h.call("GET", &url, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    h.call("GET", &url, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
}

/// Item 35.
#[tokio::test]
async fn node_states_named_with_readers_group() {
    let h = Harness::new().await;
    readers_group(&h);
    let url = named_url();
    h.call("GET", &url, "", NORMAL_USER)
        .await
        .expect(200, offline());
    h.call("GET", &url, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    h.call("GET", &url, "", NON_ADMIN_CLIENT)
        .await
        .expect(200, offline());
    h.call("GET", &url, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    h.call("GET", &url, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
}

/// Item 36: membership through a nested group, list and named.
#[tokio::test]
async fn node_states_with_nested_readers_group() {
    let h = Harness::new().await;
    h.set_group("pushy_job_readers", &[], &[], &["nested_pushy_job_readers"]);
    h.set_group(
        "nested_pushy_job_readers",
        &[NORMAL_USER],
        &[NON_ADMIN_CLIENT],
        &[],
    );
    let list = format!("{}/", list_url());
    h.call("GET", &list, "", NORMAL_USER)
        .await
        .expect(200, json!([]));
    h.call("GET", &list, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    h.call("GET", &list, "", NON_ADMIN_CLIENT)
        .await
        .expect(200, json!([]));
    h.call("GET", &list, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    let named = named_url();
    h.call("GET", &named, "", NORMAL_USER)
        .await
        .expect(200, offline());
    h.call("GET", &named, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    h.call("GET", &named, "", NON_ADMIN_CLIENT)
        .await
        .expect(200, offline());
    h.call("GET", &named, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
}

/// Item 37.
#[tokio::test]
async fn node_states_bogus_org_is_404() {
    let h = Harness::new().await;
    let body = json!({"error": ["organization 'bogus-org' does not exist."]});
    for url in [
        "/organizations/bogus-org/pushy/node_states",
        "/organizations/bogus-org/pushy/node_states/some_node",
    ] {
        h.call("GET", url, "", ADMIN_USER)
            .await
            .expect(404, body.clone());
    }
}
