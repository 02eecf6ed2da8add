//! Need to know inside each institution: which cases an agent reaches, as
//! the contract's `scope` on each RPC says. The decision is made here and
//! nowhere else; the casework asks it with the case's people, and audits
//! a refusal like any other.

use passerelle_domain::{Institution, Role};

use crate::identity::Caller;

/// The contract's scope of an RPC (`passerelle.v1.CaseScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseScope {
    /// About no particular case.
    None,
    /// The case's people at the caller's institution.
    CasePeople,
    /// The partner's service, about the case its message names.
    Partner,
    /// A named habilitation, checked by the serving institution.
    Habilitation,
}

/// Who a case belongs to at one institution: the people through whom its
/// agents reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseParties {
    /// The office the case was referred to or from (its coordinator's).
    pub office_code: String,
    /// The pair member of this institution, once the person has signed.
    pub pair_member: Option<String>,
    /// The agent who referred the case from this institution.
    pub referrer: Option<String>,
    /// The authors of this institution's half of the diagnosis.
    pub diagnosis_authors: Vec<String>,
}

impl CaseParties {
    fn agents(&self) -> impl Iterator<Item = &str> {
        self.pair_member
            .iter()
            .chain(self.referrer.iter())
            .chain(self.diagnosis_authors.iter())
            .map(String::as_str)
    }

    /// Whether an agent of this institution has taken the case up.
    pub fn taken_up(&self) -> bool {
        self.agents().next().is_some()
    }
}

/// Whether `caller`, an agent of `own` institution, may reach a case whose
/// people there are `parties` (`None`: the case does not exist here yet)
/// through an RPC of `scope`. The error says why, naming no person.
pub fn may_reach(
    caller: &Caller,
    own: Institution,
    scope: CaseScope,
    parties: Option<&CaseParties>,
) -> Result<(), String> {
    match scope {
        // The allow list and the consent (crossings) or the habilitation
        // (checked by the service) decide.
        CaseScope::None | CaseScope::Partner | CaseScope::Habilitation => Ok(()),
        CaseScope::CasePeople => {
            if caller.institution != own {
                return Err("the case belongs to another institution's agents".into());
            }
            if caller.role == Role::Dpo {
                return Ok(());
            }
            let Some(parties) = parties else {
                // A new case: whoever opens it becomes one of its people.
                return Ok(());
            };
            if caller.role == Role::Coordinator {
                return match caller.office.as_deref() {
                    Some(office) if office == parties.office_code => Ok(()),
                    Some(_) => Err("this case belongs to another office than the coordinator's".into()),
                    None => Err("a coordinator's token must name their office (claim office) to reach a case".into()),
                };
            }
            if !parties.taken_up() || parties.agents().any(|a| a == caller.agent) {
                Ok(())
            } else {
                Err("this case is followed by other agents of your institution: only its pair, its referrer, the authors of its diagnosis and the coordinators reach it".into())
            }
        }
    }
}

/// Whether `caller` may read the institution's local notes of a case: its
/// pair member, the coordinator of its office, the DPO, or the note's author.
pub fn may_read_note(caller: &Caller, parties: &CaseParties, author: &str) -> bool {
    let coordinator = caller.role == Role::Coordinator
        && caller.office.as_deref() == Some(parties.office_code.as_str());
    coordinator
        || caller.role == Role::Dpo
        || parties.pair_member.as_deref() == Some(caller.agent.as_str())
        || author == caller.agent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, role: Role) -> Caller {
        Caller {
            agent: name.into(),
            institution: Institution::Emploi,
            role,
            issuer: "idp".into(),
            organisation: None,
            office: None,
        }
    }

    #[test]
    fn only_the_cases_people_reach_it_once_it_is_taken_up() {
        let own = Institution::Emploi;
        let scope = CaseScope::CasePeople;
        let taken = CaseParties {
            office_code: "A-1".into(),
            pair_member: Some("ft-pair".into()),
            referrer: None,
            diagnosis_authors: vec!["ft-diag".into()],
        };
        let reach = |who: &Caller, p: Option<&CaseParties>| may_reach(who, own, scope, p);
        assert!(reach(&agent("ft-pair", Role::Counsellor), Some(&taken)).is_ok());
        assert!(reach(&agent("ft-diag", Role::Counsellor), Some(&taken)).is_ok());
        assert!(reach(&agent("ft-other", Role::Counsellor), Some(&taken)).is_err());
        let coordinator = |office: Option<&str>| Caller {
            office: office.map(str::to_owned),
            ..agent("coord", Role::Coordinator)
        };
        assert!(reach(&coordinator(Some("A-1")), Some(&taken)).is_ok());
        assert!(reach(&coordinator(Some("A-2")), Some(&taken)).is_err());
        assert!(reach(&coordinator(None), Some(&taken)).is_err());
        assert!(reach(&agent("dpo", Role::Dpo), Some(&taken)).is_ok());
        // Awaiting its pick-up, or new: the side's agents reach it.
        assert!(
            reach(
                &agent("ft-other", Role::Counsellor),
                Some(&CaseParties::default())
            )
            .is_ok()
        );
        assert!(reach(&agent("ft-other", Role::Counsellor), None).is_ok());
        // Another institution's agent never does, whatever the scope says of people.
        let social = Caller {
            institution: Institution::Social,
            ..agent("ft-pair", Role::SocialWorker)
        };
        assert!(reach(&social, Some(&taken)).is_err());
        // Other scopes leave it to the allow list, the consent or the habilitation.
        for other in [CaseScope::None, CaseScope::Partner, CaseScope::Habilitation] {
            assert!(may_reach(&agent("x", Role::Counsellor), own, other, Some(&taken)).is_ok());
        }
    }

    #[test]
    fn local_notes_are_for_the_pair_the_coordinators_and_their_author() {
        let parties = CaseParties {
            office_code: "A-1".into(),
            pair_member: Some("ft-pair".into()),
            referrer: Some("ft-ref".into()),
            diagnosis_authors: vec![],
        };
        assert!(may_read_note(
            &agent("ft-pair", Role::Counsellor),
            &parties,
            "ft-ref"
        ));
        assert!(may_read_note(
            &agent("ft-ref", Role::Counsellor),
            &parties,
            "ft-ref"
        ));
        assert!(!may_read_note(
            &agent("ft-ref", Role::Counsellor),
            &parties,
            "ft-pair"
        ));
        let coordinator = |office: &str| Caller {
            office: Some(office.into()),
            ..agent("c", Role::Coordinator)
        };
        assert!(may_read_note(&coordinator("A-1"), &parties, "ft-pair"));
        assert!(!may_read_note(&coordinator("A-2"), &parties, "ft-pair"));
        assert!(!may_read_note(
            &agent("c", Role::Coordinator),
            &parties,
            "ft-pair"
        ));
    }
}
