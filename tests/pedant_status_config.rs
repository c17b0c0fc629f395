//! Pedant `integration/status_spec.rb` and `integration/config_spec.rb` (http.md §7.1
//! items 1–8, §7.2 items 9–25; item 26, the auth-header suite, is in
//! `pedant_auth_headers.rs`), plus the `ccpk` checks of §1.4.1.

mod common;
use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::json;

/// The `ccpk` pedant puts on every config URL.
const CCPK: &str = "1234567890123456789012345678901234567890";

fn config_url(node: &str) -> String {
    format!("/organizations/{ORG}/pushy/config/{node}?ccpk={CCPK}")
}

/// The subset pedant checks on a successful config (item 10).
fn check_config_doc(r: &Reply, node: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(b["type"], "config");
    assert_eq!(b["host"], "127.0.0.1");
    assert_eq!(b["node"], node);
    assert_eq!(b["organization"], ORG);
    let pk = b["public_key"].as_str().unwrap();
    assert!(pk.starts_with("-----BEGIN PUBLIC KEY-----"), "{pk}");
    assert_eq!(b["push_jobs"]["heartbeat"], r.expected_heartbeat());
    assert_eq!(b["encoded_session_key"]["method"], "hmac_sha256");
    assert!(
        b["encoded_session_key"]["key"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert_eq!(b["lifetime"], 3600);
    assert_eq!(b["max_message_skew"], 300);
    assert!(b["incarnation_id"].as_str().is_some_and(|k| !k.is_empty()));
}

fn assert_allow(r: &Reply, allow: &str) {
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some(allow)
    );
    assert!(r.json()["error"].is_array(), "{}", r.text);
}

fn pedant_groups(h: &Harness) {
    for g in ["pushy_job_readers", "pushy_job_writers"] {
        h.set_group(g, &[NORMAL_USER, OUTSIDE_USER], &[NON_ADMIN_CLIENT], &[]);
    }
}

// ---- §7.1 status_spec.rb ------------------------------------------------------------

/// Items 1–3, signed as pedant does and unsigned.
#[tokio::test]
async fn status_put_post_delete_are_405() {
    let h = Harness::new().await;
    for method in ["PUT", "POST", "DELETE"] {
        let r = h.call(method, "/pushy/_status", "", ADMIN_USER).await;
        assert_allow(&r, "GET");
        let req = Request::builder()
            .method(method)
            .uri("/pushy/_status")
            .body(Body::empty())
            .unwrap();
        assert_allow(&h.send(req).await, "GET");
    }
}

/// Items 4–8: no authentication at all, so every actor (even unknown or outside ones)
/// and an unsigned request get 200.
#[tokio::test]
async fn status_get_is_200_for_every_actor() {
    let h = Harness::new().await;
    for who in [
        ADMIN_USER,
        NORMAL_USER,
        ADMIN_CLIENT,
        INVALID_USER,
        OUTSIDE_USER,
        BAD_CLIENT,
    ] {
        let r = h.call("GET", "/pushy/_status", "", who).await;
        assert_eq!(r.status, 200, "{who}: {}", r.text);
        let b = r.json();
        assert_eq!(b["status"], "it's alive", "{who}");
        assert_eq!(b["incarnation_id"], json!(&*h.state.incarnation));
        assert_eq!(b["node_fsm_count"], 0);
        assert_eq!(b["job_processes"], json!([]));
    }
    let req = Request::builder()
        .uri("/pushy/_status")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "status",
            "incarnation_id",
            "node_fsm_count",
            "job_processes"
        ]
    );
}

/// §8.2 item 20 (fixed): `job_processes` never lists job ids, even with jobs around.
#[tokio::test]
async fn status_job_processes_is_always_empty() {
    let h = Harness::new().await;
    h.create_job(r#"{"command":"sleep 1","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.create_job(
        r#"{"command":"sleep 1","nodes":["DONKEY"],"quorum":0}"#,
        ADMIN_USER,
    )
    .await;
    let r = h.call("GET", "/pushy/_status", "", INVALID_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["job_processes"], json!([]));
}

// ---- §7.2 config_spec.rb ------------------------------------------------------------

/// Item 9: `config/` without a node name is no route, whatever the method.
#[tokio::test]
async fn config_without_node_name_is_404_for_every_method() {
    let h = Harness::new().await;
    for path in [
        format!("/organizations/{ORG}/pushy/config/?ccpk={CCPK}"),
        format!("/organizations/{ORG}/pushy/config?ccpk={CCPK}"),
    ] {
        for method in ["GET", "PUT", "POST", "DELETE"] {
            let r = h.call(method, &path, "", ADMIN_USER).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
            assert!(r.json()["error"].is_array(), "{}", r.text);
        }
    }
}

/// Item 10: the admin user gets the document pedant checks.
#[tokio::test]
async fn config_admin_user_gets_the_config_document() {
    let h = Harness::new().await;
    let r = h.call("GET", &config_url("DONKEY"), "", ADMIN_USER).await;
    check_config_doc(&r, "DONKEY");
    assert_eq!(r.json()["incarnation_id"], json!(&*h.state.incarnation));
}

/// Items 11–13.
#[tokio::test]
async fn config_put_post_delete_are_405() {
    let h = Harness::new().await;
    for method in ["PUT", "POST", "DELETE"] {
        let r = h.call(method, &config_url("DONKEY"), "", ADMIN_USER).await;
        assert_allow(&r, "GET");
    }
}

/// Items 14–15.
#[tokio::test]
async fn config_no_groups_admin_and_normal_user_are_200() {
    let h = Harness::new().await;
    for who in [ADMIN_USER, NORMAL_USER] {
        let r = h.call("GET", &config_url("DONKEY"), "", who).await;
        check_config_doc(&r, "DONKEY");
    }
}

/// Item 16.
#[tokio::test]
async fn config_no_groups_client_own_node_is_200() {
    let h = Harness::new().await;
    let r = h
        .call("GET", &config_url(NON_ADMIN_CLIENT), "", NON_ADMIN_CLIENT)
        .await;
    check_config_doc(&r, NON_ADMIN_CLIENT);
}

/// Item 17.
#[tokio::test]
async fn config_invalid_user_is_401_authn() {
    let h = Harness::new().await;
    let r = h.call("GET", &config_url("DONKEY"), "", INVALID_USER).await;
    r.expect(401, authn_invalid());
}

/// Item 18.
#[tokio::test]
async fn config_outside_user_own_node_is_403_notassoc() {
    let h = Harness::new().await;
    let r = h
        .call("GET", &config_url(OUTSIDE_USER), "", OUTSIDE_USER)
        .await;
    r.expect(403, notassoc());
}

/// Item 19.
#[tokio::test]
async fn config_bad_client_is_401() {
    let h = Harness::new().await;
    let r = h.call("GET", &config_url(BAD_CLIENT), "", BAD_CLIENT).await;
    r.expect(
        401,
        json!({"error": ["Invalid signature for user or client 'bad_client'"]}),
    );
}

/// Item 20.
#[tokio::test]
async fn config_non_admin_client_other_node_is_403_name_mismatch() {
    let h = Harness::new().await;
    let r = h
        .call("GET", &config_url("DONKEY"), "", NON_ADMIN_CLIENT)
        .await;
    r.expect(403, json!({"error": ["Client and node name must match"]}));
    // Case-sensitive.
    let r = h
        .call("GET", &config_url("NON_ADMIN_CLIENT"), "", NON_ADMIN_CLIENT)
        .await;
    r.expect(403, json!({"error": ["Client and node name must match"]}));
}

/// Item 21.
#[tokio::test]
async fn config_readers_group_member_user_is_200() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let r = h.call("GET", &config_url("DONKEY"), "", NORMAL_USER).await;
    check_config_doc(&r, "DONKEY");
}

/// Item 22.
#[tokio::test]
async fn config_readers_group_non_member_user_is_403_noaccess() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let r = h.call("GET", &config_url("DONKEY"), "", ADMIN_USER).await;
    r.expect(403, noaccess(ADMIN_USER));
}

/// Item 23 is skipped in pedant; the spec's rule (§1.2.2, §8.4 item 35): clients are
/// never checked against the readers group on this route, member or not.
#[tokio::test]
async fn config_readers_group_does_not_apply_to_clients() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let r = h
        .call("GET", &config_url(NON_ADMIN_CLIENT), "", NON_ADMIN_CLIENT)
        .await;
    check_config_doc(&r, NON_ADMIN_CLIENT);
    let r = h
        .call("GET", &config_url(ADMIN_CLIENT), "", ADMIN_CLIENT)
        .await;
    check_config_doc(&r, ADMIN_CLIENT);
    let r = h
        .call("GET", &config_url("DONKEY"), "", NON_ADMIN_CLIENT)
        .await;
    r.expect(403, json!({"error": ["Client and node name must match"]}));
}

/// Item 24: listed in the group but not in the org.
#[tokio::test]
async fn config_readers_group_outside_user_is_403_notassoc() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let r = h
        .call("GET", &config_url(OUTSIDE_USER), "", OUTSIDE_USER)
        .await;
    r.expect(403, notassoc());
}

/// Item 25.
#[tokio::test]
async fn config_bogus_org_is_404() {
    let h = Harness::new().await;
    let r = h
        .call(
            "GET",
            &format!("/organizations/bogus-org/pushy/config/DONKEY?ccpk={CCPK}"),
            "",
            ADMIN_USER,
        )
        .await;
    r.expect(
        404,
        json!({"error": ["organization 'bogus-org' does not exist."]}),
    );
}

/// §1.4.1: `ccpk` absent → 400, wrong length → 401; both before the signature.
#[tokio::test]
async fn config_ccpk_missing_is_400_and_bad_is_401() {
    let h = Harness::new().await;
    let base = format!("/organizations/{ORG}/pushy/config/DONKEY");
    for who in [ADMIN_USER, INVALID_USER, BAD_CLIENT] {
        let r = h.call("GET", &base, "", who).await;
        r.expect(400, json!({"error": ["Missing ccpk"]}));
        let r = h.call("GET", &format!("{base}?version=2.0"), "", who).await;
        r.expect(400, json!({"error": ["Missing ccpk"]}));
        for bad in ["123", "12345678901234567890123456789012345678901", ""] {
            let r = h.call("GET", &format!("{base}?ccpk={bad}"), "", who).await;
            r.expect(401, json!({"error": ["Bad ccpk"]}));
        }
    }
    // The client's form: CGI-escaped, with a version parameter.
    let r = h
        .call(
            "GET",
            &format!("{base}?ccpk={CCPK}&version=2.0"),
            "",
            ADMIN_USER,
        )
        .await;
    check_config_doc(&r, "DONKEY");
}
