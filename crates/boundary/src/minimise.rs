//! Data minimisation at run time, driven by the same annotations as the
//! contract test: any field whose category the crossing does not allow is
//! cleared before the message leaves (defence in depth). Unclassified fields
//! are cleared too: deny by default.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use passerelle_contract::{convert, v1};
use passerelle_domain::DataCategory;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, ReflectMessage,
    Value,
};

#[derive(Debug, Clone)]
pub struct Minimiser {
    pool: DescriptorPool,
    category: ExtensionDescriptor,
    /// Each field's category by the field's full name, read once: prost-reflect
    /// decodes a field's options anew each time they are asked for, and
    /// every crossing asks for every field it carries.
    categories: Arc<HashMap<Box<str>, Option<DataCategory>>>,
}

/// A message after minimisation, with what was kept and stripped (field
/// paths, never values) for the audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimised<M> {
    pub message: M,
    pub kept: Vec<String>,
    pub stripped: Vec<String>,
    pub categories: BTreeSet<DataCategory>,
}

#[derive(Debug, thiserror::Error)]
pub enum MinimiseError {
    #[error("message {0} is not in the contract")]
    UnknownMessage(String),
    #[error("could not re-decode {0}")]
    Decode(String),
}

#[derive(Debug, Default)]
struct Report {
    kept: Vec<String>,
    stripped: Vec<String>,
    categories: BTreeSet<DataCategory>,
    /// A field was cleared (stripped, or an empty shell dropped).
    changed: bool,
}

impl Minimiser {
    pub fn from_contract() -> Self {
        #[allow(clippy::expect_used)]
        Self::from_pool(passerelle_contract::descriptor_pool().clone())
            .expect("the contract defines passerelle.v1.data_category")
    }

    pub fn from_pool(pool: DescriptorPool) -> Option<Self> {
        let category = pool.get_extension_by_name("passerelle.v1.data_category")?;
        let categories = pool
            .all_messages()
            .flat_map(|message| message.fields().collect::<Vec<_>>())
            .map(|field| {
                let annotated = annotated_category(&category, &field);
                (Box::from(field.full_name()), annotated)
            })
            .collect();
        Some(Minimiser {
            pool,
            category,
            categories: Arc::new(categories),
        })
    }

    /// The category a field is annotated with, if any.
    pub fn category(&self, field: &FieldDescriptor) -> Option<DataCategory> {
        match self.categories.get(field.full_name()) {
            Some(known) => *known,
            None => annotated_category(&self.category, field),
        }
    }

    /// Minimises a generated message for a crossing allowing `allowed`.
    pub fn minimise<M>(
        &self,
        message: M,
        allowed: &BTreeSet<DataCategory>,
    ) -> Result<Minimised<M>, MinimiseError>
    where
        M: Message + prost::Name + Default,
    {
        let name = M::full_name();
        let descriptor = self
            .pool
            .get_message_by_name(&name)
            .ok_or_else(|| MinimiseError::UnknownMessage(name.clone()))?;
        let mut dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
            .map_err(|_| MinimiseError::Decode(name.clone()))?;
        let report = self.minimise_dynamic(&mut dynamic, allowed);
        // Nothing cleared: the message as it came (most crossings).
        let message = if report.changed {
            M::decode(dynamic.encode_to_vec().as_slice())
                .map_err(|_| MinimiseError::Decode(name))?
        } else {
            message
        };
        Ok(Minimised {
            message,
            kept: report.kept,
            stripped: report.stripped,
            categories: report.categories,
        })
    }

    fn minimise_dynamic(
        &self,
        message: &mut DynamicMessage,
        allowed: &BTreeSet<DataCategory>,
    ) -> Report {
        let mut report = Report::default();
        self.walk(message, "", allowed, &mut report);
        report
    }

    /// Strips what may not cross; returns whether anything was kept (the
    /// report's paths are deduplicated, so they cannot tell: a second
    /// element of a list keeps the same paths as the first).
    fn walk(
        &self,
        message: &mut DynamicMessage,
        prefix: &str,
        allowed: &BTreeSet<DataCategory>,
        report: &mut Report,
    ) -> bool {
        let mut kept_any = false;
        let fields: Vec<FieldDescriptor> = message.descriptor().fields().collect();
        for field in fields {
            if !message.has_field(&field) {
                continue;
            }
            let path = format!("{prefix}{}", field.name());
            match self.category(&field) {
                Some(category) if allowed.contains(&category) => {
                    if is_contract_message(&field) {
                        let inner_kept = match message.get_field_mut(&field) {
                            Value::Message(inner) => {
                                self.walk(inner, &format!("{path}."), allowed, report)
                            }
                            Value::List(items) => {
                                let mut any = false;
                                for item in items.iter_mut() {
                                    if let Value::Message(inner) = item {
                                        any |= self.walk(
                                            inner,
                                            &format!("{path}[]."),
                                            allowed,
                                            report,
                                        );
                                    }
                                }
                                any
                            }
                            _ => false,
                        };
                        if inner_kept {
                            kept_any = true;
                        } else {
                            // Everything inside was stripped: the empty shell goes too.
                            message.clear_field(&field);
                            report.changed = true;
                        }
                    } else {
                        if !report.kept.contains(&path) {
                            report.kept.push(path);
                        }
                        report.categories.insert(category);
                        kept_any = true;
                    }
                }
                _ => {
                    message.clear_field(&field);
                    report.stripped.push(path);
                    report.changed = true;
                }
            }
        }
        kept_any
    }
}

/// The category a field's options annotate it with, if any.
fn annotated_category(
    extension: &ExtensionDescriptor,
    field: &FieldDescriptor,
) -> Option<DataCategory> {
    let n = field.options().get_extension(extension).as_enum_number()?;
    v1::DataCategory::try_from(n)
        .ok()
        .and_then(convert::data_category)
}

/// Our own messages are walked field by field; well-known types such as
/// `google.protobuf.Timestamp` are leaves classified by the field holding them.
fn is_contract_message(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => !field.is_map() && !m.full_name().starts_with("google.protobuf."),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crossing message that (wrongly) carries a LOCAL_ONLY field: the static
    /// contract test forbids this in the real contract, so the run-time filter
    /// is shown on a contract of its own.
    fn leaky_pool() -> DescriptorPool {
        let dir = std::env::temp_dir().join(format!("passerelle-minimise-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("leaky")).expect("dir");
        std::fs::write(
            dir.join("leaky/boundary.proto"),
            include_str!("../../../proto/passerelle/v1/boundary.proto"),
        )
        .expect("write");
        std::fs::write(
            dir.join("leaky/leaky.proto"),
            r#"syntax = "proto3";
package leaky;
import "leaky/boundary.proto";
message Person {
  string name = 1 [(passerelle.v1.data_category) = DATA_CATEGORY_IDENTITY];
  string nir = 2 [(passerelle.v1.data_category) = DATA_CATEGORY_LOCAL_ONLY];
}
message Crossing {
  Person person = 1 [(passerelle.v1.data_category) = DATA_CATEGORY_IDENTITY];
  repeated Person others = 2 [(passerelle.v1.data_category) = DATA_CATEGORY_IDENTITY];
  string note = 3 [(passerelle.v1.data_category) = DATA_CATEGORY_LOCAL_ONLY];
  string unclassified = 4;
}
message Household {
  repeated Person members = 1 [(passerelle.v1.data_category) = DATA_CATEGORY_IDENTITY];
}
message Census {
  repeated Household households = 1 [(passerelle.v1.data_category) = DATA_CATEGORY_IDENTITY];
}
"#,
        )
        .expect("write");
        let mut compiler = protox::Compiler::new([&dir]).expect("compiler");
        compiler
            .include_imports(true)
            .open_file("leaky/leaky.proto")
            .expect("compile");
        DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("pool")
    }

    #[test]
    fn local_only_and_unclassified_fields_are_stripped_at_every_depth() {
        let pool = leaky_pool();
        let minimiser = Minimiser::from_pool(pool.clone()).expect("category option");
        let crossing = pool.get_message_by_name("leaky.Crossing").expect("message");
        let person = pool.get_message_by_name("leaky.Person").expect("message");
        let mut p = DynamicMessage::new(person);
        p.set_field_by_name("name", Value::String("Léa".into()));
        p.set_field_by_name("nir", Value::String("2880435123456".into()));
        let mut m = DynamicMessage::new(crossing);
        m.set_field_by_name("person", Value::Message(p.clone()));
        m.set_field_by_name("others", Value::List(vec![Value::Message(p)]));
        m.set_field_by_name("note", Value::String("secret narrative".into()));
        m.set_field_by_name("unclassified", Value::String("?".into()));

        let allowed = [DataCategory::Identity].into();
        let report = minimiser.minimise_dynamic(&mut m, &allowed);

        assert_eq!(report.kept, vec!["person.name", "others[].name"]);
        assert_eq!(
            report.stripped,
            vec!["person.nir", "others[].nir", "note", "unclassified"]
        );
        let bytes = m.encode_to_vec();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("2880435123456"));
        assert!(!text.contains("secret narrative"));
        assert!(text.contains("Léa"));
    }

    #[test]
    fn well_known_types_cross_whole_under_their_field_category() {
        let minimiser = Minimiser::from_contract();
        let evidence = v1::ConsentEvidence {
            signed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            ..Default::default()
        };
        let out = minimiser
            .minimise(evidence.clone(), &[DataCategory::Case].into())
            .expect("minimised");
        assert_eq!(out.message.signed_at, evidence.signed_at);
        assert_eq!(out.kept, vec!["signed_at"]);
    }

    /// A referral holding a case id (case) and a first name (identity).
    fn case_and_first_name() -> v1::Referral {
        v1::Referral {
            case_id: "k".into(),
            person: Some(v1::PersonIdentity {
                first_name: "Léa".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn generated_messages_are_minimised_by_their_contract_name() {
        let minimiser = Minimiser::from_contract();
        let referral = v1::Referral {
            contact: Some(v1::Contact {
                phone: "0600000000".into(),
                ..Default::default()
            }),
            ..case_and_first_name()
        };
        let allowed = [DataCategory::Case, DataCategory::Identity].into();
        let out = minimiser.minimise(referral, &allowed).expect("minimised");
        assert_eq!(out.message.contact, None);
        assert_eq!(
            out.message.person.as_ref().map(|p| p.first_name.as_str()),
            Some("Léa")
        );
        assert_eq!(out.stripped, vec!["contact"]);
        assert_eq!(out.categories, allowed);
    }

    #[test]
    fn every_element_of_nested_lists_keeps_what_it_may_carry() {
        // Regression: the second household's members once went with the
        // shell, because its paths were already in the report.
        let pool = leaky_pool();
        let minimiser = Minimiser::from_pool(pool.clone()).expect("category option");
        let person = pool.get_message_by_name("leaky.Person").expect("message");
        let household = pool
            .get_message_by_name("leaky.Household")
            .expect("message");
        let census = pool.get_message_by_name("leaky.Census").expect("message");
        let member = |name: &str| {
            let mut p = DynamicMessage::new(person.clone());
            p.set_field_by_name("name", Value::String(name.into()));
            p.set_field_by_name("nir", Value::String("1234".into()));
            Value::Message(p)
        };
        let mut households = vec![];
        for names in [["Léa", "Yann"], ["Awa", "Soizic"], ["Erwan", "Inès"]] {
            let mut h = DynamicMessage::new(household.clone());
            h.set_field_by_name(
                "members",
                Value::List(names.iter().map(|n| member(n)).collect()),
            );
            households.push(Value::Message(h));
        }
        let mut m = DynamicMessage::new(census);
        m.set_field_by_name("households", Value::List(households));
        minimiser.minimise_dynamic(&mut m, &[DataCategory::Identity].into());
        let text = String::from_utf8_lossy(&m.encode_to_vec()).into_owned();
        for name in ["Léa", "Yann", "Awa", "Soizic", "Erwan", "Inès"] {
            assert!(text.contains(name), "{name} lost");
        }
        assert!(!text.contains("1234"));
    }

    #[test]
    fn every_field_s_category_is_the_one_its_options_annotate() {
        let minimiser = Minimiser::from_contract();
        let mut fields = 0;
        for message in passerelle_contract::descriptor_pool().all_messages() {
            for field in message.fields() {
                assert!(
                    minimiser.categories.contains_key(field.full_name()),
                    "{} read once",
                    field.full_name()
                );
                assert_eq!(
                    minimiser.category(&field),
                    annotated_category(&minimiser.category, &field),
                    "{}",
                    field.full_name()
                );
                fields += 1;
            }
        }
        assert!(fields > 100, "the contract's fields: {fields}");
    }

    #[test]
    fn a_message_that_may_cross_whole_comes_out_as_it_came_and_an_empty_shell_does_not() {
        let minimiser = Minimiser::from_contract();
        let referral = case_and_first_name();
        let allowed = [DataCategory::Case, DataCategory::Identity].into();
        let out = minimiser
            .minimise(referral.clone(), &allowed)
            .expect("minimised");
        assert_eq!(out.message, referral);
        assert!(out.stripped.is_empty());
        // A sub-message set but empty keeps nothing: the shell goes, though
        // no field of it was stripped.
        let shell = v1::Referral {
            contact: Some(v1::Contact::default()),
            ..referral.clone()
        };
        let out = minimiser
            .minimise(
                shell,
                &[
                    DataCategory::Case,
                    DataCategory::Identity,
                    DataCategory::Contact,
                ]
                .into(),
            )
            .expect("minimised");
        assert_eq!(out.message, referral);
        assert!(out.stripped.is_empty());
    }
}
