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

    let Some(browser) = browser_or_skip() else {
        return;
    };
    let png = screenshot(&browser, &page, &dir.join("rapport.png"), (1280, 2600));
    screenshot(&browser, &page, &dir.join("rapport-phone.png"), (390, 2600));
    for width in [1280, 390] {
        assert!(
            !overflows(&browser, &page, width),
            "the report spills out at {width} px"
        );
    }
    // A blank page compresses to almost nothing; charts and tables do not.
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());

    // The browser's own reading of the page: the charts are there.
    let profile = tempfile::tempdir().expect("profile");
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

/// The DPO's documents as a person and a DPO read them: the joint access
/// report and the register, in a browser at a desk's and a phone's width.
#[tokio::test]
async fn the_dpos_documents_render_in_a_real_browser() {
    let t = start(Backend::Sqlite, 11).await;
    let case_id = t.enter_case("dpo-docs").await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/rgpd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let access = t
        .social()
        .await
        .get_subject_access_report(t.as_dpo(
            passerelle_domain::Institution::Social,
            v1::GetSubjectAccessReportRequest {
                case_id,
                format: v1::DocumentFormat::Html as i32,
                joint: true,
            },
        ))
        .await
        .expect("access report")
        .into_inner()
        .document
        .expect("document");
    let register = t
        .emploi()
        .await
        .get_processing_register(t.as_dpo(
            passerelle_domain::Institution::Emploi,
            v1::GetProcessingRegisterRequest {
                format: v1::DocumentFormat::Html as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("register")
        .into_inner()
        .document
        .expect("document");
    t.shutdown().await;
    let pages = [("acces", access.body), ("registre", register.body)];
    for (name, body) in &pages {
        std::fs::write(dir.join(format!("{name}.html")), body).expect("write");
    }
    let Some(browser) = browser_or_skip() else {
        return;
    };
    for (name, _) in &pages {
        let page = dir.join(format!("{name}.html"));
        for (label, size) in [("1280", (1280, 1600)), ("phone", (390, 1600))] {
            let png = screenshot(
                &browser,
                &page,
                &dir.join(format!("{name}-{label}.png")),
                size,
            );
            assert!(png.len() > 20_000, "{name} at {label}: {} bytes", png.len());
            assert!(
                !overflows(&browser, &page, size.0),
                "{name} spills out at {label}"
            );
        }
    }
}
