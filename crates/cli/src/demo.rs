//! `passerelle demo`: a few hundred synthetic people through the whole
//! accompaniment, over real gRPC between the three services, on a simulated
//! clock so months pass in seconds. Both networks refer; some people refuse
//! or withdraw their consent; one of the pair sometimes disagrees; exits of
//! every type happen. The steering committee's figures close the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use passerelle_contract::v1;
use passerelle_contract::v1::emploi_service_client::EmploiServiceClient;
use passerelle_contract::v1::pilotage_service_client::PilotageServiceClient;
use passerelle_contract::v1::social_service_client::SocialServiceClient;
use passerelle_domain::agreement::{Agreement, ChecksKind, EntryEvidence};
use passerelle_domain::orientation::{Parcours, ParcoursRules};
use passerelle_domain::{Clock, Institution, Network, Role};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::retry::Retrying;
use crate::stack::Stack;
use crate::timeline::{Place, SimulatedYear, Timeline};
use futures_util::StreamExt;

/// A small deterministic generator (SplitMix64): the same seed, the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next_u64() % ((high - low + 1) as u64)) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Maëlle",
    "Yannick",
    "Soizic",
    "Erwan",
    "Nolwenn",
    "Tanguy",
    "Gwenola",
    "Loïc",
    "Aziz",
    "Fatoumata",
    "Inès",
    "Kévin",
    "Sandrine",
    "Mathéo",
    "Chloé",
    "Rachid",
];
const LAST_NAMES: &[&str] = &[
    "Le Gall", "Le Goff", "Martin", "Bernard", "Diallo", "Moreau", "Guillou", "Rivière", "Nguyen",
    "Caradec",
];
const BARRIERS: &[v1::BarrierCategory] = &[
    v1::BarrierCategory::Mobility,
    v1::BarrierCategory::Housing,
    v1::BarrierCategory::Health,
    v1::BarrierCategory::FamilyChildcare,
    v1::BarrierCategory::Financial,
    v1::BarrierCategory::AdministrativeLegal,
    v1::BarrierCategory::Digital,
    v1::BarrierCategory::LiteracyNumeracy,
];
const EXITS: &[v1::ExitReason] = &[
    v1::ExitReason::Job,
    v1::ExitReason::Job,
    v1::ExitReason::Job,
    v1::ExitReason::Training,
    v1::ExitReason::Training,
    v1::ExitReason::JobSearchAutonomy,
    v1::ExitReason::SocialProblemSolved,
    v1::ExitReason::EndedByPerson,
    v1::ExitReason::MissedAppointments,
    v1::ExitReason::Deregistered,
];

/// What the scenario did, to set beside what the system reports.
#[derive(Debug, Default)]
pub struct Tally {
    pub people: u64,
    pub referred_by: BTreeMap<&'static str, u64>,
    pub consent_refused: u64,
    pub consent_withdrawn: u64,
    pub not_entered: u64,
    pub preconditions_not_met: u64,
    pub referrals_refused: u64,
    pub referrals_left_pending: u64,
    pub exclusive_support: u64,
    pub entered: u64,
    pub exits: BTreeMap<String, u64>,
    /// Orientations on the offices where the agreement's parcours apply, by parcours.
    pub oriented: BTreeMap<&'static str, u64>,
    pub parcours_changes: u64,
    /// Signed in while every portfolio was full: refused (Ille-et-Vilaine).
    pub portfolio_full: u64,
    /// Signed in while every portfolio was full: on the waiting list (Seine-et-Marne).
    pub queued: u64,
    pub rpc_calls: u64,
    /// Calls sent again because no service answered or it was busy.
    pub retried_calls: u64,
    /// Dependent calls answered "not yet" (the partner had not heard of the
    /// change they follow) and sent again; not in `rpc_calls`.
    pub not_yet_calls: u64,
}

impl Tally {
    /// Adds another part of the run's tally (one person's) to this one.
    pub fn add(&mut self, other: Tally) {
        self.people += other.people;
        for (k, n) in other.referred_by {
            *self.referred_by.entry(k).or_default() += n;
        }
        self.consent_refused += other.consent_refused;
        self.consent_withdrawn += other.consent_withdrawn;
        self.not_entered += other.not_entered;
        self.preconditions_not_met += other.preconditions_not_met;
        self.referrals_refused += other.referrals_refused;
        self.referrals_left_pending += other.referrals_left_pending;
        self.exclusive_support += other.exclusive_support;
        self.entered += other.entered;
        for (k, n) in other.exits {
            *self.exits.entry(k).or_default() += n;
        }
        for (k, n) in other.oriented {
            *self.oriented.entry(k).or_default() += n;
        }
        self.parcours_changes += other.parcours_changes;
        self.portfolio_full += other.portfolio_full;
        self.queued += other.queued;
        self.rpc_calls += other.rpc_calls;
        self.not_yet_calls += other.not_yet_calls;
    }
}

#[derive(Clone)]
struct Clients {
    emploi: EmploiServiceClient<Retrying>,
    social: SocialServiceClient<Retrying>,
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    passerelle_contract::convert::timestamp(at)
}

/// The partner learns of a change through the outbox a moment later: a
/// dependent call is retried while it still answers NOT_FOUND / FAILED_PRECONDITION.
/// Each such answer is counted in `not_yet`: calls the services served too.
async fn when_delivered<T, F, Fut>(not_yet: &mut u64, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match call().await {
            Err(s)
                if matches!(s.code(), Code::NotFound | Code::FailedPrecondition)
                    && tokio::time::Instant::now() < deadline =>
            {
                *not_yet += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// The life of one person, as a list of dated steps.
struct Person {
    index: u64,
    by: Institution,
    refuses_consent: bool,
    withdraws: bool,
    disagreement: Option<Institution>,
    exit: Option<v1::ExitReason>,
    days: [i64; 4],
    /// Percent draw deciding the referral's fate at the receiving side.
    fate: u64,
}

/// Who acts for a person: one of the counsellors of the agreement's
/// working-time register, one of fourteen social workers.
#[derive(Debug, Clone, Copy)]
struct Staff {
    counsellors: u64,
}

impl Staff {
    fn of(agreement: &Agreement) -> Self {
        Staff {
            counsellors: (counsellors(agreement).len() as u64).max(1),
        }
    }

    fn agent(self, by: Institution, index: u64) -> (Role, String) {
        match by {
            Institution::Emploi => (
                Role::Counsellor,
                format!("ft-counsellor-{}", index % self.counsellors + 1),
            ),
            _ => (Role::SocialWorker, format!("sw-{}", index % 14 + 1)),
        }
    }

    fn as_agent<T>(
        self,
        stack: &Stack,
        by: Institution,
        index: u64,
        message: T,
    ) -> anyhow::Result<Request<T>> {
        let (role, agent) = self.agent(by, index);
        let token = stack.token(by, role, &agent, by)?;
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(request)
    }
}

/// The dedicated counsellors of an agreement's working-time register:
/// full-time ones, then the remaining fraction of an FTE.
fn counsellors(agreement: &Agreement) -> Vec<(String, u32, String)> {
    let agencies: Vec<&str> = agreement
        .offices
        .iter()
        .filter(|o| o.network() == Network::Emploi)
        .map(|o| o.code.as_str())
        .collect();
    let per_mille = (agreement.capacity.counsellors_fte * 1000.0).round() as u32;
    let mut shares = vec![1000; (per_mille / 1000) as usize];
    if !per_mille.is_multiple_of(1000) {
        shares.push(per_mille % 1000);
    }
    shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| {
            (
                format!("ft-counsellor-{}", i + 1),
                share,
                agencies[i % agencies.len()].to_owned(),
            )
        })
        .collect()
}

/// The orientation grid answered as a professional would for `parcours`:
/// the difficulties none for the emploi parcours, some for the
/// socio-professional one, one at least blocking for the social one.
fn grid(rules: &ParcoursRules, parcours: Parcours, rng: &mut Rng) -> Vec<v1::CriterionAnswer> {
    let mut blocking_given = false;
    rules
        .criteria
        .iter()
        .map(|c| {
            let has = |a: &str| c.answers.iter().any(|x| x == a);
            let answer = if has("blocking") {
                match parcours {
                    Parcours::Emploi => "none".to_owned(),
                    Parcours::SocioProfessionnel => {
                        if rng.chance(50) { "manageable" } else { "none" }.to_owned()
                    }
                    Parcours::Social => {
                        if !blocking_given || rng.chance(30) {
                            blocking_given = true;
                            "blocking".to_owned()
                        } else {
                            "manageable".to_owned()
                        }
                    }
                }
            } else {
                rng.pick(&c.answers).clone()
            };
            v1::CriterionAnswer {
                criterion: c.code.clone(),
                answer,
            }
        })
        .collect()
}

/// A person followed on an office where the agreement's parcours apply:
/// their case, and whether they receive RSA (which says who decides).
struct Pilot<'a> {
    rules: &'a ParcoursRules,
    case_id: String,
    office: &'a str,
    rsa_beneficiary: bool,
}

impl Pilot<'_> {
    /// Records the person's orientation into `parcours` (with the parcours'
    /// first organisme référent) at the side that decides it: the demo's
    /// referrer, whose network matches the person's RSA status on the
    /// pilot's offices. A dependent call, like the others.
    #[allow(clippy::too_many_arguments)]
    async fn orient(
        &self,
        stack: &Stack,
        staff: Staff,
        clients: &mut Clients,
        p: &Person,
        parcours: Parcours,
        key: String,
        rng: &mut Rng,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let referent = self
            .rules
            .track(parcours)
            .map(|t| t.referents[0])
            .ok_or_else(|| anyhow::anyhow!("parcours {parcours} not deployed"))?;
        let request = v1::RecordOrientationRequest {
            idempotency_key: key,
            orientation: Some(v1::Orientation {
                case_id: self.case_id.clone(),
                office_code: self.office.into(),
                parcours: v1::Parcours::from(parcours) as i32,
                referent: v1::OrganismeReferent::from(referent) as i32,
                rsa_beneficiary: self.rsa_beneficiary,
                ..Default::default()
            }),
            criteria: grid(self.rules, parcours, rng),
        };
        when_delivered(&mut tally.not_yet_calls, || async {
            let request = staff
                .as_agent(stack, p.by, p.index, request.clone())
                .map_err(|e| Status::internal(e.to_string()))?;
            match p.by {
                Institution::Emploi => clients
                    .emploi
                    .clone()
                    .record_orientation(request)
                    .await
                    .map(|_| ()),
                _ => clients
                    .social
                    .clone()
                    .record_orientation(request)
                    .await
                    .map(|_| ()),
            }
        })
        .await?;
        tally.rpc_calls += 1;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_person(
    stack: &Stack,
    timeline: &Timeline,
    arrival: i64,
    clients: &mut Clients,
    agreement: &Agreement,
    p: &Person,
    rng: &mut Rng,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let start = timeline.date(arrival);
    let staff = Staff::of(agreement);
    let key = |step: &str| format!("demo-{}-{step}", p.index);
    let by = p.by;
    // The institution the referral goes to.
    let receiver = by
        .partner()
        .context("a referral comes from emploi or social")?;
    tally.people += 1;
    let network = match by {
        Institution::Emploi => Network::Emploi,
        _ => Network::Social,
    };
    let offices: Vec<&str> = agreement
        .offices
        .iter()
        .filter(|o| o.network() == network)
        .map(|o| o.code.as_str())
        .collect();
    let office = *rng.pick(&offices);
    // Where the agreement's parcours apply, the person is oriented first, by
    // the side that decides: the Département for an RSA beneficiary, France
    // Travail otherwise (here the referrer's side).
    let pilot = agreement.parcours.as_ref().filter(|r| r.apply_on(office));
    let rsa_beneficiary = match pilot {
        Some(_) => by == Institution::Social,
        None => rng.chance(52),
    };
    let pilot = pilot.map(|rules| Pilot {
        rules,
        case_id: uuid::Uuid::now_v7().to_string(),
        office,
        rsa_beneficiary,
    });
    if let Some(pilot) = &pilot {
        let parcours = match rng.between(1, 100) {
            1..=25 => Parcours::Emploi,
            26..=40 => Parcours::Social,
            _ => Parcours::SocioProfessionnel,
        };
        pilot
            .orient(
                stack,
                staff,
                clients,
                p,
                parcours,
                key("orientation"),
                rng,
                tally,
            )
            .await?;
        *tally.oriented.entry(parcours.code()).or_default() += 1;
        if parcours != Parcours::SocioProfessionnel {
            // Followed in the emploi or social parcours: no accompagnement global.
            return Ok(());
        }
    }
    if p.refuses_consent {
        // Informed, the person declines: nothing is recorded, nothing crosses.
        tally.consent_refused += 1;
        return Ok(());
    }
    let preconditions = agreement.referral.checks_kind == ChecksKind::Preconditions;
    if preconditions && p.fate < 5 {
        // The referrer checks the preconditions first: no referral is made.
        tally.preconditions_not_met += 1;
        return Ok(());
    }
    *tally.referred_by.entry(by.code()).or_default() += 1;
    let consent = v1::ConsentRecord {
        purposes: vec![
            v1::Purpose::Referral as i32,
            v1::Purpose::GlobalSupport as i32,
            v1::Purpose::ExclusiveSocialSupport as i32,
        ],
        recipients: vec![
            v1::Institution::Emploi as i32,
            v1::Institution::Social as i32,
        ],
        categories: [
            v1::DataCategory::Identity,
            v1::DataCategory::Contact,
            v1::DataCategory::Case,
            v1::DataCategory::Barrier,
            v1::DataCategory::Employment,
        ]
        .iter()
        .map(|c| *c as i32)
        .collect(),
        evidence: Some(v1::ConsentEvidence {
            kind: v1::EvidenceKind::SignedReferralForm as i32,
            document_sha256: sha256_hex(&format!("fiche de liaison {}", p.index)),
            signed_at: Some(ts(start)),
            collected_by: staff.agent(by, p.index).1,
        }),
        valid_from: Some(ts(start)),
        valid_until: Some(ts(start + chrono::Duration::days(730))),
        // The case the orientation opened, where there is one.
        case_id: pilot
            .as_ref()
            .map(|pilot| pilot.case_id.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let first = *rng.pick(FIRST_NAMES);
    let barriers: Vec<v1::Barrier> = (0..rng.between(1, 3))
        .map(|i| BARRIERS[(p.index as usize + i as usize * 3) % BARRIERS.len()])
        .map(|category| v1::Barrier {
            category: category as i32,
            level: rng.between(1, 3) as i32,
        })
        .collect();
    let checks: Vec<v1::CheckAnswer> = agreement
        .referral
        .checks
        .iter()
        .map(|c| v1::CheckAnswer {
            code: c.code.clone(),
            // Orientation criteria inform the decision; not all need hold.
            met: preconditions || !rng.chance(15),
        })
        .collect();
    let referral = |case_id: &str, consent_id: &str, rng: &mut Rng| v1::Referral {
        case_id: case_id.into(),
        office_code: office.into(),
        checks: checks.clone(),
        person: Some(v1::PersonIdentity {
            first_name: first.into(),
            last_name: (*rng.pick(LAST_NAMES)).into(),
            birth_date: format!(
                "{}-{:02}-{:02}",
                rng.between(1962, 2004),
                rng.between(1, 12),
                rng.between(1, 28)
            ),
            jobseeker_number: format!(
                "{:07}{}",
                rng.between(1, 9_999_999),
                (b'A' + rng.between(0, 25) as u8) as char
            ),
        }),
        contact: Some(v1::Contact {
            phone: format!(
                "06 {:02} {:02} {:02} {:02}",
                rng.between(0, 99),
                rng.between(0, 99),
                rng.between(0, 99),
                rng.between(0, 99)
            ),
            ..Default::default()
        }),
        barriers: barriers.clone(),
        employment: Some(v1::EmploymentSummary {
            registered: true,
            registration_date: "2024-06-01".into(),
            rsa_beneficiary,
        }),
        consent_id: consent_id.into(),
        ..Default::default()
    };
    let note = "éléments de contexte confiés lors de l'entretien (reste au service)".to_owned();

    let (case_id, consent_id) = match by {
        Institution::Emploi => {
            let c = clients
                .emploi
                .record_consent(staff.as_agent(
                    stack,
                    by,
                    p.index,
                    v1::RecordConsentRequest {
                        idempotency_key: key("consent"),
                        consent: Some(consent),
                    },
                )?)
                .await?
                .into_inner()
                .consent
                .unwrap_or_default();
            let r = referral(&c.case_id, &c.consent_id, rng);
            clients
                .emploi
                .create_referral(staff.as_agent(
                    stack,
                    by,
                    p.index,
                    v1::CreateReferralRequest {
                        idempotency_key: key("referral"),
                        referral: Some(r),
                        local_note: note,
                    },
                )?)
                .await?;
            (c.case_id, c.consent_id)
        }
        _ => {
            let c = clients
                .social
                .record_consent(staff.as_agent(
                    stack,
                    by,
                    p.index,
                    v1::RecordConsentRequest {
                        idempotency_key: key("consent"),
                        consent: Some(consent),
                    },
                )?)
                .await?
                .into_inner()
                .consent
                .unwrap_or_default();
            let r = referral(&c.case_id, &c.consent_id, rng);
            clients
                .social
                .create_referral(staff.as_agent(
                    stack,
                    by,
                    p.index,
                    v1::CreateReferralRequest {
                        idempotency_key: key("referral"),
                        referral: Some(r),
                        local_note: note,
                    },
                )?)
                .await?;
            (c.case_id, c.consent_id)
        }
    };
    tally.rpc_calls += 3;

    if p.withdraws {
        // The referral reaches the partner within moments, the withdrawal
        // comes days later: the simulated days must not outrun the relay.
        when_delivered(&mut tally.not_yet_calls, || async {
            let request = staff
                .as_agent(
                    stack,
                    receiver,
                    p.index,
                    v1::GetCaseRequest {
                        case_id: case_id.clone(),
                    },
                )
                .map_err(|e| Status::internal(e.to_string()))?;
            match receiver {
                Institution::Emploi => clients.emploi.clone().get_case(request).await,
                _ => clients.social.clone().get_case(request).await,
            }
        })
        .await?;
        tally.rpc_calls += 1;
        timeline.at(arrival + p.days[0]).await;
        let request = v1::WithdrawConsentRequest {
            idempotency_key: key("withdraw"),
            consent_id: consent_id.clone(),
        };
        match by {
            Institution::Emploi => {
                let request = v1::WithdrawConsentRequest {
                    idempotency_key: request.idempotency_key,
                    consent_id: request.consent_id,
                };
                clients
                    .emploi
                    .withdraw_consent(staff.as_agent(stack, by, p.index, request)?)
                    .await?;
            }
            _ => {
                clients
                    .social
                    .withdraw_consent(staff.as_agent(stack, by, p.index, request)?)
                    .await?;
            }
        }
        tally.consent_withdrawn += 1;
        tally.rpc_calls += 1;
        return Ok(());
    }

    // The receiving institution decides on the referral first.
    timeline.at(arrival + 2).await;
    if (5..8).contains(&p.fate) {
        // Nobody decides: the referral expires after the agreement's delay.
        tally.referrals_left_pending += 1;
        return Ok(());
    }
    let (decision, reason) = if (8..14).contains(&p.fate) {
        let reasons = &agreement.referral.refusal_reasons;
        let reason = reasons[p.index as usize % reasons.len()].code.clone();
        (v1::ReferralState::Refused, reason)
    } else {
        (v1::ReferralState::Accepted, String::new())
    };
    when_delivered(&mut tally.not_yet_calls, || async {
        let message = |prefix: &str| (format!("{prefix}-{}", key("decide")), case_id.clone());
        match receiver {
            Institution::Emploi => {
                let (k, case_id) = message("e");
                let request = staff
                    .as_agent(
                        stack,
                        receiver,
                        p.index,
                        v1::DecideReferralRequest {
                            idempotency_key: k,
                            case_id,
                            decision: decision as i32,
                            refusal_reason: reason.clone(),
                            local_note: String::new(),
                        },
                    )
                    .map_err(|e| Status::internal(e.to_string()))?;
                clients
                    .emploi
                    .clone()
                    .decide_referral(request)
                    .await
                    .map(|_| ())
            }
            _ => {
                let (k, case_id) = message("s");
                let request = staff
                    .as_agent(
                        stack,
                        receiver,
                        p.index,
                        v1::DecideReferralRequest {
                            idempotency_key: k,
                            case_id,
                            decision: decision as i32,
                            refusal_reason: reason.clone(),
                            local_note: String::new(),
                        },
                    )
                    .map_err(|e| Status::internal(e.to_string()))?;
                clients
                    .social
                    .clone()
                    .decide_referral(request)
                    .await
                    .map(|_| ())
            }
        }
    })
    .await?;
    tally.rpc_calls += 1;
    if decision == v1::ReferralState::Refused {
        tally.referrals_refused += 1;
        return Ok(());
    }

    let verdict_of = |who: Institution| if p.disagreement == Some(who) { v1::Verdict::Disagree } else { v1::Verdict::Agree } as i32;
    // Under "the prescriber decides", the partner's validation sometimes
    // never comes: the person enters all the same, and it is counted.
    let skip = |who: Institution| {
        agreement.shared_diagnosis.rule
            == passerelle_domain::agreement::DiagnosisRule::PrescriberDecides
            && who != by
            && (14..22).contains(&p.fate)
    };
    let halves_expected = if skip(receiver) { 1 } else { 2 };
    timeline.at(arrival + p.days[0]).await;
    let half = v1::DiagnosisHalf {
        case_id: case_id.clone(),
        barriers: barriers.clone(),
        verdict: verdict_of(Institution::Emploi),
        ..Default::default()
    };
    if !skip(Institution::Emploi) {
        when_delivered(&mut tally.not_yet_calls, || async {
            let request = staff
                .as_agent(
                    stack,
                    Institution::Emploi,
                    p.index,
                    v1::RecordDiagnosisRequest {
                        idempotency_key: key("diag-emploi"),
                        half: Some(half.clone()),
                        local_note: String::new(),
                    },
                )
                .map_err(|e| Status::internal(e.to_string()))?;
            clients.emploi.clone().record_diagnosis(request).await
        })
        .await?;
    }
    timeline.at(arrival + p.days[1]).await;
    let half = v1::DiagnosisHalf {
        verdict: verdict_of(Institution::Social),
        ..half
    };
    if !skip(Institution::Social) {
        when_delivered(&mut tally.not_yet_calls, || async {
            let request = staff
                .as_agent(
                    stack,
                    Institution::Social,
                    p.index,
                    v1::RecordDiagnosisRequest {
                        idempotency_key: key("diag-social"),
                        half: Some(half.clone()),
                        local_note: String::new(),
                    },
                )
                .map_err(|e| Status::internal(e.to_string()))?;
            clients.social.clone().record_diagnosis(request).await
        })
        .await?;
    }
    tally.rpc_calls += 2;
    // Whether a disagreement keeps the person out is the agreement's rule:
    // ask the employment side once it knows both halves.
    let state = loop {
        let request = staff.as_agent(
            stack,
            Institution::Emploi,
            p.index,
            v1::GetCaseRequest {
                case_id: case_id.clone(),
            },
        )?;
        let answer = clients.emploi.get_case(request).await?.into_inner();
        tally.rpc_calls += 1;
        if answer.diagnoses.len() == halves_expected {
            break answer.case.map(|c| c.state).unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if state == v1::CaseState::NotEntered as i32 {
        tally.not_entered += 1;
        return Ok(());
    }

    // Axe 3 where the agreement runs it: social difficulties block any job
    // search, the social side follows the person alone.
    if agreement.exclusive_social_support.is_some() && by == Institution::Social && p.fate >= 94 {
        // The office's quota is scarce: one at a time, in turn.
        timeline.in_turn(arrival + p.days[2], p.index).await;
        let request = || {
            staff
                .as_agent(
                    stack,
                    Institution::Social,
                    p.index,
                    v1::StartExclusiveSupportRequest {
                        idempotency_key: key("axe3"),
                        case_id: case_id.clone(),
                        social_evaluation: Some(v1::ConsentEvidence {
                            kind: v1::EvidenceKind::SignedReferralForm as i32,
                            document_sha256: sha256_hex(&format!("évaluation sociale {}", p.index)),
                            signed_at: Some(ts(timeline.now())),
                            collected_by: staff.agent(Institution::Social, p.index).1,
                        }),
                    },
                )
                .map_err(|e| Status::internal(e.to_string()))
        };
        tally.rpc_calls += 1;
        // The employment side's acceptance reaches the social side through
        // the outbox: the start waits for it like any dependent call.
        let started = when_delivered(&mut tally.not_yet_calls, || async {
            clients
                .social
                .clone()
                .start_exclusive_support(request()?)
                .await
        })
        .await;
        match started {
            Ok(_) => {
                tally.exclusive_support += 1;
                return Ok(());
            }
            // The office's yearly quota is used: global support instead.
            Err(s) if s.code() == Code::ResourceExhausted => {}
            Err(s) => return Err(s.into()),
        }
    }

    // A counsellor's last place is scarce: one at a time, in turn.
    timeline.in_turn(arrival + p.days[2], p.index).await;
    let document = |kind: v1::EvidenceKind, what: &str| v1::ConsentEvidence {
        kind: kind as i32,
        document_sha256: sha256_hex(&format!("{what} {}", p.index)),
        signed_at: Some(ts(timeline.now())),
        collected_by: staff.agent(Institution::Emploi, p.index).1,
    };
    let evidence = match agreement.entry.evidence {
        EntryEvidence::SignedContractNamingSocialReferent => {
            vec![document(v1::EvidenceKind::SignedContract, "contrat")]
        }
        EntryEvidence::SignedReferralFormAndInterviewConclusion => vec![
            document(v1::EvidenceKind::SignedReferralForm, "fiche de liaison"),
            document(
                v1::EvidenceKind::InterviewConclusion,
                "conclusion d'entretien",
            ),
        ],
    };
    let entry = v1::CaseEntry {
        pair: Some(v1::Pair {
            counsellor: staff.agent(Institution::Emploi, p.index).1,
            social_worker: staff.agent(Institution::Social, p.index).1,
        }),
        track: v1::Track::Global as i32,
        evidence,
        ..Default::default()
    };
    let signed = when_delivered(&mut tally.not_yet_calls, || async {
        let request = staff
            .as_agent(
                stack,
                Institution::Emploi,
                p.index,
                v1::SignContractRequest {
                    idempotency_key: key("sign"),
                    case_id: case_id.clone(),
                    entry: Some(entry.clone()),
                    participant: participant(p.index),
                },
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        clients.emploi.clone().sign_contract(request).await
    })
    .await;
    tally.rpc_calls += 1;
    let signed = match signed {
        Ok(answer) => answer.into_inner(),
        // Every dedicated counsellor's portfolio is full: this agreement refuses.
        Err(s) if s.code() == Code::ResourceExhausted => {
            tally.portfolio_full += 1;
            return Ok(());
        }
        Err(s) => return Err(s.into()),
    };
    if signed.case.map(|c| c.state) == Some(v1::CaseState::Queued as i32) {
        // Waiting for a place: the case goes on when one frees.
        tally.queued += 1;
        return Ok(());
    }
    tally.entered += 1;

    // Past the period (a month is at least 28 days) the case ends at term.
    let period_days = i64::from(agreement.global_support.initial_months) * 28 - 3;
    let exit = p.exit.filter(|_| p.days[3] - p.days[2] < period_days);
    if exit.is_none() && p.days[3] - p.days[2] >= period_days {
        *tally.exits.entry("end_of_term".into()).or_default() += 1;
    }
    // A change of parcours during the support, decided by the same side:
    // towards emploi once the social barriers are lifted, towards social
    // when they come to block everything.
    if let (Some(pilot), Some(reason)) = (&pilot, exit) {
        let change = if reason == v1::ExitReason::SocialProblemSolved {
            Some((Parcours::Emploi, p.days[3]))
        } else if p.index.is_multiple_of(3) {
            Some((Parcours::Social, (p.days[2] + p.days[3]) / 2))
        } else {
            None
        };
        if let Some((parcours, day)) = change {
            timeline.at(arrival + day).await;
            pilot
                .orient(
                    stack,
                    staff,
                    clients,
                    p,
                    parcours,
                    key("parcours-change"),
                    rng,
                    tally,
                )
                .await?;
            tally.parcours_changes += 1;
        }
    }
    if let Some(reason) = exit {
        timeline.at(arrival + p.days[3]).await;
        if reason == v1::ExitReason::MissedAppointments {
            // Implicit end: the threshold of missed appointments is reached.
            for i in 0..agreement.exits.missed_appointments_threshold {
                let request = staff.as_agent(
                    stack,
                    Institution::Emploi,
                    p.index,
                    v1::RecordMissedAppointmentRequest {
                        idempotency_key: format!("{}-{i}", key("missed")),
                        case_id: case_id.clone(),
                    },
                )?;
                clients.emploi.record_missed_appointment(request).await?;
                tally.rpc_calls += 1;
            }
        } else {
            let request = staff.as_agent(
                stack,
                Institution::Emploi,
                p.index,
                v1::ExitCaseRequest {
                    idempotency_key: key("exit"),
                    case_id,
                    exit: Some(v1::CaseExit {
                        reason: reason as i32,
                        ..Default::default()
                    }),
                    // Some training exits end with a qualification.
                    qualification_gained: reason == v1::ExitReason::Training
                        && p.index.is_multiple_of(2),
                },
            )?;
            clients.emploi.exit_case(request).await?;
            tally.rpc_calls += 1;
        }
        *tally
            .exits
            .entry(
                reason
                    .as_str_name()
                    .trim_start_matches("EXIT_REASON_")
                    .to_lowercase(),
            )
            .or_default() += 1;
    }
    Ok(())
}

/// How long a call of the replay keeps trying a service that does not
/// answer (restarting after a crash, or down for an outage the crash test
/// makes) before the replay gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// Runs `people` through their year. With `turns`, the steps that compete
/// for a place (signing into a counsellor's portfolio, an office's axe 3
/// quota) take their turn in the people's order after the day's other
/// steps, so the same seed gives the same figures however the calls
/// interleave; without, they run side by side like every other step.
pub async fn run(
    stack: &Stack,
    clock: &SimulatedYear,
    agreement: &Agreement,
    people: u64,
    seed: u64,
    turns: bool,
) -> anyhow::Result<Tally> {
    let mut rng = Rng::new(seed);
    let channel = |i| Channel::from_shared(stack.url(i)).map(|e| e.connect_lazy());
    let to_emploi = Retrying::new(channel(Institution::Emploi)?, PATIENCE);
    let to_social = to_emploi.sharing_count(channel(Institution::Social)?);
    let clients = Clients {
        emploi: EmploiServiceClient::new(to_emploi.clone()),
        social: SocialServiceClient::new(to_social),
    };
    let origin = clock.now();
    let mut tally = Tally::default();
    // The coordinator fills the working-time register the capacity rule reads.
    for (i, (counsellor, share, agency)) in counsellors(agreement).into_iter().enumerate() {
        let token = stack.token(
            Institution::Emploi,
            Role::Coordinator,
            "coordination-emploi",
            Institution::Emploi,
        )?;
        let mut request = Request::new(v1::RegisterCounsellorRequest {
            idempotency_key: format!("demo-register-{i}"),
            counsellor,
            working_time_per_mille: share,
            office_code: agency,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        clients.emploi.clone().register_counsellor(request).await?;
        tally.rpc_calls += 1;
    }

    // People arrive over a year; each one's steps are laid out from their arrival.
    let mut persons: Vec<(i64, Person)> = (0..people)
        .map(|index| {
            let arrival = rng.between(0, 364);
            let diag_emploi = rng.between(3, 12);
            let diag_social = diag_emploi + rng.between(1, 10);
            let entry = diag_social + rng.between(2, 20);
            let stays = rng.between(60, 300);
            let exits_before_end = arrival + entry + stays < 420;
            let person = Person {
                index,
                by: if rng.chance(55) {
                    Institution::Social
                } else {
                    Institution::Emploi
                },
                refuses_consent: rng.chance(6),
                withdraws: rng.chance(4),
                disagreement: if rng.chance(9) {
                    Some(if rng.chance(50) {
                        Institution::Emploi
                    } else {
                        Institution::Social
                    })
                } else {
                    None
                },
                exit: exits_before_end.then(|| *rng.pick(EXITS)),
                days: [diag_emploi, diag_social, entry, entry + stays],
                fate: rng.between(0, 99) as u64,
            };
            (arrival, person)
        })
        .collect();
    persons.sort_by_key(|(arrival, p)| (*arrival, p.index));
    // Drawn on a terminal only: quiet in CI logs and pipes.
    let progress = indicatif::ProgressBar::new(people);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} personnes · {msg} · {per_sec} · {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Everyone's year at once, day by day: each day's steps side by side.
    let timeline = Timeline::new(clock.clone(), turns);
    let person = |(arrival, person): (i64, Person), place: Place| {
        let (timeline, mut clients) = (timeline.clone(), clients.clone());
        async move {
            let _place = place;
            // Each person draws from their own sequence: the same seed gives
            // the same people whatever order the days' steps run in.
            let mut rng = Rng::new(seed ^ person.index.wrapping_mul(0xA076_1D64_78BD_642F));
            let mut tally = Tally::default();
            timeline.at(arrival).await;
            run_person(
                stack,
                &timeline,
                arrival,
                &mut clients,
                agreement,
                &person,
                &mut rng,
                &mut tally,
            )
            .await?;
            anyhow::Ok(tally)
        }
    };
    let mut pending = persons.into_iter().peekable();
    let mut running = futures_util::stream::FuturesUnordered::new();
    // The feeder's own place keeps each arrival day until its people start.
    let feeder = timeline.join(1);
    // Where the bar is not drawn (a file, a CI log), a plain line now and
    // then says the run is alive and how far it is.
    let started = std::time::Instant::now();
    let next_line = std::cell::Cell::new(started + PROGRESS_LINE_EVERY);
    let finished = |done: anyhow::Result<Tally>, tally: &mut Tally| -> anyhow::Result<()> {
        tally.add(done?);
        progress.set_message(format!(
            "jour {} · {} entrées, {} appels gRPC",
            timeline.today(),
            tally.entered,
            tally.rpc_calls
        ));
        progress.inc(1);
        if progress.is_hidden() && std::time::Instant::now() >= next_line.get() {
            next_line.set(next_line.get() + PROGRESS_LINE_EVERY);
            let (done, today) = (progress.position(), timeline.today());
            eprintln!(
                "{}",
                progress_line(done, people, today, tally, started.elapsed())
            );
        }
        Ok(())
    };
    loop {
        let today = timeline.today();
        let mut arrivals = vec![];
        while let Some(next) = pending.next_if(|(arrival, _)| *arrival <= today) {
            arrivals.push(next);
        }
        let places = timeline.join(arrivals.len());
        for (arrival, place) in arrivals.into_iter().zip(places) {
            running.push(person(arrival, place));
        }
        let Some(&(next_arrival, _)) = pending.peek() else {
            break;
        };
        let next_day = timeline.at(next_arrival);
        tokio::pin!(next_day);
        loop {
            tokio::select! {
                () = &mut next_day => break,
                Some(done) = running.next() => finished(done, &mut tally)?,
            }
        }
    }
    drop(feeder);
    while let Some(done) = running.next().await {
        finished(done, &mut tally)?;
    }
    progress.finish_and_clear();
    // Let the last messages reach the partner before the committee looks.
    clock.set(origin + chrono::Duration::days(420));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tally.retried_calls = to_emploi.retries();
    Ok(tally)
}

/// How often a run whose bar is hidden prints where it is.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

fn progress_line(done: u64, people: u64, today: i64, tally: &Tally, elapsed: Duration) -> String {
    format!(
        "replay: {done}/{people} personnes · jour {today} · {} entrées, {} appels gRPC · {:.0} personnes/s · {:.0} s",
        tally.entered,
        tally.rpc_calls,
        done as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        elapsed.as_secs_f64(),
    )
}

pub async fn dashboard(stack: &Stack) -> anyhow::Result<v1::GetDashboardResponse> {
    let token = stack.token(
        Institution::Pilotage,
        Role::Steering,
        "copil-demo",
        Institution::Pilotage,
    )?;
    let mut request = Request::new(v1::GetDashboardRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let channel = Channel::from_shared(stack.url(Institution::Pilotage))?.connect_lazy();
    Ok(PilotageServiceClient::new(Retrying::new(channel, PATIENCE))
        .max_decoding_message_size(passerelle_contract::MAX_AGGREGATES_MESSAGE)
        .get_dashboard(request)
        .await?
        .into_inner())
}

fn cell(c: Option<&v1::Cell>) -> String {
    match c {
        Some(c) if c.suppressed => "< seuil (masqué)".to_owned(),
        Some(c) => c.count.to_string(),
        None => "—".to_owned(),
    }
}

/// The committee's indicators as a readable table.
pub fn render(
    answer: &v1::GetDashboardResponse,
    tally: &Tally,
    agreement: &Agreement,
) -> anyhow::Result<String> {
    let d = answer
        .dashboard
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("empty dashboard"))?;
    let mut out = String::new();
    let mut row =
        |label: &str, value: String| out.push_str(&format!("  {label:<44} {value:>18}\n"));
    row("Entrées cumulées (entries)", cell(d.entries.as_ref()));
    row(
        "En cours d'accompagnement (in progress)",
        cell(d.in_progress.as_ref()),
    );
    row(
        "Délai moyen orientation → entrée (jours)",
        if d.average_entry_delay_suppressed {
            "< seuil (masqué)".into()
        } else {
            format!("{:.1}", d.average_entry_delay_days)
        },
    );
    for c in &d.referrals_by_network {
        row(
            &format!("Orientations par le réseau {}", c.key),
            cell(Some(c)),
        );
    }
    for c in &d.referral_outcomes {
        row(&format!("Orientations : {}", c.key), cell(Some(c)));
    }
    for c in &d.refusals_by_reason {
        row(&format!("  refus : {}", c.key), cell(Some(c)));
    }
    row(
        "Non-intégrations après diagnostic",
        cell(d.not_entered_at_diagnosis.as_ref()),
    );
    for c in &d.awaiting_validation_by_party {
        row(
            &format!("Diagnostics en attente de validation : {}", c.key),
            cell(Some(c)),
        );
    }
    row(
        "En file d'attente (portefeuille complet)",
        cell(d.queued.as_ref()),
    );
    row(
        "Accompagnement social exclusif (axe 3)",
        cell(d.exclusive_support_entries.as_ref()),
    );
    for c in &d.exits_by_type {
        row(&format!("Sorties : {}", c.key), cell(Some(c)));
    }
    if agreement.parcours.is_some() {
        let tables = [
            ("orientations.by_office", "Orientés en parcours"),
            ("parcours_changes.by_office", "Changements de parcours"),
            (
                "entries_by_parcours.by_office",
                "Entrées en AG depuis le parcours",
            ),
        ];
        for (name, label) in tables {
            if let Some(t) = crate::report::table(d, name) {
                for (key, count) in crate::report::total_bars(t) {
                    let value = count.map_or("s".to_owned(), |n| n.to_string());
                    row(&format!("{label} {key}"), value);
                }
            }
        }
    }
    let rule = match agreement.shared_diagnosis.rule {
        passerelle_domain::agreement::DiagnosisRule::BothMustAgree => {
            "les deux professionnels doivent être d'accord"
        }
        passerelle_domain::agreement::DiagnosisRule::PrescriberDecides => {
            "le repérage du prescripteur n'est pas remis en cause"
        }
    };
    let g = &agreement.global_support;
    let mut rules = format!(
        "  Règles : durée {} mois renouvelable {} fois {} mois ; diagnostic : {rule}\n",
        g.initial_months, g.max_renewals, g.renewal_months
    );
    if let Some(target) = agreement.targets.entries_per_counsellor_per_year {
        rules.push_str(&format!(
            "  Objectif : {target} entrées par conseiller et par an ({} conseillers)\n",
            agreement.capacity.counsellors_fte
        ));
    }
    if let Some(participants) = agreement.targets.participants {
        rules.push_str(&format!(
            "  Objectif : {participants} participants, {} en portefeuille\n",
            agreement.targets.steady_portfolio.unwrap_or(0)
        ));
    }
    for t in &agreement.targets.entry_delay {
        rules.push_str(&format!(
            "  Objectif de délai d'entrée {} : {} jours\n",
            t.year, t.days
        ));
    }
    let mut text = format!("\n{} ({})\n{rules}", agreement.name, agreement.id);
    text.push_str("Comité de pilotage — indicateurs (agrégats seulement, cellules < ");
    text.push_str(&format!("{} masquées)\n", d.min_cell_size));
    text.push_str(&"-".repeat(66));
    text.push('\n');
    text.push_str(&out);
    text.push_str(&"-".repeat(66));
    if let Some(next) = answer.calendar.as_ref().and_then(|c| c.next.as_ref()) {
        text.push_str(&format!(
            "\nProchaine échéance de la convention : {} — {}",
            next.on, next.label
        ));
    }
    text.push_str(&format!(
        "\nScénario : {} personnes, {} refus de consentement, {} préalables non réunis, {} retraits, {} orientations refusées, {} laissées sans réponse (expirées), {} non-entrées après diagnostic, {} entrées, {} en accompagnement social exclusif, {} appels gRPC.\n",
        tally.people, tally.consent_refused, tally.preconditions_not_met, tally.consent_withdrawn, tally.referrals_refused, tally.referrals_left_pending, tally.not_entered, tally.entered, tally.exclusive_support, tally.rpc_calls
    ));
    if tally.portfolio_full + tally.queued > 0 {
        text.push_str(&format!(
            "Portefeuilles complets à la signature : {} refusés, {} en file d'attente.\n",
            tally.portfolio_full, tally.queued
        ));
    }
    if !tally.oriented.is_empty() {
        let by_parcours: Vec<String> = tally
            .oriented
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        text.push_str(&format!(
            "Parcours (bureaux de l'expérimentation) : {} orientés ({}), {} changements de parcours en cours d'accompagnement.\n",
            tally.oriented.values().sum::<u64>(),
            by_parcours.join(", "),
            tally.parcours_changes
        ));
    }
    Ok(text)
}

/// The ESF questionnaire of the demo's person `index`, varied but fixed by
/// the index; one in seventeen did not fill it in.
fn participant(index: u64) -> Option<v1::ParticipantProfile> {
    if index.is_multiple_of(17) {
        return None;
    }
    let education = match index * 7 % 10 {
        0..=4 => v1::EducationLevel::Isced02,
        5..=8 => v1::EducationLevel::Isced34,
        _ => v1::EducationLevel::Isced58,
    };
    let disability = if index.is_multiple_of(9) {
        v1::DisabilityDeclaration::Declared
    } else if index.is_multiple_of(13) {
        v1::DisabilityDeclaration::Undisclosed
    } else {
        v1::DisabilityDeclaration::NotDeclared
    };
    Some(v1::ParticipantProfile {
        sex: if index.is_multiple_of(2) {
            v1::Sex::Female
        } else {
            v1::Sex::Male
        } as i32,
        education: education as i32,
        jobless_household: index.is_multiple_of(3),
        single_adult_with_children: index.is_multiple_of(5),
        disability: disability as i32,
    })
}

/// A request as `institution`'s data protection officer.
fn as_dpo<T>(stack: &Stack, institution: Institution, message: T) -> anyhow::Result<Request<T>> {
    let token = stack.token(institution, Role::Dpo, "dpo-demo", institution)?;
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Beside the committee's report, what the data protection officers keep:
/// each institution's register of processing, and one person's joint access
/// report (the first person who entered support), written as their DPO
/// would. Returns the files written.
pub async fn dpo_documents(
    stack: &Stack,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let channel = |i| Channel::from_shared(stack.url(i)).map(|e| e.connect_lazy());
    let mut emploi = EmploiServiceClient::new(channel(Institution::Emploi)?);
    let mut social = SocialServiceClient::new(channel(Institution::Social)?);
    let mut written = vec![];
    for (institution, name) in [
        (Institution::Emploi, "emploi"),
        (Institution::Social, "social"),
    ] {
        for (format, extension) in [
            (v1::DocumentFormat::Html, "html"),
            (v1::DocumentFormat::Markdown, "md"),
        ] {
            let message = v1::GetProcessingRegisterRequest {
                format: format as i32,
                ..Default::default()
            };
            let request = as_dpo(stack, institution, message)?;
            let answer = match institution {
                Institution::Emploi => emploi.get_processing_register(request).await?,
                _ => social.get_processing_register(request).await?,
            };
            let body = answer
                .into_inner()
                .document
                .map(|d| d.body)
                .unwrap_or_default();
            let path = dir.join(format!("registre-{name}.{extension}"));
            std::fs::write(&path, body)?;
            written.push(path);
        }
    }
    // The first person who entered support, as the social side's log shows.
    let search = v1::SearchAuditRequest {
        purpose: v1::Purpose::GlobalSupport as i32,
        decision: v1::AuditDecision::Allowed as i32,
        limit: 1,
        ..Default::default()
    };
    let found = social
        .search_audit(as_dpo(stack, Institution::Social, search)?)
        .await?
        .into_inner();
    if let Some(record) = found.records.first() {
        let report = v1::GetSubjectAccessReportRequest {
            case_id: record.case_id.clone(),
            format: v1::DocumentFormat::Html as i32,
            joint: true,
        };
        let answer = social
            .get_subject_access_report(as_dpo(stack, Institution::Social, report)?)
            .await?;
        let body = answer
            .into_inner()
            .document
            .map(|d| d.body)
            .unwrap_or_default();
        let path = dir.join(format!("acces-{}.html", record.case_id));
        std::fs::write(&path, body)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.between(3, 12);
            assert_eq!(x, b.between(3, 12));
            assert!((3..=12).contains(&x));
        }
    }

    #[test]
    fn a_hidden_bar_s_line_says_how_far_and_how_fast() {
        let tally = Tally {
            entered: 12,
            rpc_calls: 3_456,
            ..Tally::default()
        };
        let line = progress_line(400, 10_000, 37, &tally, Duration::from_secs(20));
        assert_eq!(
            line,
            "replay: 400/10000 personnes · jour 37 · 12 entrées, 3456 appels gRPC · 20 personnes/s · 20 s"
        );
    }
}
