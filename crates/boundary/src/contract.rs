//! Static checks of the contract's boundary annotations: every field has a
//! data category, every RPC a policy, and no message reachable from a
//! crossing carries a category the crossing does not allow.

use std::collections::{BTreeSet, HashSet};

use passerelle_domain::{DataCategory, LegalBasis};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

use crate::minimise::Minimiser;
use crate::policy::Policy;

/// Packages whose messages must all be classified.
const OWN_PACKAGE_PREFIX: &str = "passerelle.";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    UnclassifiedField {
        field: String,
    },
    RpcWithoutPolicy {
        method: String,
    },
    CategoryNotAllowed {
        method: String,
        field: String,
        category: DataCategory,
    },
    ConsentCrossingWithoutSubject {
        method: String,
    },
    CrossingWithoutReference {
        method: String,
    },
    /// An RPC whose request names a case (or a consent) without a scope
    /// saying which cases its caller reaches.
    CaseRpcWithoutScope {
        method: String,
    },
}

/// Whether a request names a case: a `case_id` or `consent_id` field at its
/// top level or in one of its messages.
fn takes_a_case(request: &MessageDescriptor) -> bool {
    let names_one = |m: &MessageDescriptor| {
        m.fields()
            .any(|f| matches!(f.name(), "case_id" | "consent_id"))
    };
    names_one(request)
        || request.fields().any(|f| match f.kind() {
            Kind::Message(inner) => names_one(&inner),
            _ => false,
        })
}

/// All violations in `pool`; empty when the contract is sound.
pub fn check(pool: &DescriptorPool) -> Vec<Violation> {
    let mut violations = BTreeSet::new();
    let Some(minimiser) = Minimiser::from_pool(pool.clone()) else {
        return vec![Violation::UnclassifiedField {
            field: "passerelle.v1.data_category option is missing".into(),
        }];
    };
    for message in pool
        .all_messages()
        .filter(|m| m.full_name().starts_with(OWN_PACKAGE_PREFIX))
    {
        for field in message.fields() {
            if minimiser.category(&field).is_none() {
                violations.insert(Violation::UnclassifiedField {
                    field: field.full_name().to_owned(),
                });
            }
        }
    }
    let policy = match Policy::from_pool(pool) {
        Ok(p) => p,
        Err(e) => return vec![Violation::RpcWithoutPolicy { method: e }],
    };
    for service in pool
        .services()
        .filter(|s| s.full_name().starts_with(OWN_PACKAGE_PREFIX))
    {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let Some(rule) = policy.rule(&path) else {
                violations.insert(Violation::RpcWithoutPolicy { method: path });
                continue;
            };
            if rule.scope.is_none() && takes_a_case(&method.input()) {
                violations.insert(Violation::CaseRpcWithoutScope {
                    method: path.clone(),
                });
            }
            let Some(crossing) = &rule.crossing else {
                continue;
            };
            if crossing.legal_reference.trim().is_empty() {
                violations.insert(Violation::CrossingWithoutReference {
                    method: path.clone(),
                });
            }
            if crossing.legal_basis == LegalBasis::Consent && rule.subject_field.is_none() {
                violations.insert(Violation::ConsentCrossingWithoutSubject {
                    method: path.clone(),
                });
            }
            for carried in [method.input(), method.output()] {
                let mut seen = HashSet::new();
                reachable(
                    &minimiser,
                    &carried,
                    &crossing.categories,
                    &path,
                    &mut seen,
                    &mut violations,
                );
            }
        }
    }
    violations.into_iter().collect()
}

fn reachable(
    minimiser: &Minimiser,
    message: &MessageDescriptor,
    allowed: &BTreeSet<DataCategory>,
    method: &str,
    seen: &mut HashSet<String>,
    out: &mut BTreeSet<Violation>,
) {
    if !seen.insert(message.full_name().to_owned()) {
        return;
    }
    for field in message.fields() {
        if let Some(category) = minimiser.category(&field)
            && !allowed.contains(&category)
        {
            out.insert(Violation::CategoryNotAllowed {
                method: method.to_owned(),
                field: field.full_name().to_owned(),
                category,
            });
        }
        if let Kind::Message(inner) = field.kind()
            && inner.full_name().starts_with(OWN_PACKAGE_PREFIX)
        {
            reachable(minimiser, &inner, allowed, method, seen, out);
        }
    }
}
