//! The contract is the boundary: these tests read its annotations.

use passerelle_boundary::contract::{Violation, check};
use passerelle_domain::DataCategory;
use prost_reflect::DescriptorPool;

fn compile(root: &std::path::Path) -> DescriptorPool {
    let mut compiler = protox::Compiler::new([root]).expect("compiler");
    compiler.include_imports(true);
    for file in ["boundary", "casework", "emploi", "social", "pilotage"] {
        compiler
            .open_file(format!("passerelle/v1/{file}.proto"))
            .expect("compiles");
    }
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("pool")
}

fn proto_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto")
}

/// A copy of proto/ with `edit` applied to one file.
fn mutated(file: &str, edit: impl Fn(&str) -> String) -> DescriptorPool {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("passerelle/v1");
    std::fs::create_dir_all(&target).expect("dir");
    for entry in std::fs::read_dir(proto_root().join("passerelle/v1")).expect("proto dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = if name == file {
            let edited = edit(&text);
            // A mutation that no longer matches the contract would test nothing.
            assert_ne!(edited, text, "the edit of {file} changed nothing");
            edited
        } else {
            text
        };
        std::fs::write(target.join(&name), text).expect("write");
    }
    compile(dir.path())
}

#[test]
fn the_contract_is_sound() {
    assert_eq!(check(passerelle_contract::descriptor_pool()), vec![]);
    // The embedded descriptor set is the one in proto/.
    assert_eq!(check(&compile(&proto_root())), vec![]);
}

#[test]
fn an_unannotated_field_fails_the_contract() {
    let pool = mutated("casework.proto", |text| {
        text.replace("  string office_code = 4 [(data_category) = DATA_CATEGORY_PUBLIC];", "  string office_code = 4 [(data_category) = DATA_CATEGORY_PUBLIC];\n  string nickname = 42;")
    });
    assert!(check(&pool).contains(&Violation::UnclassifiedField {
        field: "passerelle.v1.Referral.nickname".into()
    }));
}

#[test]
fn a_local_only_field_reachable_from_a_crossing_fails_the_contract() {
    let pool = mutated("casework.proto", |text| {
        text.replace(
            "  Verdict verdict = 5 [(data_category) = DATA_CATEGORY_CASE];",
            "  Verdict verdict = 5 [(data_category) = DATA_CATEGORY_CASE];\n  string narrative = 43 [(data_category) = DATA_CATEGORY_LOCAL_ONLY];",
        )
    });
    let violations = check(&pool);
    for method in [
        "/passerelle.v1.EmploiService/ReceiveDiagnosis",
        "/passerelle.v1.SocialService/ReceiveDiagnosis",
    ] {
        assert!(
            violations.contains(&Violation::CategoryNotAllowed {
                method: method.into(),
                field: "passerelle.v1.DiagnosisHalf.narrative".into(),
                category: DataCategory::LocalOnly,
            }),
            "{violations:?}"
        );
    }
}

#[test]
fn an_rpc_that_takes_a_case_without_a_scope_fails_the_contract() {
    let pool = mutated("emploi.proto", |text| {
        text.replace(
            "rpc RenewSupport(RenewSupportRequest) returns (RenewSupportResponse) {\n    option (policy) = {\n      scope: CASE_SCOPE_CASE_PEOPLE\n",
            "rpc RenewSupport(RenewSupportRequest) returns (RenewSupportResponse) {\n    option (policy) = {\n",
        )
    });
    assert!(check(&pool).contains(&Violation::CaseRpcWithoutScope {
        method: "/passerelle.v1.EmploiService/RenewSupport".into()
    }));
}

#[test]
fn an_rpc_without_policy_fails_the_contract() {
    let pool = mutated("pilotage.proto", |text| {
        text.replace("service PilotageService {", "service PilotageService {\n  rpc Open(GetDashboardRequest) returns (GetDashboardResponse);")
    });
    assert!(check(&pool).contains(&Violation::RpcWithoutPolicy {
        method: "/passerelle.v1.PilotageService/Open".into()
    }));
}

#[test]
fn no_crossing_to_the_steering_service_carries_personal_data() {
    let policy = passerelle_boundary::Policy::from_contract().expect("policy");
    let to_pilotage: Vec<_> = policy
        .rules()
        .filter(|r| {
            r.callers
                .contains(&passerelle_domain::Institution::Pilotage)
        })
        .collect();
    assert!(!to_pilotage.is_empty());
    for rule in to_pilotage {
        if let Some(crossing) = &rule.crossing {
            let allowed: std::collections::BTreeSet<_> =
                [DataCategory::Public, DataCategory::Aggregate].into();
            assert!(crossing.categories.is_subset(&allowed), "{}", rule.path);
        }
    }
}

#[test]
fn the_sample_configurations_load() {
    use passerelle_runtime::ServiceConfig;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    for institution in passerelle_cli::stack::INSTITUTIONS {
        let file = dir.join(format!("{}.toml", institution.code()));
        let config = ServiceConfig::load(institution, Some(&file))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            config.audience,
            passerelle_runtime::config::audience_of(institution)
        );
        assert!(config.service_identity.is_some());
    }
}
