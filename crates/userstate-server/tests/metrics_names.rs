//! `/metrics` as a Prometheus scrape sees it on a real server (issue 27): the process metrics,
//! the build, commands by type and outcome whatever the protocol, and users by state from the
//! read model.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::UnlockUserRequest;

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

fn commands(metrics: &str, command: &str, outcome: &str) -> f64 {
    let series = format!("userstate_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}}");
    sample(metrics, &series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

fn users(metrics: &str, state: &str) -> f64 {
    let series = format!("userstate_users{{state=\"{state}\"}}");
    sample(metrics, &series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

#[tokio::test]
async fn metrics_name_the_process_the_build_the_commands_and_the_users() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let before = s.get("/metrics", ADMIN).await.text;
    for state in ["initial", "active", "inactive", "locked", "deleted"] {
        assert_eq!(users(&before, state), 0.0, "{state}");
    }

    // Over HTTP: three adds, a lock, a refused lock, a deactivation, a removal; a command on a
    // user that does not exist; a command refused before it ran (bad token) is no command.
    for id in ["u1", "u2", "u3"] {
        assert_eq!(s.add(ADMIN, id, "acme").await.status, 201);
    }
    assert_eq!(s.post("/v2/users/u1/lock", ADMIN).await.status, 200);
    assert_eq!(s.post("/v2/users/u1/lock", ADMIN).await.status, 400);
    assert_eq!(s.post("/v2/users/u2/deactivate", ADMIN).await.status, 200);
    assert_eq!(s.delete("/v2/users/u3", ADMIN).await.status, 200);
    assert_eq!(s.post("/v2/users/nobody/unlock", ADMIN).await.status, 404);
    assert_eq!(s.post("/v2/users/u1/unlock", "bad-token").await.status, 401);
    assert_eq!(s.post("/v2/users/u2/lock", GLOBEX).await.status, 403);
    // Over gRPC: an unlock that succeeds, then one that is refused.
    let mut c = v2(s.addr).await;
    let unlock = || {
        as_(
            ADMIN,
            UnlockUserRequest {
                user_id: "u1".into(),
            },
        )
    };
    c.unlock_user(unlock()).await.unwrap();
    assert!(c.unlock_user(unlock()).await.is_err());
    assert_eq!(s.post("/v2/users/u1/lock", ADMIN).await.status, 200);

    let after = s.get("/metrics", ADMIN).await.text;
    let delta = |command: &str, outcome: &str| {
        commands(&after, command, outcome) - commands(&before, command, outcome)
    };
    assert_eq!(delta("add", "ok"), 3.0);
    assert_eq!(delta("lock", "ok"), 2.0);
    assert_eq!(delta("lock", "failed_precondition"), 1.0);
    assert_eq!(delta("lock", "permission_denied"), 1.0);
    assert_eq!(delta("deactivate", "ok"), 1.0);
    assert_eq!(delta("remove", "ok"), 1.0);
    assert_eq!(delta("unlock", "ok"), 1.0);
    assert_eq!(delta("unlock", "failed_precondition"), 1.0);
    assert_eq!(delta("unlock", "not_found"), 1.0);
    assert_eq!(
        delta("unlock", "unauthenticated"),
        0.0,
        "refused before it ran"
    );
    assert_eq!(delta("reactivate", "ok"), 0.0);

    // Users by state, from the read model.
    assert_eq!(users(&after, "locked"), 1.0);
    assert_eq!(users(&after, "inactive"), 1.0);
    assert_eq!(users(&after, "deleted"), 1.0);
    assert_eq!(users(&after, "active"), 0.0);
    assert_eq!(users(&after, "initial"), 0.0);

    // The build: this crate's version (the binary names its git commit; tests/serve.rs).
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &after,
            &format!("userstate_build_info{{commit=\"unknown\",version=\"{version}\"}}")
        ),
        Some(1.0),
        "{after}"
    );

    // The process (Linux: read from /proc).
    if cfg!(target_os = "linux") {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            let value = sample(&after, name).unwrap_or_else(|| panic!("no {name} in\n{after}"));
            // CPU time is counted in whole seconds by the collector: 0 in a short test.
            let least = if name == "process_cpu_seconds_total" {
                0.0
            } else {
                1.0
            };
            assert!(value >= least, "{name} = {value}");
        }
        let start = sample(&after, "process_start_time_seconds").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(start <= now && start > now - 3600.0, "{start} vs {now}");
    }
    s.stop().await;
}
