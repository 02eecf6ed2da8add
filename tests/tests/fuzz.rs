//! Property-based fuzzing on the stable toolchain: what a hostile or careless
//! client (or a partner, or an operator's file) can hand the system never
//! panics, and what comes out still keeps the boundary's promises.
//!
//! `cargo test` runs each target for a bounded number of cases. To run them
//! for ten minutes each:
//!
//! ```sh
//! PASSERELLE_FUZZ_SECONDS=600 cargo test --release -p passerelle-tests --test fuzz -- --test-threads 1
//! ```
//!
//! Inputs are mutations of valid ones (bytes flipped, inserted, cut) as well
//! as arbitrary ones, so the decoders and checks past the first byte are
//! reached.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use passerelle_boundary::Minimiser;
use passerelle_boundary::identity::unix_now;
use passerelle_contract::convert;
use passerelle_domain::agreement::{Agreement, SHIPPED};
use passerelle_domain::directory::{Service, Structure, parse_records};
use passerelle_domain::{DataCategory, Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message;

/// Cases per target under `cargo test`.
const BOUNDED_CASES: u32 = 256;

/// Runs `check` on values of `strategy`: a bounded number of cases, or for
/// `PASSERELLE_FUZZ_SECONDS` with fresh seeds batch after batch.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("PASSERELLE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    let mut batch = 0u64;
    loop {
        let config = Config {
            cases: BOUNDED_CASES,
            failure_persistence: None,
            ..Config::default()
        };
        let seed: [u8; 32] = std::array::from_fn(|i| (batch >> ((i % 8) * 8)) as u8 ^ i as u8);
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(failure) = runner.run(&strategy, &check) {
            panic!("{name}: {failure}");
        }
        batch += 1;
        match budget {
            Some(budget) if started.elapsed() < budget => continue,
            _ => break,
        }
    }
}

/// Mutations of `valid`: bytes replaced, inserted and removed at random places.
fn mutations(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    prop::collection::vec((0..len + 1, any::<u8>(), 0u8..3), 0..12).prop_map(move |edits| {
        let mut bytes = valid.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len());
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.push(byte),
            }
        }
        bytes
    })
}

/// Valid bytes mutated, or arbitrary ones.
fn inputs(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => mutations(valid),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn sample_referral() -> v1::Referral {
    let mut r = referral(
        "0193b2c4-0000-7000-8000-000000000001",
        "0193b2c4-0000-7000-8000-000000000002",
        "Anaïs",
    );
    r.referring_network = v1::Network::Social as i32;
    r.referred_by = "sw-1".into();
    r
}

fn sample_consent() -> v1::ConsentRecord {
    let clock = passerelle_domain::ManualClock::new(t0());
    let mut c = consent(&clock, &[v1::Purpose::Referral], &[v1::Institution::Emploi]);
    c.case_id = "0193b2c4-0000-7000-8000-000000000001".into();
    c
}

#[test]
fn request_conversions_never_panic() {
    fuzz(
        "referral",
        inputs(sample_referral().encode_to_vec()),
        |bytes| {
            if let Ok(m) = v1::Referral::decode(bytes.as_slice()) {
                let _ = convert::referral_draft(&m);
                let _ = passerelle_domain::Referral::try_from(&m);
            }
            Ok(())
        },
    );
    fuzz(
        "consent",
        inputs(sample_consent().encode_to_vec()),
        |bytes| {
            if let Ok(m) = v1::ConsentRecord::decode(bytes.as_slice()) {
                if let Ok(new) = convert::new_consent(&m) {
                    // What converts is within the fields' ranges.
                    prop_assert!(new.valid_until > new.valid_from);
                    prop_assert!(!new.categories.contains(&DataCategory::LocalOnly));
                }
                let _ = passerelle_domain::Consent::try_from(&m);
            }
            Ok(())
        },
    );
    let case_event = v1::CaseEvent {
        case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
        ..Default::default()
    };
    fuzz("case event", inputs(case_event.encode_to_vec()), |bytes| {
        if let Ok(m) = v1::CaseEvent::decode(bytes.as_slice()) {
            let _ = passerelle_domain::CaseEvent::try_from(&m);
        }
        Ok(())
    });
    let half = v1::DiagnosisHalf {
        case_id: "k".into(),
        verdict: v1::Verdict::Agree as i32,
        ..Default::default()
    };
    fuzz("diagnosis", inputs(half.encode_to_vec()), |bytes| {
        if let Ok(m) = v1::DiagnosisHalf::decode(bytes.as_slice()) {
            let _ = convert::diagnosis_draft(&m);
            let _ = passerelle_domain::DiagnosisHalf::try_from(&m);
        }
        Ok(())
    });
    fuzz(
        "plan",
        inputs(v1::Plan::default().encode_to_vec()),
        |bytes| {
            if let Ok(m) = v1::Plan::decode(bytes.as_slice()) {
                let _ = convert::plan_themes(&m);
            }
            Ok(())
        },
    );
}

#[test]
fn the_minimiser_never_lets_a_category_through_that_is_not_allowed() {
    let minimiser = Minimiser::from_contract();
    let categories = prop::collection::btree_set(
        prop::sample::select(vec![
            DataCategory::Public,
            DataCategory::Identity,
            DataCategory::Contact,
            DataCategory::Case,
            DataCategory::Barrier,
            DataCategory::Employment,
            DataCategory::SocialPlan,
            DataCategory::LocalOnly,
            DataCategory::Aggregate,
        ]),
        0..9,
    );
    let request = v1::CreateReferralRequest {
        idempotency_key: "k".into(),
        referral: Some(sample_referral()),
        local_note: "note".into(),
    };
    fuzz(
        "minimiser",
        (inputs(request.encode_to_vec()), categories),
        |(bytes, allowed): (Vec<u8>, BTreeSet<DataCategory>)| {
            if let Ok(m) = v1::CreateReferralRequest::decode(bytes.as_slice()) {
                let out = minimiser.minimise(m, &allowed).expect("a contract message");
                prop_assert!(out.categories.is_subset(&allowed), "{:?}", out.categories);
                if !allowed.contains(&DataCategory::LocalOnly) {
                    prop_assert!(out.message.local_note.is_empty());
                }
            }
            Ok(())
        },
    );
}

#[test]
fn the_configuration_and_agreement_loaders_never_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let sample = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/social.toml"),
    )
    .expect("sample configuration");
    fuzz("configuration", inputs(sample), |bytes| {
        let path = dir.path().join("passerelle.toml");
        std::fs::write(&path, &bytes).expect("write");
        let _ = passerelle_runtime::ServiceConfig::load(Institution::Social, Some(&path));
        Ok(())
    });
    for (id, text) in SHIPPED {
        fuzz(id, inputs(text.as_bytes().to_vec()), |bytes| {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = Agreement::from_toml(text);
            }
            Ok(())
        });
    }
}

#[test]
fn the_data_inclusion_import_never_panics() {
    let structures = include_str!("../fixtures/data-inclusion/structures.json");
    let services = include_str!("../fixtures/data-inclusion/services.json");
    fuzz(
        "structures",
        inputs(structures.as_bytes().to_vec()),
        |bytes| {
            if let Ok(json) = std::str::from_utf8(&bytes) {
                let _ = parse_records::<Structure>("structures", json);
            }
            Ok(())
        },
    );
    fuzz("services", inputs(services.as_bytes().to_vec()), |bytes| {
        if let Ok(json) = std::str::from_utf8(&bytes) {
            let _ = parse_records::<Service>("services", json);
        }
        Ok(())
    });
}

#[test]
fn the_token_parser_never_panics_and_never_accepts_a_changed_token() {
    let keys = passerelle_boundary::KeyPair::generate().expect("keys");
    let signer = passerelle_boundary::Signer::ed25519("https://idp.test", &keys.private_pem)
        .expect("signer");
    let verifier = passerelle_boundary::Verifier::new(
        "passerelle-social",
        [passerelle_boundary::TrustedIssuer::ed25519(
            "https://idp.test",
            &keys.public_pem,
            [Institution::Social].into(),
            passerelle_boundary::Principals::Agents,
        )
        .expect("issuer")],
        0,
    );
    let token = signer
        .sign(
            "sw-1",
            Institution::Social,
            Role::SocialWorker,
            "passerelle-social",
            3600,
        )
        .expect("token");
    let original = verifier.verify(&token).expect("valid");
    assert!(unix_now() > 0);
    fuzz("token", inputs(token.clone().into_bytes()), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(caller) = verifier.verify(&text) {
            // Only an encoding of the same signed claims can pass.
            prop_assert_eq!(caller, original.clone());
        }
        Ok(())
    });
}
