//! Search latency on a directory of 50,000 services, over real gRPC against
//! the Département's service: `cargo bench -p passerelle-tests --bench
//! directory_search` (SQLite; PostgreSQL too when `PASSERELLE_TEST_POSTGRES`
//! is set). `--services N` changes the size.

use std::time::{Duration, Instant};

use passerelle_domain::directory::{Service, Structure, THEMATIQUE_CATEGORIES};
use passerelle_domain::{Institution, Role};
use passerelle_tests::pb as v1;
use passerelle_tests::{Backend, TestStack, backends, start_under};
use v1::directory_service_client::DirectoryServiceClient;

const STRUCTURES_PER_COMMUNE: usize = 4;
const WORDS: &[&str] = &[
    "accompagnement",
    "atelier",
    "permanence",
    "aide",
    "épicerie",
    "solidaire",
    "numérique",
    "logement",
    "mobilité",
    "permis",
    "garde",
    "enfants",
    "budget",
    "insertion",
    "emploi",
    "formation",
    "santé",
    "accès",
    "droits",
    "écrivain",
    "public",
    "jeunes",
    "femmes",
];

/// Deterministic, realistic-looking records spread over the Département's communes.
fn directory(services: usize) -> (Vec<Structure>, Vec<Service>) {
    let communes = 333;
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let structures: Vec<Structure> = (0..communes * STRUCTURES_PER_COMMUNE)
        .map(|i| Structure {
            id: format!("st-{i}"),
            source: "bench".into(),
            nom: format!("Structure {} {}", WORDS[i % WORDS.len()], i),
            code_insee: Some(format!("35{:03}", i % communes + 1)),
            commune: Some(format!("Commune {}", i % communes + 1)),
            horaires_accueil: Some("Mo-Fr 09:00-12:00,14:00-17:00".into()),
            ..Default::default()
        })
        .collect();
    let services = (0..services)
        .map(|i| {
            let structure = &structures[next() % structures.len()];
            let category = THEMATIQUE_CATEGORIES[next() % THEMATIQUE_CATEGORIES.len()];
            Service {
                id: format!("svc-{i}"),
                structure_id: structure.id.clone(),
                source: "bench".into(),
                nom: format!(
                    "{} {} {}",
                    WORDS[next() % WORDS.len()],
                    WORDS[next() % WORDS.len()],
                    i
                ),
                description: Some(
                    (0..12)
                        .map(|_| WORDS[next() % WORDS.len()])
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                thematiques: vec![format!("{category}--sous-thematique-{}", next() % 5)],
                publics: vec!["tous-publics".into()],
                code_insee: structure.code_insee.clone(),
                zone_eligibilite: vec!["35".into()],
                ..Default::default()
            }
        })
        .collect();
    (structures, services)
}

fn coordinator<T>(t: &TestStack, message: T) -> tonic::Request<T> {
    t.as_agent(
        Institution::Social,
        Role::Coordinator,
        "bench",
        Institution::Social,
        message,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(backend: Backend, services: usize) {
    let t = start_under(backend, 11, false, "ille-et-vilaine-2023").await;
    let mut client = DirectoryServiceClient::new(t.channel(Institution::Social).await)
        .max_decoding_message_size(64 << 20);
    let (structures, records) = directory(services);
    let loading = Instant::now();
    client
        .import_data_inclusion(coordinator(
            &t,
            v1::ImportDataInclusionRequest {
                idempotency_key: "bench-structures".into(),
                structures_json: serde_json::to_string(&structures).expect("json"),
                services_json: "[]".into(),
            },
        ))
        .await
        .expect("structures");
    for (i, chunk) in records.chunks(2_000).enumerate() {
        let report = client
            .import_data_inclusion(coordinator(
                &t,
                v1::ImportDataInclusionRequest {
                    idempotency_key: format!("bench-services-{i}"),
                    structures_json: "[]".into(),
                    services_json: serde_json::to_string(chunk).expect("json"),
                },
            ))
            .await
            .expect("services")
            .into_inner();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected.first());
    }
    println!(
        "{backend:?}: {services} services in {} structures imported in {:.1} s",
        structures.len(),
        loading.elapsed().as_secs_f64()
    );
    let queries = [
        (
            "thématique + commune",
            v1::SearchServicesRequest {
                thematiques: vec!["logement-hebergement".into()],
                code_insee: "35238".into(),
                ..Default::default()
            },
        ),
        (
            "free text, two words",
            v1::SearchServicesRequest {
                text: "Épicerie solidaire".into(),
                ..Default::default()
            },
        ),
        (
            "thématique + open now",
            v1::SearchServicesRequest {
                thematiques: vec!["mobilite".into()],
                open_now: true,
                ..Default::default()
            },
        ),
        (
            "everything, first page",
            v1::SearchServicesRequest::default(),
        ),
    ];
    for (label, query) in queries {
        let mut timings = vec![];
        let mut total = 0;
        for round in 0..30 {
            let request = t.as_agent(
                Institution::Emploi,
                Role::Counsellor,
                "ft-bench",
                Institution::Social,
                query.clone(),
            );
            let started = Instant::now();
            let answer = client
                .search_services(request)
                .await
                .expect("search")
                .into_inner();
            // The first rounds warm caches; they are not counted.
            if round >= 5 {
                timings.push(started.elapsed());
            }
            total = answer.total;
        }
        timings.sort();
        println!(
            "  {label:<24} {total:>6} matches   p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
            percentile(&timings, 0.5).as_secs_f64() * 1e3,
            percentile(&timings, 0.95).as_secs_f64() * 1e3,
            timings.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    t.shutdown().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let services = args
        .iter()
        .position(|a| a == "--services")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    for backend in backends() {
        run(backend, services).await;
    }
}
