//! Identity comes only from a verified token; the allow list is deny by default.

use passerelle_boundary::identity::{Claims, unix_now};
use passerelle_boundary::{Decision, KeyPair, Signer};
use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::*;
use tonic::Code;

fn claims(aud: &str, exp: u64) -> Claims {
    Claims {
        iss: passerelle_cli::stack::DEV_ISSUER.into(),
        sub: "sw-rennes-1".into(),
        aud: aud.into(),
        exp,
        iat: unix_now() - 10,
        nbf: None,
        institution: "social".into(),
        role: "social_worker".into(),
        org: None,
        office: None,
    }
}

async fn get_case_with(t: &TestStack, token: Option<&str>) -> tonic::Status {
    let message = v1::GetCaseRequest {
        case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
    };
    let request = match token {
        Some(token) => with_token(message, token),
        None => tonic::Request::new(message),
    };
    t.social().await.get_case(request).await.unwrap_err()
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let t = start(Backend::Sqlite, 11).await;
    let dev = passerelle_cli::stack::dev_signer(&t.stack.options.data_dir).expect("dev signer");
    let stranger = KeyPair::generate().expect("keys");
    let forged =
        Signer::ed25519(passerelle_cli::stack::DEV_ISSUER, &stranger.private_pem).expect("signer");
    let other_issuer =
        Signer::ed25519("https://idp.elsewhere.example", &stranger.private_pem).expect("signer");
    // {"alg":"none"} with valid-looking claims and no signature.
    let unsigned = {
        let payload =
            serde_json::to_vec(&claims("passerelle-social", unix_now() + 600)).expect("json");
        format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64url(&payload)
        )
    };
    let cases = [
        ("missing", None),
        (
            "expired",
            Some(
                dev.sign_claims(&claims("passerelle-social", unix_now() - 3600))
                    .expect("token"),
            ),
        ),
        (
            "wrong audience",
            Some(
                dev.sign_claims(&claims("passerelle-emploi", unix_now() + 600))
                    .expect("token"),
            ),
        ),
        (
            "wrong issuer",
            Some(
                other_issuer
                    .sign_claims(&Claims {
                        iss: "https://idp.elsewhere.example".into(),
                        ..claims("passerelle-social", unix_now() + 600)
                    })
                    .expect("token"),
            ),
        ),
        (
            "another key",
            Some(
                forged
                    .sign_claims(&claims("passerelle-social", unix_now() + 600))
                    .expect("token"),
            ),
        ),
        ("alg none", Some(unsigned)),
        ("garbage", Some("not.a.token".to_owned())),
    ];
    for (what, token) in &cases {
        let status = get_case_with(&t, token.as_deref()).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let denied = t.audit_entries(Institution::Social).await;
    assert_eq!(
        denied
            .iter()
            .filter(|e| e.decision == Decision::Denied && e.agent.is_none())
            .count(),
        cases.len()
    );
    t.shutdown().await;
}

#[tokio::test]
async fn a_valid_token_of_an_institution_not_on_the_allow_list_is_denied() {
    let t = start(Backend::Sqlite, 11).await;
    // A counsellor (employment side) calling the social side's local RPC.
    let request = t.as_agent(
        Institution::Emploi,
        Role::Counsellor,
        "ft-counsellor-7",
        Institution::Social,
        v1::GetCaseRequest {
            case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
        },
    );
    let status = t.social().await.get_case(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The steering service's own identity cannot push a referral.
    let status = t
        .emploi()
        .await
        .receive_referral(t.as_service(
            Institution::Pilotage,
            Institution::Emploi,
            v1::ReceiveReferralRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A social worker may not call a service-to-service crossing either.
    let request = t.as_agent(
        Institution::Social,
        Role::SocialWorker,
        "sw-rennes-1",
        Institution::Emploi,
        v1::ReceiveReferralRequest::default(),
    );
    assert_eq!(
        t.emploi()
            .await
            .receive_referral(request)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // A service key may only speak for its own institution.
    let social_key =
        std::fs::read_to_string(t.stack.options.data_dir.join("keys/social.key.pem")).expect("key");
    let impostor = Signer::ed25519("passerelle-social-service", &social_key)
        .expect("signer")
        .sign(
            "service:social",
            Institution::Emploi,
            Role::Service,
            "passerelle-social",
            60,
        )
        .expect("token");
    let request = with_token(v1::ReceiveReferralRequest::default(), &impostor);
    assert_eq!(
        t.social()
            .await
            .receive_referral(request)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let entries = t.audit_entries(Institution::Emploi).await;
    assert!(
        entries.iter().any(|e| e.decision == Decision::Denied
            && e.agent_institution == Some(Institution::Pilotage))
    );
    t.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let t = start(Backend::Sqlite, 11).await;
    for institution in passerelle_cli::stack::INSTITUTIONS {
        let channel = t.channel(institution).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["", "liveness"] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health")
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        // What each process serves: the Département's also hosts the directory.
        let own: &[&str] = match institution {
            Institution::Emploi => &["passerelle.v1.EmploiService"],
            Institution::Social => &[
                "passerelle.v1.DirectoryService",
                "passerelle.v1.SocialService",
            ],
            Institution::Pilotage => &["passerelle.v1.PilotageService"],
        };
        let expected = |reflection: &str| {
            let mut all = vec!["grpc.health.v1.Health".to_owned(), reflection.to_owned()];
            all.extend(own.iter().map(|s| (*s).to_owned()));
            all.sort();
            all
        };
        let mut v1alpha = reflection_services_v1alpha(channel.clone()).await;
        v1alpha.sort();
        assert_eq!(
            v1alpha,
            expected("grpc.reflection.v1alpha.ServerReflection")
        );
        let mut v1 = reflection_services_v1(channel).await;
        v1.sort();
        assert_eq!(v1, expected("grpc.reflection.v1.ServerReflection"));
    }
    t.shutdown().await;
}

async fn reflection_services_v1(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1")
        .into_inner();
    match stream
        .message()
        .await
        .expect("answer")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn reflection_services_v1alpha(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match stream
        .message()
        .await
        .expect("answer")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Found by an outside tester: `passerelle token --role service` (the agents'
/// development issuer) was accepted on the crossings, and a forged case
/// became readable at the employment side. The agents' issuer now never
/// speaks for a service, in `passerelle up`'s configuration as in
/// `deploy/config`.
#[tokio::test]
async fn the_agents_issuer_cannot_speak_for_a_service() {
    for backend in backends() {
        let t = start(backend, 11).await;
        let dev = passerelle_cli::stack::dev_signer(&t.stack.options.data_dir).expect("dev signer");
        let token = dev
            .sign(
                "service:social",
                Institution::Social,
                Role::Service,
                "passerelle-emploi",
                300,
            )
            .expect("token");
        let consent = with_token(
            v1::ShareConsentRequest {
                idempotency_key: "forged-1".into(),
                case_id: "forged-case".into(),
                consent: None,
            },
            &token,
        );
        let status = t.emploi().await.share_consent(consent).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend:?}: {status:?}"
        );
        assert!(status.message().contains("agents"), "{}", status.message());
        let referral = with_token(
            v1::ReceiveReferralRequest {
                idempotency_key: "forged-2".into(),
                case_id: "forged-case".into(),
                referral: None,
            },
            &token,
        );
        let status = t
            .emploi()
            .await
            .receive_referral(referral)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        // Nothing of the forged case exists at the employment side.
        assert!(
            t.store(Institution::Emploi)
                .await
                .case("forged-case")
                .await
                .expect("read")
                .is_none()
        );
        t.shutdown().await;
    }
    // The shipped sample configurations say the same.
    for institution in [
        Institution::Emploi,
        Institution::Social,
        Institution::Pilotage,
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../deploy/config/{}.toml", institution.code()));
        let config = passerelle_runtime::ServiceConfig::load(institution, Some(&path))
            .expect("sample configuration");
        for issuer in &config.trusted_issuers {
            let expected = if issuer.issuer.ends_with("-service") {
                passerelle_boundary::Principals::Service
            } else {
                passerelle_boundary::Principals::Agents
            };
            assert_eq!(
                issuer.principals, expected,
                "{institution}: {}",
                issuer.issuer
            );
        }
    }
}

/// Found by an outside tester: `nbf` in the future was ignored, `iat` ten
/// years ahead and a token valid for 100 years were accepted, and lowercase
/// `bearer` was refused.
#[tokio::test]
async fn registered_claims_and_the_bearer_scheme_are_checked_at_the_edge() {
    for backend in backends() {
        let t = start(backend, 11).await;
        let dev = passerelle_cli::stack::dev_signer(&t.stack.options.data_dir).expect("dev signer");
        let now = unix_now();
        let refused = [
            (
                "nbf in the future",
                Claims {
                    nbf: Some(now + 3600),
                    ..claims("passerelle-social", now + 600)
                },
                "claim nbf",
            ),
            (
                "iat ten years ahead",
                Claims {
                    iat: now + 10 * 365 * 86_400,
                    ..claims("passerelle-social", now + 10 * 365 * 86_400 + 600)
                },
                "claim iat",
            ),
            (
                "valid for a century",
                claims("passerelle-social", now + 100 * 365 * 86_400),
                "longer than its issuer allows",
            ),
        ];
        for (what, claims, says) in refused {
            let token = dev.sign_claims(&claims).expect("token");
            let status = get_case_with(&t, Some(&token)).await;
            assert_eq!(status.code(), Code::Unauthenticated, "{what}");
            assert!(
                status.message().contains(says),
                "{what}: {}",
                status.message()
            );
            // A sentence, never a library's debug output.
            assert!(!status.message().contains("ErrorKind"), "{what}");
        }
        // The scheme is case-insensitive: a valid token under `bearer` reaches
        // the service (NOT_FOUND for a case it does not know).
        let token = dev
            .sign_claims(&claims("passerelle-social", now + 600))
            .expect("token");
        let mut request = tonic::Request::new(v1::GetCaseRequest {
            case_id: "0193b2c4-0000-7000-8000-000000000001".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("bearer {token}").parse().expect("header"),
        );
        let status = t.social().await.get_case(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        t.shutdown().await;
    }
}
