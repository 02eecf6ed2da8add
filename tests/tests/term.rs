//! The agreement's term: once it has ended (with the renewals recorded), no
//! new referral or entry; the cases in progress run to their end.

use passerelle_domain::Institution;
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

/// Found by an outside tester: both shipped agreements were past their end
/// date by the system clock, and the services kept accepting referrals and
/// entries without a word.
#[tokio::test]
async fn after_the_agreements_end_no_new_referral_but_cases_in_progress_go_on() {
    on_every_backend(async |backend| {
        // Ille-et-Vilaine runs to 9 July 2025 without a renewal.
        let t = start(backend, 11).await;
        let in_progress = t.enter_case("before-the-end").await;
        let consent = t
            .social_consent(
                "after-consent",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        t.clock.set("2025-07-10T09:00:00Z".parse().expect("date"));
        let status = t
            .social_referral("after-referral", &consent, "Enora")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("2025-07-09"),
            "{}",
            status.message()
        );
        assert!(
            t.store(Institution::Social)
                .await
                .referral(&consent.case_id)
                .await
                .expect("read")
                .is_none()
        );
        // The case entered before the end goes on: it exits as usual.
        let exited = t
            .emploi()
            .await
            .exit_case(t.as_counsellor(v1::ExitCaseRequest {
                idempotency_key: "exit-after-the-end".into(),
                case_id: in_progress.clone(),
                exit: Some(v1::CaseExit {
                    reason: v1::ExitReason::Training as i32,
                    ..Default::default()
                }),
                qualification_gained: false,
            }))
            .await
            .expect("a case in progress still exits")
            .into_inner()
            .case
            .expect("case");
        assert_eq!(exited.state, v1::CaseState::Exited as i32);
        t.shutdown().await;
    })
    .await;
}
