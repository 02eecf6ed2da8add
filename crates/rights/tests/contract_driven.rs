//! The documents follow the contract with no other code: a purpose and an
//! RPC added to the contract appear in the register, a field added to a
//! message appears in the person's access report with its category.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use passerelle_domain::Institution;
use passerelle_rights::access::{Retention, held_values};
use passerelle_rights::{Catalogue, Document, Register};
use prost_reflect::{DescriptorPool, DynamicMessage, Value};

fn proto_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// A file of the contract and how to change it.
type Edit<'a> = (&'a str, &'a dyn Fn(&str) -> String);

/// The contract compiled with `edits` applied to its files.
fn contract_with(edits: &[Edit<'_>]) -> DescriptorPool {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("passerelle/v1");
    std::fs::create_dir_all(&target).expect("dir");
    let mut files = vec![];
    for entry in std::fs::read_dir(proto_root().join("passerelle/v1")).expect("proto") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut text = std::fs::read_to_string(&path).expect("read");
        for (file, edit) in edits {
            if *file == name {
                let edited = edit(&text);
                assert_ne!(edited, text, "the edit of {file} changed nothing");
                text = edited;
            }
        }
        std::fs::write(target.join(&name), text).expect("write");
        files.push(format!("passerelle/v1/{name}"));
    }
    let mut compiler = protox::Compiler::new([dir.path()]).expect("compiler");
    compiler.include_imports(true);
    compiler.open_files(&files).expect("compiles");
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("pool")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-03T09:00:00Z")
        .expect("valid")
        .to_utc()
}

fn agreement() -> passerelle_domain::agreement::Agreement {
    passerelle_domain::agreement::shipped("ille-et-vilaine-2023").expect("shipped")
}

#[test]
fn a_new_purpose_and_its_rpc_appear_in_the_register() {
    let add_purpose = |text: &str| {
        text.replace(
            "  PURPOSE_AUDIT_INTEGRITY = 10",
            "  PURPOSE_HOUSING_PARTNERSHIP = 12 [(purpose_record) = {\n    title: \"Partenariat logement\"\n    description: \"Orientation vers un bailleur social.\"\n    data_subjects: [\"Personnes accompagnées\"]\n  }];\n  PURPOSE_AUDIT_INTEGRITY = 10",
        )
    };
    let add_rpc = |text: &str| {
        text.replace(
            "  // The data protection officer's tools.\n",
            "  rpc ShareHousingNeed(ReceiveCaseEventRequest) returns (ReceiveCaseEventResponse) {\n    option (policy) = {\n      scope: CASE_SCOPE_PARTNER\n      callers: [INSTITUTION_EMPLOI]\n      roles: [ROLE_SERVICE]\n      crossing: {\n        purpose: PURPOSE_HOUSING_PARTNERSHIP\n        legal_basis: LEGAL_BASIS_PUBLIC_TASK\n        legal_reference: \"CASF art. L. 121-1\"\n        flow: FLOW_PUSH\n        categories: [DATA_CATEGORY_PUBLIC, DATA_CATEGORY_CASE]\n      }\n    };\n  }\n  // The data protection officer's tools.\n",
        )
    };
    let pool = contract_with(&[("boundary.proto", &add_purpose), ("social.proto", &add_rpc)]);
    let catalogue = Catalogue::from_pool(pool).expect("catalogue");
    let agreement = agreement();
    let period = (t0() - chrono::Duration::days(365), t0());
    let emploi = Register::build(
        &catalogue,
        &agreement,
        Institution::Emploi,
        &[],
        period,
        t0(),
    );
    let social = Register::build(
        &catalogue,
        &agreement,
        Institution::Social,
        &[],
        period,
        t0(),
    );
    let activity = social
        .activities
        .iter()
        .find(|a| a.purpose == "PURPOSE_HOUSING_PARTNERSHIP")
        .expect("the new purpose is a processing activity of the social side");
    assert_eq!(activity.title, "Partenariat logement");
    assert_eq!(activity.legal_bases[0].reference, "CASF art. L. 121-1");
    assert_eq!(activity.legal_bases[0].basis, "LEGAL_BASIS_PUBLIC_TASK");
    assert_eq!(activity.sources, vec!["France Travail"]);
    assert!(activity.retention.is_empty(), "the agreement sets none yet");
    assert!(social.to_markdown().contains("Partenariat logement"));
    assert!(social.to_markdown().contains("Non fixée par la convention"));
    // The employment side sends it: a recipient, the Département.
    let sent = emploi
        .activities
        .iter()
        .find(|a| a.purpose == "PURPOSE_HOUSING_PARTNERSHIP")
        .expect("and one of the employment side");
    assert_eq!(sent.recipients, vec!["Le Département"]);

    // The contract as built has no such purpose.
    let built = Catalogue::from_contract().expect("catalogue");
    let today = Register::build(&built, &agreement, Institution::Social, &[], period, t0());
    assert!(
        today
            .activities
            .iter()
            .all(|a| a.purpose != "PURPOSE_HOUSING_PARTNERSHIP")
    );
}

#[test]
fn a_new_field_appears_in_the_access_report_with_its_category() {
    let add_field = |text: &str| {
        text.replace(
            "  Orientation orientation = 13 [(data_category) = DATA_CATEGORY_CASE];\n}",
            "  Orientation orientation = 13 [(data_category) = DATA_CATEGORY_CASE];\n  string preferred_language = 14 [(data_category) = DATA_CATEGORY_CONTACT];\n}",
        )
    };
    let pool = contract_with(&[("casework.proto", &add_field)]);
    let catalogue = Catalogue::from_pool(pool.clone()).expect("catalogue");
    let referral_descriptor = pool
        .get_message_by_name("passerelle.v1.Referral")
        .expect("Referral");
    let mut referral = DynamicMessage::new(referral_descriptor.clone());
    referral.set_field_by_name("preferred_language", Value::String("breton".into()));
    referral.set_field_by_name("case_id", Value::String("k".into()));
    let mut held = DynamicMessage::new(
        pool.get_message_by_name("passerelle.v1.SubjectData")
            .expect("SubjectData"),
    );
    held.set_field_by_name("referral", Value::Message(referral));
    let agreement = agreement();
    let values = held_values(
        &catalogue,
        &[held],
        Retention {
            agreement: &agreement,
            case_ended_at: Some(t0()),
        },
    );
    let language = values
        .iter()
        .find(|v| v.path == "referral.preferred_language")
        .expect("the new field is in the report");
    assert_eq!(language.value, "breton");
    assert_eq!(language.category, "DATA_CATEGORY_CONTACT");
    assert_eq!(language.section, "Fiche de liaison");
    assert_eq!(
        language.purposes,
        vec!["Orientation vers l'accompagnement global"]
    );
    // Contact data kept for the referral: 24 months after the end.
    assert_eq!(language.kept_until, "jusqu'au 03/03/2027");
    assert_eq!(values.len(), 2, "{values:?}");
}
