//! The crash test, as an operator runs it: `passerelle fault` drives the
//! three services as separate processes, kills them with SIGKILL at seeded
//! moments, and exits with 0 only when the committee's figures end equal to
//! an undisturbed run's and both audit chains verify.

use std::process::Command;

fn fault(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args([
            "fault",
            "--people",
            "80",
            "--kills",
            "5",
            "--seed",
            "7",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .output()
        .expect("passerelle runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("killed (SIGKILL) passerelle-").count(),
        4,
        "every planned kill struck: {stdout}"
    );
    assert_eq!(
        stdout.matches("stopped (SIGTERM) passerelle-").count(),
        1,
        "{stdout}"
    );
    assert_eq!(stdout.matches(", down 3 s").count(), 1, "{stdout}");
    for service in ["emploi", "social", "pilotage"] {
        assert!(
            stdout.contains(&format!("passerelle-{service} on day")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("figures are equal"), "{stdout}");
    assert!(stdout.contains("Both audit chains verify"), "{stdout}");
}

#[test]
fn services_killed_mid_year_lose_and_duplicate_nothing_on_sqlite() {
    fault(&[]);
}

#[test]
fn services_killed_mid_year_lose_and_duplicate_nothing_on_postgres() {
    match passerelle_storage::testing::postgres_base_url() {
        Some(url) => fault(&["--postgres", &url]),
        None => assert!(
            std::env::var_os("PASSERELLE_REQUIRE_POSTGRES").is_none(),
            "PASSERELLE_REQUIRE_POSTGRES is set but PASSERELLE_TEST_POSTGRES is not"
        ),
    }
}
