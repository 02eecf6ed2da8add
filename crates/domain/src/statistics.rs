//! The committee's counts, kept up to date as cases change instead of being
//! recomputed from the cases: each case contributes counts that depend only
//! on its current state ([`contributions`]); a change replaces the case's old
//! contributions by its new ones ([`difference`]) in the transaction that
//! makes it. Reading the figures then costs the size of the counts (months ×
//! offices × networks × keys), not the number of cases.
//!
//! Each count is made at one side only, so that the two institutions' counts
//! add up without counting a person twice: a referral where it was written,
//! its outcome where it was received, an entry and what follows where the
//! person signed, the queue and the follow-up at the employment side,
//! exclusive social support at the social side.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Europe::Paris;
use serde::{Deserialize, Serialize};

use crate::case::{Case, CaseState, ReferralState, Track};
use crate::orientation::Orientation;
use crate::person::{BarrierCategory, Participant};
use crate::vocabulary::Institution;

/// Where one count falls: a measure, the month it happened (Europe/Paris),
/// the referring office and network, and the measure's breakdown key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CubeKey {
    pub measure: String,
    /// YYYY-MM.
    pub month: String,
    pub office: String,
    /// emploi, social, or association (under the Département's delegation).
    pub network: String,
    /// Empty for a measure without breakdown.
    pub key: String,
}

/// What a measure counts, and how it may be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Persons (or actions), by month: published under secrecy.
    Flow,
    /// Persons in a state now, by the month they entered it.
    Stock,
    /// A sum of days: published only as an average over enough persons.
    Days,
}

/// One of the committee's measures.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub code: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    /// Values of a sensitive attribute: no 0 % or 100 % cell.
    pub sensitive: bool,
    /// The keys always shown, in order (others found are added after them).
    pub keys: &'static [&'static str],
}

const fn measure(code: &'static str, label: &'static str, kind: Kind) -> Measure {
    Measure {
        code,
        label,
        kind,
        sensitive: false,
        keys: &[],
    }
}

const fn keyed(
    code: &'static str,
    label: &'static str,
    sensitive: bool,
    keys: &'static [&'static str],
) -> Measure {
    Measure {
        code,
        label,
        kind: Kind::Flow,
        sensitive,
        keys,
    }
}

pub const REFERRALS: Measure = measure("referrals", "Orientations (fiches de liaison)", Kind::Flow);
pub const REFERRAL_OUTCOMES: Measure = keyed(
    "referral_outcomes",
    "Suites données aux orientations",
    false,
    &["accepted", "expired"],
);
pub const KEPT_OUT: Measure = measure(
    "kept_out_at_diagnosis",
    "Non-intégrations au diagnostic",
    Kind::Flow,
);
pub const AWAITING_VALIDATION: Measure = Measure {
    keys: &["emploi", "social"],
    ..measure(
        "awaiting_validation",
        "Diagnostics en attente de validation, par partie",
        Kind::Stock,
    )
};
pub const ENTRIES: Measure = measure("entries", "Entrées en accompagnement", Kind::Flow);
pub const ENTRY_DELAY: Measure = keyed(
    "entry_delay",
    "Délai orientation → entrée (jours)",
    false,
    &["0-7", "8-14", "15-21", "22-30", "31-60", "61+"],
);
pub const DELAY_DAYS: Measure = Measure {
    keys: &[
        "referral_to_entry",
        "referral_to_diagnosis",
        "diagnosis_to_entry",
        "diagnosed",
    ],
    ..measure("delay_days", "Délais cumulés (jours)", Kind::Days)
};
pub const IN_PROGRESS: Measure = measure("in_progress", "En cours d'accompagnement", Kind::Stock);
pub const QUEUED: Measure = measure("queued", "En attente d'une place", Kind::Stock);
pub const EXITS: Measure = keyed(
    "exits",
    "Sorties par type",
    false,
    &["job", "training", "other"],
);
pub const AGE_BAND: Measure = keyed(
    "age_band",
    "Âge à l'orientation",
    false,
    &[
        "moins de 26 ans",
        "26-44 ans",
        "45-54 ans",
        "55 ans et plus",
    ],
);
pub const RSA: Measure = keyed("rsa", "Bénéficiaires du RSA", true, &["rsa", "hors rsa"]);
pub const BARRIERS: Measure = keyed("barriers", "Typologie des freins", true, &[]);
pub const SEX: Measure = keyed(
    "sex",
    "Sexe (entrées)",
    false,
    &["female", "male", "unknown"],
);
pub const EDUCATION: Measure = keyed(
    "education",
    "Niveau de formation (entrées)",
    false,
    &["isced_0_2", "isced_3_4", "isced_5_8", "unknown"],
);
pub const DISABILITY: Measure = keyed(
    "disability",
    "Handicap reconnu (entrées)",
    true,
    &["declared", "not_declared", "undisclosed", "unknown"],
);
/// The ESF common output indicators for participants (regulation 1304/2013,
/// annex I) that the questionnaire and the referral give. A person counts in
/// every one that applies; "participants" is the whole.
pub const ESF_PARTICIPANTS: Measure = keyed(
    "esf_participants",
    "FSE : indicateurs de réalisation (participants)",
    false,
    &[
        "participants",
        "CO01_unemployed",
        "CO02_long_term_unemployed",
        "CO03_inactive",
        "CO06_below_25",
        "CO07_above_54",
        "CO09_isced_0_2",
        "CO10_isced_3_4",
        "CO11_isced_5_8",
        "CO12_jobless_household",
        "CO14_single_adult_with_children",
    ],
);
/// ESF results on leaving that the exits table does not already give
/// (in employment and in training on leaving are its job and training columns).
pub const ESF_RESULTS: Measure = keyed(
    "esf_results",
    "FSE : résultats à la sortie",
    false,
    &["CR01_job_searching", "CR03_qualification"],
);
pub const FOLLOW_UP: Measure = keyed(
    "follow_up",
    "Suivi dans l'emploi après une sortie en emploi",
    false,
    &["in_employment", "not_in_employment"],
);
pub const ACTIONS: Measure = keyed("actions", "Actions mobilisées, par thème", false, &[]);
pub const EXCLUSIVE_ENTRIES: Measure = measure(
    "exclusive_entries",
    "Entrées en accompagnement social exclusif (axe 3)",
    Kind::Flow,
);
pub const EXCLUSIVE_IN_PROGRESS: Measure = measure(
    "exclusive_in_progress",
    "En accompagnement social exclusif",
    Kind::Stock,
);

/// First orientations into a parcours, counted by the side that decided.
pub const ORIENTATIONS: Measure = keyed(
    "orientations",
    "Personnes orientées dans un parcours, par parcours",
    false,
    &["emploi", "socio_professionnel", "social"],
);
/// Changes of parcours, "from->to", counted by the side that decided.
pub const PARCOURS_CHANGES: Measure = keyed(
    "parcours_changes",
    "Changements de parcours (de -> vers)",
    false,
    &["socio_professionnel->emploi", "socio_professionnel->social"],
);
/// Entries into accompagnement global by the parcours the person was in.
pub const ENTRIES_BY_PARCOURS: Measure = keyed(
    "entries_by_parcours",
    "Entrées en accompagnement global, par parcours d'origine",
    false,
    &["socio_professionnel"],
);

/// Every measure, in the committee's reading order.
pub const MEASURES: &[Measure] = &[
    REFERRALS,
    REFERRAL_OUTCOMES,
    KEPT_OUT,
    AWAITING_VALIDATION,
    ENTRIES,
    ENTRY_DELAY,
    DELAY_DAYS,
    IN_PROGRESS,
    QUEUED,
    EXITS,
    AGE_BAND,
    RSA,
    BARRIERS,
    SEX,
    EDUCATION,
    DISABILITY,
    ESF_PARTICIPANTS,
    ESF_RESULTS,
    FOLLOW_UP,
    ACTIONS,
    EXCLUSIVE_ENTRIES,
    EXCLUSIVE_IN_PROGRESS,
    ORIENTATIONS,
    PARCOURS_CHANGES,
    ENTRIES_BY_PARCOURS,
];

pub fn measure_named(code: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.code == code)
}

/// A refusal's key in [`REFERRAL_OUTCOMES`]: its reason, under "refused:".
pub const REFUSED_PREFIX: &str = "refused:";

/// What the referral says that the counts use; no name, no contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralFacts {
    pub birth_date: NaiveDate,
    pub rsa_beneficiary: bool,
    pub registered: bool,
    pub registration_date: Option<NaiveDate>,
    pub barriers: Vec<BarrierCategory>,
    pub association: bool,
}

/// Everything one case's counts depend on, as one institution holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    pub own: Institution,
    pub case: Case,
    /// The referral was written here (not received from the partner).
    pub referred_here: bool,
    /// The person signed here: this side reports the entry and what follows.
    pub entry_recorded_here: bool,
    pub referral: Option<ReferralFacts>,
    pub diagnosis_authors: Vec<Institution>,
    /// Actions of this institution's own plan, by theme code.
    pub plan_actions: Vec<(String, u64)>,
    /// The case's orientations held here, oldest first.
    pub orientations: Vec<Orientation>,
}

/// The month an instant falls in, in French time.
pub fn month(at: DateTime<Utc>) -> String {
    at.with_timezone(&Paris).format("%Y-%m").to_string()
}

fn age_band(age: u32) -> &'static str {
    match age {
        ..=25 => "moins de 26 ans",
        26..=44 => "26-44 ans",
        45..=54 => "45-54 ans",
        _ => "55 ans et plus",
    }
}

fn delay_bucket(days: i64) -> &'static str {
    match days {
        ..=7 => "0-7",
        8..=14 => "8-14",
        15..=21 => "15-21",
        22..=30 => "22-30",
        31..=60 => "31-60",
        _ => "61+",
    }
}

/// Whole days between two instants, as the agreements count delays.
fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_days().max(0)
}

/// The counts one case contributes now.
pub fn contributions(f: &CaseFacts) -> Vec<(CubeKey, i64)> {
    let c = &f.case;
    let network = match &f.referral {
        Some(r) if r.association => "association",
        _ => c.referring_network.code(),
    };
    let mut out: Vec<(CubeKey, i64)> = vec![];
    let mut add = |m: &Measure, at: DateTime<Utc>, key: &str, n: i64| {
        out.push((
            CubeKey {
                measure: m.code.to_owned(),
                month: month(at),
                office: c.office_code.clone(),
                network: network.to_owned(),
                key: key.to_owned(),
            },
            n,
        ));
    };
    if f.referred_here {
        add(&REFERRALS, c.referred_at, "", 1);
        if let Some(r) = &f.referral {
            let age = c
                .referred_at
                .date_naive()
                .years_since(r.birth_date)
                .unwrap_or(0);
            add(&AGE_BAND, c.referred_at, age_band(age), 1);
            let rsa = if r.rsa_beneficiary { "rsa" } else { "hors rsa" };
            add(&RSA, c.referred_at, rsa, 1);
            for b in &r.barriers {
                add(&BARRIERS, c.referred_at, b.code(), 1);
            }
        }
    } else {
        // The receiving side: what became of the referral.
        if let Some(decided) = c.referral_decided_at {
            match c.referral_state {
                ReferralState::Accepted => add(&REFERRAL_OUTCOMES, decided, "accepted", 1),
                ReferralState::Expired => add(&REFERRAL_OUTCOMES, decided, "expired", 1),
                ReferralState::Refused => {
                    let reason = c.refusal_reason.as_deref().unwrap_or("unspecified");
                    add(
                        &REFERRAL_OUTCOMES,
                        decided,
                        &format!("{REFUSED_PREFIX}{reason}"),
                        1,
                    );
                }
                ReferralState::Withdrawn => add(&REFERRAL_OUTCOMES, decided, "withdrawn", 1),
                ReferralState::Pending => {}
            }
        }
        // A person who withdrew their consent was not kept out by the diagnosis.
        if c.state == CaseState::NotEntered
            && c.referral_state == ReferralState::Accepted
            && c.exit_reason != Some(crate::case::ExitReason::ConsentWithdrawn)
        {
            add(&KEPT_OUT, c.diagnosed_at.unwrap_or(c.referred_at), "", 1);
        }
        let open = matches!(
            c.state,
            CaseState::Referred | CaseState::Diagnosed | CaseState::Queued | CaseState::Active
        );
        let partner_diagnosed = f.diagnosis_authors.iter().any(|a| *a != f.own);
        let own_diagnosed = f.diagnosis_authors.contains(&f.own);
        if open && partner_diagnosed && !own_diagnosed {
            add(
                &AWAITING_VALIDATION,
                c.diagnosed_at.unwrap_or(c.referred_at),
                f.own.code(),
                1,
            );
        }
    }
    if f.entry_recorded_here
        && let Some(entered) = c.entered_at
    {
        add(&ENTRIES, entered, "", 1);
        if c.track == Track::Global
            && let Some(at_entry) = f
                .orientations
                .iter()
                .rev()
                .find(|o| o.decided_at <= entered)
        {
            add(&ENTRIES_BY_PARCOURS, entered, at_entry.parcours.code(), 1);
        }
        let total = days(c.referred_at, entered);
        add(&ENTRY_DELAY, entered, delay_bucket(total), 1);
        add(&DELAY_DAYS, entered, "referral_to_entry", total);
        if let Some(diagnosed) = c.diagnosed_at.filter(|d| *d <= entered) {
            add(&DELAY_DAYS, entered, "diagnosed", 1);
            add(
                &DELAY_DAYS,
                entered,
                "referral_to_diagnosis",
                days(c.referred_at, diagnosed),
            );
            add(
                &DELAY_DAYS,
                entered,
                "diagnosis_to_entry",
                days(diagnosed, entered),
            );
        }
        if c.state == CaseState::Active && c.track == Track::Global {
            add(&IN_PROGRESS, entered, "", 1);
        }
        participant_counts(
            &mut add,
            entered,
            c.participant.as_ref(),
            f.referral.as_ref(),
        );
        if let (CaseState::Exited, Some(exited), Some(reason)) =
            (c.state, c.exited_at, c.exit_reason)
        {
            add(&EXITS, exited, reason.exit_type().code(), 1);
            // Still looking for work on leaving: neither job nor training,
            // and still registered.
            if reason.exit_type() == crate::case::ExitType::Other
                && reason != crate::case::ExitReason::Deregistered
            {
                add(&ESF_RESULTS, exited, "CR01_job_searching", 1);
            }
            if c.qualification_gained {
                add(&ESF_RESULTS, exited, "CR03_qualification", 1);
            }
        }
    }
    // Each side counts the actions of its own plan: the two plans are
    // distinct, so the sides add up.
    for (theme, n) in &f.plan_actions {
        let at = c.entered_at.unwrap_or(c.referred_at);
        add(&ACTIONS, at, theme, i64::try_from(*n).unwrap_or(i64::MAX));
    }
    if f.own == Institution::Emploi {
        if c.state == CaseState::Queued
            && let Some(at) = c.queued_at
        {
            add(&QUEUED, at, "", 1);
        }
        if let (Some(due), Some(found)) = (c.follow_up_due_at, c.follow_up_in_employment) {
            let key = if found {
                "in_employment"
            } else {
                "not_in_employment"
            };
            add(&FOLLOW_UP, due, key, 1);
        }
    }
    if f.own == Institution::Social
        && let Some(started) = c.exclusive_started_at
    {
        add(&EXCLUSIVE_ENTRIES, started, "", 1);
        if c.state == CaseState::Active && c.track == Track::SocialExclusive {
            add(&EXCLUSIVE_IN_PROGRESS, started, "", 1);
        }
    }
    out.extend(orientation_counts(f.own, &f.orientations));
    out
}

/// What a person's orientations contribute, case or not yet: each one this
/// side decided counts where and when it was decided, the first as an
/// orientation, the next ones as a change from the parcours before it
/// (whichever side decided that one).
pub fn orientation_counts(own: Institution, orientations: &[Orientation]) -> Vec<(CubeKey, i64)> {
    let mut out = vec![];
    let mut before: Option<&Orientation> = None;
    for o in orientations {
        if o.decided_by_institution == own {
            let (m, key) = match before {
                None => (&ORIENTATIONS, o.parcours.code().to_owned()),
                Some(b) => (
                    &PARCOURS_CHANGES,
                    format!("{}->{}", b.parcours.code(), o.parcours.code()),
                ),
            };
            out.push((
                CubeKey {
                    measure: m.code.to_owned(),
                    month: month(o.decided_at),
                    office: o.office_code.clone(),
                    network: own.network().map_or("", |n| n.code()).to_owned(),
                    key,
                },
                1,
            ));
        }
        before = Some(o);
    }
    out
}

/// The participant's counts at entry; "unknown" where the questionnaire
/// was not filled in, so that the columns still add up to the entries.
fn participant_counts(
    add: &mut impl FnMut(&Measure, DateTime<Utc>, &str, i64),
    entered: DateTime<Utc>,
    p: Option<&Participant>,
    r: Option<&ReferralFacts>,
) {
    add(&SEX, entered, p.map_or("unknown", |p| p.sex.code()), 1);
    add(
        &EDUCATION,
        entered,
        p.map_or("unknown", |p| p.education.code()),
        1,
    );
    add(
        &DISABILITY,
        entered,
        p.map_or("unknown", |p| p.disability.code()),
        1,
    );
    let mut esf = |key: &str| add(&ESF_PARTICIPANTS, entered, key, 1);
    esf("participants");
    if let Some(r) = r {
        if r.registered {
            esf("CO01_unemployed");
            // Long-term: registered for a year or more on entry.
            if r.registration_date
                .is_some_and(|d| (entered.date_naive() - d).num_days() >= 365)
            {
                esf("CO02_long_term_unemployed");
            }
        } else {
            esf("CO03_inactive");
        }
        let age = entered.date_naive().years_since(r.birth_date).unwrap_or(0);
        if age < 25 {
            esf("CO06_below_25");
        }
        if age > 54 {
            esf("CO07_above_54");
        }
    }
    if let Some(p) = p {
        let level = match p.education {
            crate::person::EducationLevel::Isced0To2 => "CO09_isced_0_2",
            crate::person::EducationLevel::Isced3To4 => "CO10_isced_3_4",
            crate::person::EducationLevel::Isced5To8 => "CO11_isced_5_8",
        };
        esf(level);
        if p.jobless_household {
            esf("CO12_jobless_household");
        }
        if p.single_adult_with_children {
            esf("CO14_single_adult_with_children");
        }
    }
}

/// Counts summed by key; zeros dropped.
pub fn summed(counts: impl IntoIterator<Item = (CubeKey, i64)>) -> BTreeMap<CubeKey, i64> {
    let mut out = BTreeMap::new();
    for (k, n) in counts {
        *out.entry(k).or_insert(0) += n;
    }
    out.retain(|_, n| *n != 0);
    out
}

/// What a change of one case does to the counts: its new contributions
/// minus its old ones, zeros dropped.
pub fn difference(before: &[(CubeKey, i64)], after: &[(CubeKey, i64)]) -> BTreeMap<CubeKey, i64> {
    summed(
        after
            .iter()
            .cloned()
            .chain(before.iter().map(|(k, n)| (k.clone(), -n))),
    )
}

/// The quarter a YYYY-MM month belongs to: YYYY-T1…T4.
pub fn quarter(month: &str) -> String {
    let (year, m) = month.split_once('-').unwrap_or((month, "01"));
    let m: u32 = m.parse().unwrap_or(1);
    format!("{year}-T{}", (m - 1) / 3 + 1)
}

pub fn year(month: &str) -> String {
    month.split('-').next().unwrap_or(month).to_owned()
}

/// The calendar year of a date, for targets set by year.
pub fn year_of(at: DateTime<Utc>) -> i32 {
    at.with_timezone(&Paris).year()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{CaseExit, ExitReason, Referral};
    use crate::person::{DisabilityDeclaration, EducationLevel, Sex};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").to_utc()
    }

    fn facts(case: Case, here: bool) -> CaseFacts {
        CaseFacts {
            own: Institution::Emploi,
            case,
            referred_here: !here,
            entry_recorded_here: here,
            referral: Some(ReferralFacts {
                birth_date: NaiveDate::from_ymd_opt(2001, 6, 1).expect("valid"),
                rsa_beneficiary: true,
                registered: true,
                registration_date: NaiveDate::from_ymd_opt(2022, 1, 10),
                barriers: vec![BarrierCategory::Mobility],
                association: false,
            }),
            diagnosis_authors: vec![],
            plan_actions: vec![],
            orientations: vec![],
        }
    }

    fn referred() -> Case {
        let referral = Referral {
            case_id: "k".into(),
            referring_network: crate::vocabulary::Network::Social,
            referred_by: "sw".into(),
            office_code: "CDAS-01".into(),
            person: crate::person::PersonIdentity {
                first_name: "A".into(),
                last_name: "B".into(),
                birth_date: NaiveDate::from_ymd_opt(2001, 6, 1).expect("valid"),
                jobseeker_number: None,
            },
            contact: crate::person::Contact::default(),
            barriers: vec![],
            employment: crate::person::EmploymentSummary::default(),
            referred_at: at("2024-03-04T09:00:00Z"),
            consent_id: "c".into(),
            checks: vec![],
            association_id: None,
            orientation: None,
        };
        Case::referred(&referral, 45)
    }

    fn get(counts: &BTreeMap<CubeKey, i64>, measure: &str, key: &str) -> i64 {
        counts
            .iter()
            .filter(|(k, _)| k.measure == measure && k.key == key)
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn an_exit_moves_a_person_from_in_progress_to_exits_and_nothing_else() {
        let mut case = referred();
        case.referral_state = ReferralState::Accepted;
        case.state = CaseState::Active;
        case.diagnosed_at = Some(case.referred_at + chrono::Duration::days(9));
        case.entered_at = Some(case.referred_at + chrono::Duration::days(20));
        case.participant = Some(Participant {
            sex: Sex::Female,
            education: EducationLevel::Isced3To4,
            jobless_household: true,
            single_adult_with_children: false,
            disability: DisabilityDeclaration::Undisclosed,
        });
        let before = contributions(&facts(case.clone(), true));
        let entered = summed(before.clone());
        assert_eq!(get(&entered, "entries", ""), 1);
        assert_eq!(get(&entered, "in_progress", ""), 1);
        assert_eq!(get(&entered, "delay_days", "referral_to_entry"), 20);
        assert_eq!(get(&entered, "delay_days", "referral_to_diagnosis"), 9);
        assert_eq!(get(&entered, "entry_delay", "15-21"), 1);
        assert_eq!(get(&entered, "sex", "female"), 1);
        assert_eq!(get(&entered, "esf_participants", "CO06_below_25"), 1);
        assert_eq!(
            get(&entered, "esf_participants", "CO12_jobless_household"),
            1
        );
        // The referring side's counts are not this side's.
        assert_eq!(get(&entered, "referrals", ""), 0);

        let exit = CaseExit {
            reason: ExitReason::Job,
            exited_at: case.entered_at.expect("entered") + chrono::Duration::days(100),
        };
        case.exit(&exit, None).expect("exits");
        case.qualification_gained = true;
        let after = contributions(&facts(case, true));
        let change = difference(&before, &after);
        let mut moved: Vec<(String, String, i64)> = change
            .iter()
            .map(|(k, n)| (k.measure.clone(), k.key.clone(), *n))
            .collect();
        moved.sort();
        assert_eq!(
            moved,
            vec![
                ("esf_results".into(), "CR03_qualification".into(), 1),
                ("exits".into(), "job".into(), 1),
                ("in_progress".into(), String::new(), -1),
            ]
        );
    }

    #[test]
    fn the_referring_side_counts_the_referral_and_its_public() {
        let counts = summed(contributions(&facts(referred(), false)));
        assert_eq!(get(&counts, "referrals", ""), 1);
        assert_eq!(get(&counts, "rsa", "rsa"), 1);
        assert_eq!(get(&counts, "barriers", "mobilite"), 1);
        assert_eq!(get(&counts, "entries", ""), 0);
    }

    #[test]
    fn months_are_french_and_roll_up_to_quarters_and_years() {
        // 23:30 UTC on 31 March is already April in Paris.
        assert_eq!(month(at("2021-03-31T23:30:00Z")), "2021-04");
        assert_eq!(quarter("2021-04"), "2021-T2");
        assert_eq!(quarter("2021-12"), "2021-T4");
        assert_eq!(year("2021-04"), "2021");
    }
}
