//! Chaos resume, small enough for every CI run (the full-size run is `homeroom-chaos`, see
//! docs/reliability.md): clients drop at random while chat flows, resume, and end with identical logs.

use homeroom_tests::chaos::{run, ChaosConfig};
use homeroom_tests::edge::Edge;
use std::time::Duration;

#[tokio::test]
async fn clients_dropping_at_random_end_with_identical_gap_free_logs() {
    // Coalescing from two connections on, so batched frames are under test too.
    let vars = [
        ("RATE_BURST", "100000"),
        ("RATE_PER_SEC", "100000"),
        ("LOG_LIMIT", "50000"),
        ("COALESCE_MIN_CONNECTIONS", "2"),
        // Clients here reconnect every 0.7 s on purpose; the churn limit is not what this test is about.
        ("JOIN_BURST", "100000"),
    ];
    let edge = Edge::start_with(&vars).await.expect("edge starts");
    let report = run(ChaosConfig {
        base: edge.ws(),
        room: "chaos".into(),
        clients: 20,
        messages: 600,
        rate: 100,
        mean_drop_ms: 700,
        deadline: Duration::from_secs(120),
    })
    .await
    .expect("the scenario runs");
    eprintln!("chaos: {report:?}");
    assert!(report.drops >= 20, "clients really dropped: {report:?}");
    assert!(report.batches > 0, "the room coalesced frames under load: {report:?}");
    assert_eq!(report.resumes, report.drops, "every drop resumed: {report:?}");
    assert_eq!((report.lost, report.duplicated, report.gaps, report.divergent_clients), (0, 0, 0, 0), "{report:?}");
}
