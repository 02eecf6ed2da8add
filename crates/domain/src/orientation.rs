//! Orientation into a parcours (law for full employment of 18 December 2023):
//! where the agreement organises parcours, each person is oriented to one of
//! them on a grid of criteria, with an organisme référent, by the side that
//! decides (the Département's president for an RSA beneficiary, France
//! Travail otherwise). Accompagnement global is an offer of a parcours: a
//! referral to it is taken only from a parcours that opens it. A change of
//! parcours during the support is an event of the case the partner hears of.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agreement::AgreementError;
use crate::error::{DomainError, FieldError};
use crate::ids::CaseId;
use crate::vocabulary::{Institution, Side, coded_enum};

coded_enum!(
    /// The three modalities of parcours.
    Parcours {
        Emploi => "emploi",
        SocioProfessionnel => "socio_professionnel",
        Social => "social",
    }
);

coded_enum!(
    /// An offer of support a parcours opens.
    Offer {
        /// Accompagnement global (axe 2).
        GlobalSupport => "global_support",
        /// Exclusive social support (axe 3).
        ExclusiveSocialSupport => "exclusive_social_support",
    }
);

coded_enum!(
    /// The organisation that follows the person in their parcours.
    OrganismeReferent {
        FranceTravail => "france_travail",
        Departement => "departement",
        MissionLocale => "mission_locale",
        CapEmploi => "cap_emploi",
    }
);

/// Where the parcours apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesOn {
    /// On the listed offices only (a pilot).
    Offices,
    /// On the whole territory of the agreement.
    Territory,
}

/// One parcours as the agreement deploys it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcoursTrack {
    pub code: Parcours,
    pub label: String,
    /// The offers the parcours opens.
    pub offers: Vec<Offer>,
    /// Who may be the person's organisme référent on it.
    pub referents: Vec<OrganismeReferent>,
}

/// One criterion of the orientation grid and the answers it admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub code: String,
    pub label: String,
    pub answers: Vec<String>,
}

/// The agreement's parcours: where they apply, which ones, and the grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcoursRules {
    /// The article or text that sets them.
    pub source: String,
    pub applies_on: AppliesOn,
    /// The offices where they apply, when `applies_on = "offices"`.
    #[serde(default)]
    pub offices: Vec<String>,
    pub tracks: Vec<ParcoursTrack>,
    pub criteria: Vec<Criterion>,
}

/// A criterion answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionAnswer {
    pub criterion: String,
    pub answer: String,
}

/// What an agent submits; the service adds who decided, where and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrientationDraft {
    pub case_id: CaseId,
    pub office_code: String,
    pub parcours: Parcours,
    pub criteria: Vec<CriterionAnswer>,
    pub referent: OrganismeReferent,
    pub rsa_beneficiary: bool,
}

/// An orientation decided: the parcours, its organisme référent, who
/// decided and when. The criteria stay with the side that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orientation {
    pub case_id: CaseId,
    pub office_code: String,
    pub parcours: Parcours,
    /// The grid as answered; empty in a copy received from the partner.
    #[serde(default)]
    pub criteria: Vec<CriterionAnswer>,
    pub referent: OrganismeReferent,
    pub rsa_beneficiary: bool,
    pub decided_by_institution: Institution,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

impl OrientationDraft {
    pub fn decide(self, side: Side, agent: String, at: DateTime<Utc>) -> Orientation {
        Orientation {
            case_id: self.case_id,
            office_code: self.office_code,
            parcours: self.parcours,
            criteria: self.criteria,
            referent: self.referent,
            rsa_beneficiary: self.rsa_beneficiary,
            decided_by_institution: side.institution(),
            decided_by: agent,
            decided_at: at,
        }
    }
}

impl Orientation {
    /// What the partner hears of it: everything but the grid, which may say
    /// something of the person's health and stays where it was answered.
    pub fn for_partner(&self) -> Orientation {
        Orientation {
            criteria: vec![],
            ..self.clone()
        }
    }
}

/// Who decides an orientation: the Département's president for an RSA
/// beneficiary (code de l'action sociale et des familles, art. L. 262-29),
/// France Travail for anyone else (code du travail, art. L. 5411-5-1).
pub fn deciding_side(rsa_beneficiary: bool) -> Side {
    if rsa_beneficiary {
        Side::Social
    } else {
        Side::Emploi
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> AgreementError {
    AgreementError {
        key: key.into(),
        reason: reason.into(),
    }
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ParcoursRules {
    /// Consistency no type expresses; `offices` are the agreement's codes.
    pub fn validate<'a>(
        &self,
        offices: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), AgreementError> {
        if self.source.trim().is_empty() {
            return Err(invalid("parcours.source", "must name the article"));
        }
        match self.applies_on {
            AppliesOn::Offices if self.offices.is_empty() => {
                return Err(invalid(
                    "parcours.offices",
                    "must list the offices where the parcours apply",
                ));
            }
            AppliesOn::Territory if !self.offices.is_empty() => {
                return Err(invalid(
                    "parcours.offices",
                    "must be empty when the parcours apply on the whole territory",
                ));
            }
            _ => {}
        }
        for (i, office) in self.offices.iter().enumerate() {
            if !offices.clone().any(|o| o == office) {
                return Err(invalid(
                    format!("parcours.offices[{i}]"),
                    format!("{office} is not an office of the agreement"),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, track) in self.tracks.iter().enumerate() {
            if !seen.insert(track.code) {
                return Err(invalid(format!("parcours.tracks[{i}].code"), "is repeated"));
            }
            if track.referents.is_empty() {
                return Err(invalid(
                    format!("parcours.tracks[{i}].referents"),
                    "must name at least one organisme référent",
                ));
            }
        }
        if self.tracks.is_empty() {
            return Err(invalid("parcours.tracks", "is empty"));
        }
        if self.criteria.is_empty() {
            return Err(invalid("parcours.criteria", "is empty"));
        }
        let mut codes = BTreeSet::new();
        for (i, c) in self.criteria.iter().enumerate() {
            if !is_code(&c.code) || !codes.insert(c.code.as_str()) {
                return Err(invalid(
                    format!("parcours.criteria[{i}].code"),
                    "must be a lowercase code, once",
                ));
            }
            let mut answers = BTreeSet::new();
            if c.answers.is_empty()
                || !c
                    .answers
                    .iter()
                    .all(|a| is_code(a) && answers.insert(a.as_str()))
            {
                return Err(invalid(
                    format!("parcours.criteria[{i}].answers"),
                    "must list lowercase codes, each once",
                ));
            }
        }
        Ok(())
    }

    /// Whether the parcours apply on `office_code`.
    pub fn apply_on(&self, office_code: &str) -> bool {
        match self.applies_on {
            AppliesOn::Territory => true,
            AppliesOn::Offices => self.offices.iter().any(|o| o == office_code),
        }
    }

    pub fn track(&self, parcours: Parcours) -> Option<&ParcoursTrack> {
        self.tracks.iter().find(|t| t.code == parcours)
    }

    /// The parcours deployed that open `offer`.
    pub fn opening(&self, offer: Offer) -> impl Iterator<Item = Parcours> + '_ {
        self.tracks
            .iter()
            .filter(move |t| t.offers.contains(&offer))
            .map(|t| t.code)
    }

    /// Checks an orientation an agent of `side` submits: the office, the
    /// parcours and its référent, the whole grid, and that `side` decides.
    pub fn check(&self, side: Side, draft: &OrientationDraft) -> Result<(), DomainError> {
        if !self.apply_on(&draft.office_code) {
            return Err(FieldError::new(
                "orientation.office_code",
                format!("the parcours apply on {} only", self.offices.join(", ")),
            )
            .into());
        }
        let Some(track) = self.track(draft.parcours) else {
            return Err(FieldError::new(
                "orientation.parcours",
                format!(
                    "parcours {} is not deployed by the agreement",
                    draft.parcours
                ),
            )
            .into());
        };
        if !track.referents.contains(&draft.referent) {
            return Err(FieldError::new(
                "orientation.referent",
                format!(
                    "is not an organisme référent of parcours {} ({})",
                    track.code,
                    track
                        .referents
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        }
        for (i, answer) in draft.criteria.iter().enumerate() {
            let field = |f: &str| format!("criteria[{i}].{f}");
            let Some(criterion) = self.criteria.iter().find(|c| c.code == answer.criterion) else {
                return Err(
                    FieldError::new(field("criterion"), "is not a criterion of the grid").into(),
                );
            };
            if draft.criteria[..i]
                .iter()
                .any(|a| a.criterion == answer.criterion)
            {
                return Err(FieldError::new(field("criterion"), "is answered twice").into());
            }
            if !criterion.answers.contains(&answer.answer) {
                return Err(FieldError::new(
                    field("answer"),
                    format!("must be one of {}", criterion.answers.join(", ")),
                )
                .into());
            }
        }
        if let Some(missing) = self
            .criteria
            .iter()
            .find(|c| !draft.criteria.iter().any(|a| a.criterion == c.code))
        {
            return Err(FieldError::new(
                "criteria",
                format!("must answer {} ({})", missing.code, missing.label),
            )
            .into());
        }
        let decides = deciding_side(draft.rsa_beneficiary);
        if decides != side {
            return Err(DomainError::FailedPrecondition(if draft.rsa_beneficiary {
                "the orientation of an RSA beneficiary is decided by the Département's president (CASF art. L. 262-29): record it at the social side".into()
            } else {
                "the orientation of a jobseeker who is not an RSA beneficiary is decided by France Travail: record it at the employment side".into()
            }));
        }
        Ok(())
    }

    /// Checks that a referral to accompagnement global on `office_code`
    /// comes from a parcours that opens it; `field` names the orientation.
    pub fn check_referral(
        &self,
        office_code: &str,
        orientation: Option<&Orientation>,
        field: &str,
    ) -> Result<(), DomainError> {
        if !self.apply_on(office_code) {
            return Ok(());
        }
        let opening: Vec<&str> = self
            .opening(Offer::GlobalSupport)
            .map(|p| p.code())
            .collect();
        let Some(orientation) = orientation else {
            return Err(DomainError::FailedPrecondition(format!(
                "{field}: on office {office_code} the person is first oriented (RecordOrientation) to a parcours that opens accompagnement global ({})",
                opening.join(", ")
            )));
        };
        let opens = self
            .track(orientation.parcours)
            .is_some_and(|t| t.offers.contains(&Offer::GlobalSupport));
        if !opens {
            return Err(DomainError::FailedPrecondition(format!(
                "{field}: accompagnement global is an offer of parcours {}, not of parcours {}",
                opening.join(", "),
                orientation.parcours
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::shipped;

    fn draft(parcours: Parcours, rsa: bool) -> OrientationDraft {
        let rules = shipped("ille-et-vilaine-2023")
            .expect("agreement")
            .parcours
            .expect("parcours");
        OrientationDraft {
            case_id: CaseId::from("0190a0b0-0000-7000-8000-000000000001"),
            office_code: "AD-REDON-VALLONS".into(),
            parcours,
            criteria: rules
                .criteria
                .iter()
                .map(|c| CriterionAnswer {
                    criterion: c.code.clone(),
                    answer: c.answers[0].clone(),
                })
                .collect(),
            referent: rules
                .track(parcours)
                .map(|t| t.referents[0])
                .expect("track"),
            rsa_beneficiary: rsa,
        }
    }

    fn rules() -> ParcoursRules {
        shipped("ille-et-vilaine-2023")
            .expect("agreement")
            .parcours
            .expect("Ille-et-Vilaine deploys the three parcours")
    }

    fn field_of(e: DomainError) -> String {
        match e {
            DomainError::Invalid(f) => f.field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn ille_et_vilaine_deploys_three_parcours_on_the_pilot_and_global_support_on_the_socio_professional_one()
     {
        let r = rules();
        let codes: Vec<_> = r.tracks.iter().map(|t| t.code).collect();
        assert_eq!(
            codes,
            [
                Parcours::Emploi,
                Parcours::SocioProfessionnel,
                Parcours::Social
            ]
        );
        assert_eq!(
            r.opening(Offer::GlobalSupport).collect::<Vec<_>>(),
            [Parcours::SocioProfessionnel]
        );
        assert!(r.apply_on("AD-REDON-VALLONS"));
        assert!(r.apply_on("PE-REDON"));
        assert!(!r.apply_on("AD-RENNES"));
        assert!(!r.apply_on("PE-RENNES"));
        // The national grid: employment, qualification, aspirations, six difficulties.
        assert_eq!(r.criteria.len(), 9);
        let sem = shipped("seine-et-marne-2020").expect("agreement");
        assert!(sem.parcours.is_none());
        // What each runs, for its register of processing.
        let iev = shipped("ille-et-vilaine-2023").expect("agreement");
        use crate::vocabulary::Purpose;
        assert!(iev.runs(Purpose::Orientation) && !iev.runs(Purpose::ExclusiveSocialSupport));
        assert!(!sem.runs(Purpose::Orientation) && sem.runs(Purpose::ExclusiveSocialSupport));
        assert!(iev.runs(Purpose::Referral) && sem.runs(Purpose::Referral));
    }

    #[test]
    fn the_side_that_decides_is_the_departement_for_an_rsa_beneficiary_and_france_travail_otherwise()
     {
        let r = rules();
        r.check(Side::Emploi, &draft(Parcours::Emploi, false))
            .expect("France Travail orients a jobseeker");
        r.check(Side::Social, &draft(Parcours::Social, true))
            .expect("the Département orients an RSA beneficiary");
        assert!(matches!(
            r.check(Side::Emploi, &draft(Parcours::Social, true)),
            Err(DomainError::FailedPrecondition(_))
        ));
        assert!(matches!(
            r.check(Side::Social, &draft(Parcours::Emploi, false)),
            Err(DomainError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn the_grid_is_answered_whole_once_and_from_its_answers() {
        let r = rules();
        let mut d = draft(Parcours::SocioProfessionnel, false);
        d.criteria.pop();
        assert_eq!(field_of(r.check(Side::Emploi, &d).unwrap_err()), "criteria");
        let mut d = draft(Parcours::SocioProfessionnel, false);
        d.criteria[1] = d.criteria[0].clone();
        assert_eq!(
            field_of(r.check(Side::Emploi, &d).unwrap_err()),
            "criteria[1].criterion"
        );
        let mut d = draft(Parcours::SocioProfessionnel, false);
        d.criteria[2].answer = "maybe".into();
        assert_eq!(
            field_of(r.check(Side::Emploi, &d).unwrap_err()),
            "criteria[2].answer"
        );
        let mut d = draft(Parcours::SocioProfessionnel, false);
        d.office_code = "AD-RENNES".into();
        assert_eq!(
            field_of(r.check(Side::Emploi, &d).unwrap_err()),
            "orientation.office_code"
        );
        let mut d = draft(Parcours::Social, true);
        d.referent = OrganismeReferent::CapEmploi;
        assert_eq!(
            field_of(r.check(Side::Social, &d).unwrap_err()),
            "orientation.referent"
        );
    }

    #[test]
    fn a_referral_to_global_support_comes_from_the_socio_professional_parcours_where_the_pilot_applies()
     {
        let r = rules();
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("t");
        let oriented = |p| draft(p, false).decide(Side::Emploi, "c-1".into(), at);
        r.check_referral(
            "PE-REDON",
            Some(&oriented(Parcours::SocioProfessionnel)),
            "referral",
        )
        .expect("socio-professional opens it");
        for refused in [
            r.check_referral("PE-REDON", Some(&oriented(Parcours::Emploi)), "referral"),
            r.check_referral("PE-REDON", Some(&oriented(Parcours::Social)), "referral"),
            r.check_referral("PE-REDON", None, "referral"),
        ] {
            assert!(matches!(refused, Err(DomainError::FailedPrecondition(_))));
        }
        // Outside the pilot, referrals go as before.
        r.check_referral("PE-RENNES", None, "referral")
            .expect("no parcours on Rennes");
        // The grid never crosses.
        assert!(oriented(Parcours::Social).for_partner().criteria.is_empty());
    }
}
