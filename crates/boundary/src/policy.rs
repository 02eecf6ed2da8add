//! The allow list, read from the contract's method options. An RPC without a
//! `policy` option can be called by nobody.

use std::collections::{BTreeSet, HashMap};

use passerelle_contract::{convert, v1};
use passerelle_domain::{DataCategory, Institution, LegalBasis, Purpose, Role};
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

use crate::identity::Caller;
use crate::need_to_know::CaseScope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The request carries data to the serving institution.
    Push,
    /// The response carries data back to the caller's institution.
    Pull,
}

/// What a cross-institution RPC may carry, why, and on which basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossingRule {
    pub purpose: Purpose,
    pub legal_basis: LegalBasis,
    pub legal_reference: String,
    pub flow: Flow,
    pub categories: BTreeSet<DataCategory>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRule {
    /// `/package.Service/Method`, as on the wire.
    pub path: String,
    pub service: String,
    pub method: String,
    /// The institution that serves this RPC.
    pub server: Institution,
    pub callers: BTreeSet<Institution>,
    pub roles: BTreeSet<Role>,
    pub crossing: Option<CrossingRule>,
    /// Which cases a caller reaches through it; `None` when the contract
    /// leaves it unset (the contract test refuses that for an RPC that
    /// takes a case).
    pub scope: Option<CaseScope>,
    /// Name of the request's top-level field marked `(subject) = true`.
    pub subject_field: Option<String>,
}

/// Why a call was refused. The text names no personal value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("unknown method {0}")]
    UnknownMethod(String),
    #[error("{institution} is not allowed to call {method}")]
    InstitutionNotAllowed {
        institution: Institution,
        method: String,
    },
    #[error("role {role} is not allowed to call {method}")]
    RoleNotAllowed { role: Role, method: String },
}

/// The allow list of every RPC of the contract, keyed by wire path.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, RpcRule>,
}

/// Which institution serves each service of the contract.
pub fn serving_institution(service: &str) -> Option<Institution> {
    use passerelle_contract::services;
    match service {
        services::EMPLOI => Some(Institution::Emploi),
        services::SOCIAL => Some(Institution::Social),
        services::PILOTAGE => Some(Institution::Pilotage),
        // The Département's by default; either institution may host it.
        services::DIRECTORY => Some(Institution::Social),
        _ => None,
    }
}

impl Policy {
    /// Reads the policy of the contract this binary was built with.
    pub fn from_contract() -> Result<Self, String> {
        Self::from_pool(passerelle_contract::descriptor_pool())
    }

    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, String> {
        let policy_ext = pool
            .get_extension_by_name("passerelle.v1.policy")
            .ok_or("the contract defines no passerelle.v1.policy option")?;
        let subject_ext = pool
            .get_extension_by_name("passerelle.v1.subject")
            .ok_or("the contract defines no passerelle.v1.subject option")?;
        let mut rules = HashMap::new();
        for service in pool.services() {
            let Some(server) = serving_institution(service.full_name()) else {
                continue;
            };
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                if !options.has_extension(&policy_ext) {
                    // No policy: deny by default, the rule is simply absent.
                    continue;
                }
                let Value::Message(policy) = options.get_extension(&policy_ext).into_owned() else {
                    return Err(format!("{path}: policy option is not a message"));
                };
                let subject_field = method
                    .input()
                    .fields()
                    .find(|f| f.options().get_extension(&subject_ext).as_bool() == Some(true))
                    .map(|f| f.name().to_owned());
                let rule = rule_from(&path, &method, server, &policy, subject_field)?;
                rules.insert(path, rule);
            }
        }
        Ok(Policy { rules })
    }

    pub fn rule(&self, path: &str) -> Option<&RpcRule> {
        self.rules.get(path)
    }

    pub fn rules(&self) -> impl Iterator<Item = &RpcRule> {
        self.rules.values()
    }

    /// Deny by default: allowed only when (institution, role, RPC) is listed.
    pub fn authorize(&self, caller: &Caller, path: &str) -> Result<&RpcRule, Denial> {
        let rule = self
            .rules
            .get(path)
            .ok_or_else(|| Denial::UnknownMethod(path.to_owned()))?;
        if !rule.callers.contains(&caller.institution) {
            return Err(Denial::InstitutionNotAllowed {
                institution: caller.institution,
                method: path.to_owned(),
            });
        }
        if !rule.roles.contains(&caller.role) {
            return Err(Denial::RoleNotAllowed {
                role: caller.role,
                method: path.to_owned(),
            });
        }
        Ok(rule)
    }
}

fn enum_list<P: TryFrom<i32>, D: Ord>(
    msg: &DynamicMessage,
    field: &str,
    map: impl Fn(P) -> Option<D>,
) -> Result<BTreeSet<D>, String> {
    let Some(Value::List(values)) = msg.get_field_by_name(field).map(|v| v.into_owned()) else {
        return Ok(BTreeSet::new());
    };
    values
        .iter()
        .map(|v| {
            let n = v
                .as_enum_number()
                .ok_or_else(|| format!("{field} holds a non-enum"))?;
            P::try_from(n)
                .ok()
                .and_then(&map)
                .ok_or_else(|| format!("{field} holds unknown or unspecified value {n}"))
        })
        .collect()
}

fn enum_value<P: TryFrom<i32>, D>(
    msg: &DynamicMessage,
    field: &str,
    map: impl Fn(P) -> Option<D>,
) -> Result<D, String> {
    let n = msg
        .get_field_by_name(field)
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    P::try_from(n)
        .ok()
        .and_then(map)
        .ok_or_else(|| format!("{field} is unspecified"))
}

fn rule_from(
    path: &str,
    method: &MethodDescriptor,
    server: Institution,
    policy: &DynamicMessage,
    subject_field: Option<String>,
) -> Result<RpcRule, String> {
    let context = |e: String| format!("{path}: {e}");
    let crossing = if policy.has_field_by_name("crossing") {
        let Some(Value::Message(c)) = policy.get_field_by_name("crossing").map(|v| v.into_owned())
        else {
            return Err(context("crossing is not a message".into()));
        };
        let flow = match c.get_field_by_name("flow").and_then(|v| v.as_enum_number()) {
            Some(n) if n == v1::Flow::Push as i32 => Flow::Push,
            Some(n) if n == v1::Flow::Pull as i32 => Flow::Pull,
            _ => return Err(context("crossing.flow is unspecified".into())),
        };
        Some(CrossingRule {
            purpose: enum_value(&c, "purpose", convert::purpose).map_err(context)?,
            legal_basis: enum_value(&c, "legal_basis", convert::legal_basis).map_err(context)?,
            legal_reference: c
                .get_field_by_name("legal_reference")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            flow,
            categories: enum_list(&c, "categories", convert::data_category).map_err(context)?,
        })
    } else {
        None
    };
    Ok(RpcRule {
        path: path.to_owned(),
        service: method.parent_service().full_name().to_owned(),
        method: method.name().to_owned(),
        server,
        callers: enum_list(policy, "callers", convert::institution).map_err(context)?,
        roles: enum_list(policy, "roles", convert::role).map_err(context)?,
        crossing,
        scope: match policy
            .get_field_by_name("scope")
            .and_then(|v| v.as_enum_number())
        {
            Some(n) if n == v1::CaseScope::None as i32 => Some(CaseScope::None),
            Some(n) if n == v1::CaseScope::CasePeople as i32 => Some(CaseScope::CasePeople),
            Some(n) if n == v1::CaseScope::Partner as i32 => Some(CaseScope::Partner),
            Some(n) if n == v1::CaseScope::Habilitation as i32 => Some(CaseScope::Habilitation),
            _ => None,
        },
        subject_field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(institution: Institution, role: Role) -> Caller {
        Caller {
            agent: "a".into(),
            institution,
            role,
            issuer: "test".into(),
            organisation: None,
            office: None,
        }
    }

    #[test]
    fn the_contract_policy_reads_purposes_and_categories() {
        let policy = Policy::from_contract().expect("policy");
        let rule = policy
            .rule("/passerelle.v1.EmploiService/ReceiveReferral")
            .expect("rule");
        let crossing = rule.crossing.as_ref().expect("crossing");
        assert_eq!(crossing.purpose, Purpose::Referral);
        assert_eq!(crossing.legal_basis, LegalBasis::Consent);
        assert_eq!(crossing.flow, Flow::Push);
        assert!(crossing.categories.contains(&DataCategory::Identity));
        assert!(!crossing.categories.contains(&DataCategory::LocalOnly));
        assert_eq!(rule.subject_field.as_deref(), Some("case_id"));
        assert_eq!(rule.server, Institution::Emploi);
    }

    #[test]
    fn deny_by_default() {
        let policy = Policy::from_contract().expect("policy");
        let path = "/passerelle.v1.EmploiService/ReceiveReferral";
        assert!(
            policy
                .authorize(&caller(Institution::Social, Role::Service), path)
                .is_ok()
        );
        assert!(matches!(
            policy.authorize(&caller(Institution::Pilotage, Role::Service), path),
            Err(Denial::InstitutionNotAllowed { .. })
        ));
        assert!(matches!(
            policy.authorize(&caller(Institution::Social, Role::SocialWorker), path),
            Err(Denial::RoleNotAllowed { .. })
        ));
        assert!(matches!(
            policy.authorize(
                &caller(Institution::Social, Role::Service),
                "/passerelle.v1.EmploiService/Nope"
            ),
            Err(Denial::UnknownMethod(_))
        ));
    }
}
