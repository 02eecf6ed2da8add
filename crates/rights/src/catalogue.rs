//! What the contract says of purposes, crossings and wording, read straight
//! from its descriptors. Nothing here lists a purpose, a field or an RPC: a
//! new one in the contract appears in every document built from this.

use std::collections::{BTreeSet, HashMap};

use passerelle_boundary::policy::serving_institution;
use passerelle_contract::v1;
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Value,
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("the contract lacks {0}")]
pub struct CatalogueError(String);

/// One value of the contract's `Purpose`, with its register record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurposeInfo {
    /// The enum value's name, e.g. `PURPOSE_REFERRAL`.
    pub name: String,
    /// Its short code, e.g. `referral` (the agreement files' spelling).
    pub code: String,
    pub title: String,
    pub description: String,
    pub data_subjects: Vec<String>,
}

/// What a cross-institution RPC may carry, why, and on which basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossingInfo {
    /// A `Purpose` value name.
    pub purpose: String,
    /// A `LegalBasis` value name.
    pub legal_basis: String,
    pub legal_reference: String,
    /// `FLOW_PUSH` or `FLOW_PULL`.
    pub flow: String,
    /// `DataCategory` value names.
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpcInfo {
    pub path: String,
    /// The `Institution` value name of the service that serves it.
    pub server: String,
    pub callers: Vec<String>,
    pub roles: Vec<String>,
    pub crossing: Option<CrossingInfo>,
    /// The request's field naming the case it is about (`(subject) = true`).
    pub subject: Option<String>,
}

impl RpcInfo {
    /// Institutions that receive personal data through this crossing when
    /// `institution` takes part in it, and those it receives from.
    pub fn flows_for(&self, institution: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut recipients = BTreeSet::new();
        let mut sources = BTreeSet::new();
        let Some(crossing) = &self.crossing else {
            return (recipients, sources);
        };
        let push = crossing.flow == "FLOW_PUSH";
        let serves = self.server == institution;
        let calls = self.callers.iter().any(|c| c == institution);
        let others = self.callers.iter().filter(|c| *c != institution).cloned();
        match (push, serves, calls) {
            // It sends in its requests: the server receives.
            (true, _, true) if !serves => {
                recipients.insert(self.server.clone());
            }
            // It answers with data: its callers receive.
            (false, true, _) => recipients.extend(others),
            (true, true, _) => sources.extend(others),
            (false, _, true) if !serves => {
                sources.insert(self.server.clone());
            }
            _ => {}
        }
        (recipients, sources)
    }
}

/// The contract as documents need it.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub pool: DescriptorPool,
    pub purposes: Vec<PurposeInfo>,
    pub rpcs: Vec<RpcInfo>,
    labels: HashMap<String, String>,
    category: ExtensionDescriptor,
    held_for: ExtensionDescriptor,
    field_label: ExtensionDescriptor,
}

fn extension(pool: &DescriptorPool, name: &str) -> Result<ExtensionDescriptor, CatalogueError> {
    pool.get_extension_by_name(name)
        .ok_or_else(|| CatalogueError(name.to_owned()))
}

fn enumeration(pool: &DescriptorPool, name: &str) -> Result<EnumDescriptor, CatalogueError> {
    pool.get_enum_by_name(name)
        .ok_or_else(|| CatalogueError(name.to_owned()))
}

/// The value names of a repeated enum field of an option message.
fn enum_names(message: &DynamicMessage, field: &str, of: &EnumDescriptor) -> Vec<String> {
    let name = |n: i32| {
        of.get_value(n)
            .map(|v| v.name().to_owned())
            .unwrap_or_else(|| n.to_string())
    };
    match message.get_field_by_name(field).as_deref() {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(Value::as_enum_number)
            .map(name)
            .collect(),
        Some(Value::EnumNumber(n)) => vec![name(*n)],
        _ => vec![],
    }
}

fn text(message: &DynamicMessage, field: &str) -> String {
    message
        .get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Catalogue {
    /// The catalogue of the contract this binary was built with.
    pub fn from_contract() -> Result<Self, CatalogueError> {
        Self::from_pool(passerelle_contract::descriptor_pool().clone())
    }

    pub fn from_pool(pool: DescriptorPool) -> Result<Self, CatalogueError> {
        let label = extension(&pool, "passerelle.v1.label")?;
        let record = extension(&pool, "passerelle.v1.purpose_record")?;
        let policy = extension(&pool, "passerelle.v1.policy")?;
        let subject = extension(&pool, "passerelle.v1.subject")?;
        let purpose_enum = enumeration(&pool, "passerelle.v1.Purpose")?;
        let institution_enum = enumeration(&pool, "passerelle.v1.Institution")?;
        let role_enum = enumeration(&pool, "passerelle.v1.Role")?;
        let basis_enum = enumeration(&pool, "passerelle.v1.LegalBasis")?;
        let flow_enum = enumeration(&pool, "passerelle.v1.Flow")?;
        let category_enum = enumeration(&pool, "passerelle.v1.DataCategory")?;

        let mut labels = HashMap::new();
        for e in pool.all_enums() {
            for value in e.values() {
                if let Some(text) = value.options().get_extension(&label).as_str()
                    && !text.is_empty()
                {
                    labels.insert(value.name().to_owned(), text.to_owned());
                }
            }
        }
        let purposes = purpose_enum
            .values()
            .filter(|v| v.number() != 0)
            .map(|v| {
                let options = v.options();
                let record = options.get_extension(&record);
                let record = record.as_message();
                let field = |name: &str| record.map(|r| text(r, name)).unwrap_or_default();
                let data_subjects = match record
                    .and_then(|r| r.get_field_by_name("data_subjects"))
                    .as_deref()
                {
                    Some(Value::List(items)) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                    _ => vec![],
                };
                PurposeInfo {
                    name: v.name().to_owned(),
                    code: v.name().trim_start_matches("PURPOSE_").to_ascii_lowercase(),
                    title: field("title"),
                    description: field("description"),
                    data_subjects,
                }
            })
            .collect();

        let mut rpcs = vec![];
        for service in pool.services() {
            let Some(server) = serving_institution(service.full_name()) else {
                continue;
            };
            let server = v1::Institution::from(server).as_str_name().to_owned();
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&policy) {
                    continue;
                }
                let value = options.get_extension(&policy);
                let Some(rule) = value.as_message() else {
                    continue;
                };
                let crossing = rule
                    .get_field_by_name("crossing")
                    .and_then(|c| c.as_message().cloned())
                    .filter(|c| {
                        c.get_field_by_name("purpose")
                            .and_then(|p| p.as_enum_number())
                            .is_some_and(|n| n != 0)
                    })
                    .map(|c| CrossingInfo {
                        purpose: enum_names(&c, "purpose", &purpose_enum)
                            .pop()
                            .unwrap_or_default(),
                        legal_basis: enum_names(&c, "legal_basis", &basis_enum)
                            .pop()
                            .unwrap_or_default(),
                        legal_reference: text(&c, "legal_reference"),
                        flow: enum_names(&c, "flow", &flow_enum).pop().unwrap_or_default(),
                        categories: enum_names(&c, "categories", &category_enum),
                    });
                let subject = method
                    .input()
                    .fields()
                    .find(|f| f.options().get_extension(&subject).as_bool() == Some(true))
                    .map(|f| f.name().to_owned());
                rpcs.push(RpcInfo {
                    subject,
                    path: format!("/{}/{}", service.full_name(), method.name()),
                    server: server.clone(),
                    callers: enum_names(rule, "callers", &institution_enum),
                    roles: enum_names(rule, "roles", &role_enum),
                    crossing,
                });
            }
        }
        Ok(Catalogue {
            category: extension(&pool, "passerelle.v1.data_category")?,
            held_for: extension(&pool, "passerelle.v1.held_for")?,
            field_label: extension(&pool, "passerelle.v1.field_label")?,
            pool,
            purposes,
            rpcs,
            labels,
        })
    }

    /// The French wording of an enum value name; the name itself when the
    /// contract gives none.
    pub fn label(&self, value_name: &str) -> String {
        self.labels
            .get(value_name)
            .cloned()
            .unwrap_or_else(|| value_name.to_owned())
    }

    /// An enum value for a reader: its label, or else its name without the
    /// enum's prefix (`CASE_STATE_EXITED` → `exited`).
    pub fn enum_text(&self, of: &EnumDescriptor, value_name: &str) -> String {
        if let Some(label) = self.labels.get(value_name) {
            return label.clone();
        }
        let prefix: String = of
            .name()
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let gap = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                gap.into_iter()
                    .chain(std::iter::once(c.to_ascii_uppercase()))
            })
            .collect();
        value_name
            .strip_prefix(&format!("{prefix}_"))
            .unwrap_or(value_name)
            .to_ascii_lowercase()
            .replace('_', " ")
    }

    pub fn purpose(&self, name_or_code: &str) -> Option<&PurposeInfo> {
        self.purposes
            .iter()
            .find(|p| p.name == name_or_code || p.code == name_or_code)
    }

    /// The category a field is annotated with (a `DataCategory` value name).
    pub fn category_of(&self, field: &FieldDescriptor) -> Option<String> {
        let n = field
            .options()
            .get_extension(&self.category)
            .as_enum_number()?;
        self.pool
            .get_enum_by_name("passerelle.v1.DataCategory")?
            .get_value(n)
            .map(|v| v.name().to_owned())
    }

    /// The purposes a field of what is held about a person is kept for.
    pub fn held_for(&self, field: &FieldDescriptor) -> Vec<String> {
        let Some(purposes) = self.pool.get_enum_by_name("passerelle.v1.Purpose") else {
            return vec![];
        };
        match field.options().get_extension(&self.held_for).as_ref() {
            Value::List(items) => items
                .iter()
                .filter_map(Value::as_enum_number)
                .filter_map(|n| purposes.get_value(n).map(|v| v.name().to_owned()))
                .collect(),
            _ => vec![],
        }
    }

    /// The heading of a field of what is held about a person.
    pub fn field_label(&self, field: &FieldDescriptor) -> String {
        field
            .options()
            .get_extension(&self.field_label)
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| field.name().to_owned())
    }

    /// The legal bases (value names) the contract's crossings of `purpose`
    /// rest on where `institution` takes part; with `about_a_case`, only
    /// those whose request names the case they are about.
    pub fn bases_of(
        &self,
        purpose: &str,
        institution: &str,
        about_a_case: bool,
    ) -> BTreeSet<String> {
        self.rpcs
            .iter()
            .filter(|r| r.server == institution || r.callers.iter().any(|c| c == institution))
            .filter(|r| !about_a_case || r.subject.as_deref() == Some("case_id"))
            .filter_map(|r| r.crossing.as_ref())
            .filter(|c| c.purpose == purpose)
            .map(|c| c.legal_basis.clone())
            .collect()
    }

    /// The institutions (value names) that take part in any crossing.
    pub fn institutions(&self) -> BTreeSet<String> {
        self.rpcs
            .iter()
            .filter(|r| r.crossing.is_some())
            .flat_map(|r| r.callers.iter().cloned().chain([r.server.clone()]))
            .collect()
    }

    /// A generated message as the catalogue's pool describes it.
    pub fn dynamic<M: prost::Message + prost::Name>(&self, message: &M) -> Option<DynamicMessage> {
        let descriptor = self.pool.get_message_by_name(&M::full_name())?;
        DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).ok()
    }
}
