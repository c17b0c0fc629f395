mod common;
use common::*;

#[tokio::test]
async fn harness_works() {
    let h = Harness::new().await;
    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states/some_node"),
            "",
            ADMIN_USER,
        )
        .await;
    r.expect(200, serde_json::json!({"availability":"unavailable","node_name":"some_node","status":"offline"}));
}
