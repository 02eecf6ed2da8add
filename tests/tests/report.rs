//! The committee's report: written from the steering service's dashboard,
//! opened in a real headless browser (Debian's Chromium), a screenshot kept
//! in `target/test-artifacts/report/`. CI sets `PASSERELLE_REQUIRE_CHROMIUM`
//! so a missing browser fails instead of skipping.

use std::path::PathBuf;

use passerelle_cli::report;
use passerelle_tests::pb as v1;
use passerelle_tests::*;

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/report")
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

#[tokio::test]
async fn the_report_renders_in_a_real_browser() {
    let t = start_under(Backend::Sqlite, 1, false, "seine-et-marne-2020").await;
    // Within the agreement's term, so something is still due.
    t.clock.set("2021-02-01T09:00:00Z".parse().expect("date"));
    for label in ["r1", "r2", "r3"] {
        t.enter_case(label).await;
    }
    let answer = t
        .pilotage()
        .await
        .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
        .await
        .expect("dashboard")
        .into_inner();
    let dir = artifacts();
    let _ = std::fs::remove_dir_all(&dir);
    let page = report::write(&dir, &answer, &t.agreement).expect("report");
    let html = std::fs::read_to_string(&page).expect("html");
    assert!(html.contains("<svg") && html.contains("Comité de pilotage"));
    assert!(
        html.contains("quota annuel : 168"),
        "axe 3 quota of Seine-et-Marne"
    );
    assert!(html.contains("Prochaine échéance"));
    let exits_csv = std::fs::read_to_string(dir.join("indicateurs.csv")).expect("csv");
    assert!(
        exits_csv.starts_with("indicateur,cle,valeur\nentrees,,3\n"),
        "{exits_csv}"
    );
    t.shutdown().await;

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("PASSERELLE_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required here (apt-get install chromium)"
        );
        eprintln!("no Chromium on this machine: the browser check is skipped");
        return;
    };
    let shot = dir.join("rapport.png");
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page compresses to almost nothing; charts and tables do not.
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());

    // The browser's own reading of the page: the charts are there.
    let dom = std::process::Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.matches("<svg").count() >= 5,
        "charts in the rendered page"
    );
}
