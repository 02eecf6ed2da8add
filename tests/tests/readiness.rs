//! Readiness follows the database: NOT_SERVING until it can be reached,
//! SERVING once it can; contract RPCs answer UNAVAILABLE meanwhile.

use std::sync::Arc;
use std::time::Duration;

use passerelle_cli::stack::{Databases, StackOptions, ensure_key, service_config};
use passerelle_domain::{Institution, SystemClock};
use passerelle_runtime::config::DatabaseUrl;
use passerelle_tests::pb as v1;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn status(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

#[tokio::test]
async fn readiness_waits_for_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["dev-issuer", "emploi", "social", "pilotage"] {
        ensure_key(dir.path(), name).expect("keys");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let options = StackOptions {
        data_dir: dir.path().into(),
        databases: Databases::Sqlite,
        addresses: None,
        quick_retries: true,
        min_cell_size: 11,
        tls: false,
        agreement: "ille-et-vilaine-2023".into(),
        agreement_file: None,
        agreement_renewals: 0,
        limits: Default::default(),
        processes: None,
    };
    let mut config = service_config(&options, Institution::Emploi, &[addr; 3]);
    // The database lives in a directory that does not exist yet: it cannot be opened.
    let db_dir = dir.path().join("not-yet-mounted");
    config.database_url = DatabaseUrl(format!(
        "sqlite://{}",
        db_dir.join("emploi.sqlite").display()
    ));
    let handle = passerelle_emploi::start(config, listener, Arc::new(SystemClock))
        .await
        .expect("starts");

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel.clone());
    assert_eq!(
        status(&mut health, "liveness").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        status(&mut health, "passerelle.v1.EmploiService").await,
        ServingStatus::NotServing as i32
    );

    // Contract RPCs are refused as unavailable, and nothing is pretended.
    let token = passerelle_cli::stack::dev_signer(dir.path())
        .expect("signer")
        .sign(
            "c",
            Institution::Emploi,
            passerelle_domain::Role::Counsellor,
            "passerelle-emploi",
            60,
        )
        .expect("token");
    let request = passerelle_tests::with_token(
        v1::GetCaseRequest {
            case_id: "x".into(),
        },
        &token,
    );
    let status_code = v1::emploi_service_client::EmploiServiceClient::new(channel)
        .get_case(request)
        .await
        .unwrap_err()
        .code();
    assert_eq!(status_code, tonic::Code::Unavailable);

    std::fs::create_dir_all(&db_dir).expect("mount");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&mut health, "").await != ServingStatus::Serving as i32 {
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status(&mut health, "passerelle.v1.EmploiService").await,
        ServingStatus::Serving as i32
    );
    handle.shutdown().await.expect("clean shutdown");
}
