//! The attack suite: each test is named after what it tries, over real gRPC
//! against the three services, on both databases.
//!
//! The catalogue, from RFC 8725 (JWT Best Current Practices) and the OWASP
//! API Security Top 10 (2023), with where each item is covered:
//!
//! | attack | covered by |
//! |---|---|
//! | RFC 8725 §2.1 `alg: none` | `identity::bad_tokens_are_unauthenticated` |
//! | §2.1 algorithm confusion: HS256 keyed with the issuer's public key | [`an_hmac_token_keyed_with_the_issuers_public_key_is_refused`] |
//! | §2.2 a key chosen by the token (`jku`, `kid`, `x5u` headers) | [`a_token_naming_its_own_key_is_refused`] |
//! | §2.7 / §3.9 substitution: a token for another service (`aud`) | `identity::bad_tokens_are_unauthenticated` ("wrong audience"), [`a_token_for_one_service_is_refused_by_the_other`] |
//! | §3.8 issuer: unknown issuer, another key under a known issuer | `identity::bad_tokens_are_unauthenticated` |
//! | §3.10 an issuer speaking for principals it does not vouch for | `identity::the_agents_issuer_cannot_speak_for_a_service`, `identity::a_valid_token_of_an_institution_not_on_the_allow_list_is_denied` (a service key for another institution) |
//! | registered claims: `exp`, `nbf`, `iat` in the future, lifetime | `identity::bad_tokens_are_unauthenticated`, `identity::registered_claims_and_the_bearer_scheme_are_checked_at_the_edge` |
//! | API1 object-level authorisation (one agent's case reached by another) | `need_to_know::an_agent_outside_the_case_neither_changes_nor_reads_it`, `need_to_know::local_notes_are_read_by_the_pair_the_coordinators_and_their_author_only` |
//! | API2 broken authentication | the rows above; `identity::health_and_reflection_need_no_token` (only those) |
//! | API3 object property level authorisation (mass assignment) | [`fields_the_service_sets_cannot_be_set_by_the_client`] |
//! | API4 unrestricted resource consumption | `edge::oversized_headers_and_messages_are_refused_and_the_service_goes_on`, `edge::a_flood_of_refused_calls_coalesces_into_one_audit_record_per_window` |
//! | API5 function-level authorisation (a role calling another's RPC) | `identity::a_valid_token_of_an_institution_not_on_the_allow_list_is_denied`, [`an_agent_cannot_call_a_service_to_service_crossing_nor_a_coordinators_rpc`] |
//! | API8 security misconfiguration: a development issuer minting services | `identity::the_agents_issuer_cannot_speak_for_a_service` |
//! | API9 improper inventory: an RPC without policy, reflection of unserved services | `contract::an_rpc_without_policy_fails_the_contract`, `identity::health_and_reflection_need_no_token` |
//! | API10 unsafe consumption: a partner's message about another case | [`a_partner_message_about_another_case_than_it_names_is_refused`] |
//! | input: dates, instants, undecodable bodies | `input::dates_and_instants_out_of_their_fields_range_are_refused_by_name`, `input::a_request_that_does_not_decode_is_invalid_argument_in_plain_words` |
//! | idempotency keys replayed by another agent | `outbox::another_agents_identical_request_under_the_same_key_is_its_own` |

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use passerelle_boundary::identity::{Claims, unix_now};
use passerelle_boundary::{KeyPair, Signer};
use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

fn agent_claims(aud: &str) -> Claims {
    let now = unix_now();
    Claims {
        iss: passerelle_cli::stack::DEV_ISSUER.into(),
        sub: "sw-rennes-1".into(),
        aud: aud.into(),
        exp: now + 600,
        iat: now - 5,
        nbf: None,
        institution: "social".into(),
        role: "social_worker".into(),
        org: None,
        office: None,
    }
}

async fn get_case_with(t: &TestStack, token: &str) -> tonic::Status {
    let request = with_token(
        v1::GetCaseRequest {
            case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
        },
        token,
    );
    t.social().await.get_case(request).await.unwrap_err()
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_issuers_public_key_is_refused() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let public = std::fs::read(t.stack.options.data_dir.join("keys/dev-issuer.pub.pem"))
            .expect("public key");
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &agent_claims("passerelle-social"),
            &EncodingKey::from_secret(&public),
        )
        .expect("token");
        let status = get_case_with(&t, &token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_naming_its_own_key_is_refused() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let attacker = KeyPair::generate().expect("keys");
        let mut header = Header::new(Algorithm::EdDSA);
        header.jku = Some("https://attacker.example/jwks.json".into());
        header.kid = Some("attacker-key".into());
        header.x5u = Some("https://attacker.example/cert.pem".into());
        let token = jsonwebtoken::encode(
            &header,
            &agent_claims("passerelle-social"),
            &EncodingKey::from_ed_pem(attacker.private_pem.as_bytes()).expect("key"),
        )
        .expect("token");
        let status = get_case_with(&t, &token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_for_one_service_is_refused_by_the_other() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // A genuine token for the employment service, replayed at the social one.
        let dev = passerelle_cli::stack::dev_signer(&t.stack.options.data_dir).expect("signer");
        let for_emploi = dev
            .sign_claims(&agent_claims("passerelle-emploi"))
            .expect("token");
        let status = get_case_with(&t, &for_emploi).await;
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("aud"), "{}", status.message());
        // And a service's own token for its partner, replayed at the steering service.
        let social_key =
            std::fs::read_to_string(t.stack.options.data_dir.join("keys/social.key.pem"))
                .expect("key");
        let to_emploi = Signer::ed25519("passerelle-social-service", &social_key)
            .expect("signer")
            .sign(
                "service:social",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                60,
            )
            .expect("token");
        let mut pilotage = v1::pilotage_service_client::PilotageServiceClient::new(
            t.channel(Institution::Pilotage).await,
        );
        let status = pilotage
            .get_dashboard(with_token(v1::GetDashboardRequest {}, &to_emploi))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn fields_the_service_sets_cannot_be_set_by_the_client() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let mut forged = consent(
            &t.clock,
            &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            &[v1::Institution::Emploi],
        );
        forged.consent_id = "chosen-by-the-client".into();
        forged.state = v1::ConsentState::Withdrawn as i32;
        forged.holder = v1::Institution::Emploi as i32;
        let recorded = t
            .social()
            .await
            .record_consent(t.as_social_worker(v1::RecordConsentRequest {
                idempotency_key: "mass-1".into(),
                consent: Some(forged),
            }))
            .await
            .expect("recorded")
            .into_inner()
            .consent
            .expect("consent");
        assert_ne!(recorded.consent_id, "chosen-by-the-client");
        assert_eq!(recorded.state, v1::ConsentState::Given as i32);
        assert_eq!(recorded.holder, v1::Institution::Social as i32);

        let mut referral = t.referral(&recorded.case_id, &recorded.consent_id, "Soizic");
        referral.referred_by = "someone-else".into();
        referral.referring_network = v1::Network::Emploi as i32;
        referral.association_id = "asll-77".into();
        let sent = t
            .social()
            .await
            .create_referral(t.as_social_worker(v1::CreateReferralRequest {
                idempotency_key: "mass-2".into(),
                referral: Some(referral),
                local_note: String::new(),
            }))
            .await
            .expect("referred")
            .into_inner()
            .referral
            .expect("referral");
        assert_eq!(sent.referred_by, "sw-rennes-1");
        assert_eq!(sent.referring_network, v1::Network::Social as i32);
        assert_eq!(sent.association_id, "");
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_agent_cannot_call_a_service_to_service_crossing_nor_a_coordinators_rpc() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        // A counsellor pushing a "partner's" consent at the social side.
        let status = t
            .social()
            .await
            .share_consent(t.as_agent(
                Institution::Emploi,
                Role::Counsellor,
                "ft-counsellor-7",
                Institution::Social,
                v1::ShareConsentRequest::default(),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        // A counsellor granting habilitations (a coordinator's RPC).
        let status = t
            .emploi()
            .await
            .grant_habilitation(t.as_counsellor(v1::GrantHabilitationRequest {
                idempotency_key: "grant-1".into(),
                agent: "sw-rennes-1".into(),
                scope: v1::HabilitationScope::JobseekerFile as i32,
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        t.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_partner_message_about_another_case_than_it_names_is_refused() {
    on_every_backend(async |backend| {
        let t = start(backend, 11).await;
        let consent = t
            .social_consent(
                "c-confused",
                &[v1::Purpose::Referral, v1::Purpose::GlobalSupport],
            )
            .await;
        let emploi = t.store(Institution::Emploi).await;
        eventually("the consent shared", async || {
            !emploi
                .consents_for_case(&consent.case_id)
                .await
                .expect("read")
                .is_empty()
        })
        .await;
        // The envelope names the consented case; the referral inside is another's.
        let mut request = t.direct_referral(&consent.case_id, &consent.consent_id);
        request
            .get_mut()
            .referral
            .as_mut()
            .expect("referral")
            .case_id = "0193b2c4-0000-7000-8000-00000000dead".into();
        let status = t
            .emploi()
            .await
            .receive_referral(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("referral.case_id"),
            "{}",
            status.message()
        );
        assert!(
            t.store(Institution::Emploi)
                .await
                .case("0193b2c4-0000-7000-8000-00000000dead")
                .await
                .expect("read")
                .is_none()
        );
        // The message did cross, refused or not: its record was durable
        // before the answer left (read at once, from another connection).
        // So are a fresh crossing's, written with its change, and a
        // replay's, written alone.
        let records = async || {
            t.audit_entries(Institution::Emploi)
                .await
                .into_iter()
                .filter(|e| {
                    e.case_id.as_deref() == Some(consent.case_id.as_str())
                        && e.method.ends_with("/ReceiveReferral")
                        && e.decision == passerelle_boundary::Decision::Allowed
                })
                .count()
        };
        assert_eq!(records().await, 1, "the refused message's record");
        for expected in [2, 3] {
            let request = t.direct_referral(&consent.case_id, &consent.consent_id);
            t.emploi()
                .await
                .receive_referral(request)
                .await
                .expect("the message, then its replay");
            assert_eq!(records().await, expected);
        }
        assert!(
            t.store(Institution::Emploi)
                .await
                .case(&consent.case_id)
                .await
                .expect("read")
                .is_some()
        );
        t.shutdown().await;
    })
    .await;
}
