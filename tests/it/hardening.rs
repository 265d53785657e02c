//! Issue 13's defects, each pinned by the test that first failed on it.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn an_app_whose_config_does_not_mention_the_demo_catalog_starts_with_an_empty_one() {
    let app = spawn_app_tweaked(Tweaks {
        seed_demo_catalog: None,
        ..Tweaks::default()
    })
    .await;
    let plans = app.get("/v1/plans", SK_TEST).await;
    assert_eq!(ok(&plans, 200)["data"], json!([]));
    let packs = app.get("/v1/credit-packs", SK_TEST).await;
    assert_eq!(ok(&packs, 200)["data"], json!([]));
}
