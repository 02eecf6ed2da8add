//! The resource directory (axe 1): structures and their services in the
//! data·inclusion schema v1, searched by professionals of both institutions.
//! Records keep the schema's own field names so a Département's existing
//! directory loads as is and publishes back unchanged; fields this model
//! does not know are kept too (`extra`), so a round trip loses nothing.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Thématique categories of the data·inclusion référentiel (`category--subcategory`).
pub const THEMATIQUE_CATEGORIES: &[&str] = &[
    "choisir-un-metier",
    "creer-une-entreprise",
    "difficultes-administratives-ou-juridiques",
    "difficultes-financieres",
    "equipement-et-alimentation",
    "famille",
    "lecture-ecriture-calcul",
    "logement-hebergement",
    "mobilite",
    "numerique",
    "preparer-sa-candidature",
    "remobilisation",
    "sante",
    "se-former",
    "souvrir-a-linternational",
    "trouver-un-emploi",
];

/// The employment-training categories: the sheets the employment side
/// co-administers where the agreement says so.
pub const EMPLOYMENT_TRAINING_CATEGORIES: &[&str] = &[
    "choisir-un-metier",
    "creer-une-entreprise",
    "preparer-sa-candidature",
    "se-former",
    "trouver-un-emploi",
];

pub const SERVICE_TYPES: &[&str] = &[
    "accompagnement",
    "accueil",
    "aide-financiere",
    "aide-materielle",
    "atelier",
    "autonomie",
    "delegation-demarche",
    "formation",
    "information",
    "numerique",
];

/// Words whose presence in a name or description makes pointing a person
/// to the entry itself revealing (health, justice, addiction, violence…),
/// normalised (lower case, no accents).
const SENSITIVE_WORDS: &[&str] = &[
    "sante mentale",
    "psychiatr",
    "psycholog",
    "addict",
    "alcool",
    "toxicoman",
    "csapa",
    "caarud",
    "vih",
    "sida",
    "ivg",
    "planning familial",
    "justice",
    "judiciaire",
    "spip",
    "prison",
    "detenu",
    "penitentiaire",
    "violences",
    "victime",
    "cmp ",
    "centre medico-psychologique",
    "handicap psychique",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Structure {
    pub id: String,
    pub source: String,
    pub nom: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_maj: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commune: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_postal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_insee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adresse: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complement_adresse: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courriel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_web: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horaires_accueil: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessibilite_lieu: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reseaux_porteurs: Vec<String>,
    /// Fields of the schema (or of a later version) this model does not use.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub structure_id: String,
    pub source: String,
    pub nom: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_maj: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thematiques: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frais: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions_acces: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commune: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_postal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_insee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adresse: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courriel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_nom_prenom: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_eligibilite: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes_accueil: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes_mobilisation: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mobilisable_par: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horaires_accueil: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_horaire_hebdomadaire: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nombre_semaines: Option<u32>,
    /// Fields of the schema (or of a later version) this model does not use.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn required(field: &str, value: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let n = value.trim().chars().count();
    if n < min || n > max {
        return Err(FieldError::new(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

fn digits(field: &str, value: Option<&str>, n: usize, alnum: bool) -> Result<(), FieldError> {
    match value {
        Some(v)
            if v.chars().count() != n
                || !v
                    .chars()
                    .all(|c| c.is_ascii_digit() || (alnum && c.is_ascii_alphanumeric())) =>
        {
            Err(FieldError::new(field, format!("must be {n} characters")))
        }
        _ => Ok(()),
    }
}

fn date(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    match value {
        Some(v) if NaiveDate::parse_from_str(v, "%Y-%m-%d").is_err() => {
            Err(FieldError::new(field, "must be a date, YYYY-MM-DD"))
        }
        _ => Ok(()),
    }
}

fn email(field: &str, value: Option<&str>) -> Result<(), FieldError> {
    match value {
        Some(v) if !v.contains('@') || v.contains(char::is_whitespace) => {
            Err(FieldError::new(field, "is not an e-mail address"))
        }
        _ => Ok(()),
    }
}

impl Structure {
    /// The schema's constraints, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        required("id", &self.id, 1, 200)?;
        required("source", &self.source, 1, 100)?;
        required("nom", &self.nom, 1, 150)?;
        date("date_maj", self.date_maj.as_deref())?;
        digits("siret", self.siret.as_deref(), 14, false)?;
        digits("code_postal", self.code_postal.as_deref(), 5, false)?;
        digits("code_insee", self.code_insee.as_deref(), 5, true)?;
        email("courriel", self.courriel.as_deref())?;
        Ok(())
    }
}

impl Service {
    /// The schema's constraints, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        required("id", &self.id, 1, 200)?;
        required("structure_id", &self.structure_id, 1, 200)?;
        required("source", &self.source, 1, 100)?;
        required("nom", &self.nom, 3, 150)?;
        date("date_maj", self.date_maj.as_deref())?;
        for (i, t) in self.thematiques.iter().enumerate() {
            let category = t.split("--").next().unwrap_or_default();
            if !THEMATIQUE_CATEGORIES.contains(&category) {
                return Err(FieldError::new(
                    format!("thematiques[{i}]"),
                    format!("{t} is not a thématique of the référentiel"),
                ));
            }
        }
        for (i, t) in self.types.iter().enumerate() {
            if !SERVICE_TYPES.contains(&t.as_str()) {
                return Err(FieldError::new(
                    format!("types[{i}]"),
                    format!("{t} is not a service type of the référentiel"),
                ));
            }
        }
        if let Some(frais) = &self.frais
            && ![
                "gratuit",
                "payant",
                "gratuit-sous-conditions",
                "adhesion",
                "pass-numerique",
            ]
            .contains(&frais.as_str())
        {
            return Err(FieldError::new(
                "frais",
                format!("{frais} is not a value of the référentiel"),
            ));
        }
        digits("code_postal", self.code_postal.as_deref(), 5, false)?;
        digits("code_insee", self.code_insee.as_deref(), 5, true)?;
        email("courriel", self.courriel.as_deref())?;
        if self.nombre_semaines == Some(0) {
            return Err(FieldError::new("nombre_semaines", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether every thématique is an employment-training one (and there is one).
    pub fn is_employment_training(&self) -> bool {
        !self.thematiques.is_empty()
            && self.thematiques.iter().all(|t| {
                EMPLOYMENT_TRAINING_CATEGORIES.contains(&t.split("--").next().unwrap_or_default())
            })
    }
}

/// Lower case, accents removed, for matching what professionals type.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'à' | 'â' | 'ä' | 'á' | 'ã' => out.push('a'),
            'é' | 'è' | 'ê' | 'ë' => out.push('e'),
            'î' | 'ï' | 'í' => out.push('i'),
            'ô' | 'ö' | 'ó' => out.push('o'),
            'ù' | 'û' | 'ü' | 'ú' => out.push('u'),
            'ç' => out.push('c'),
            'ÿ' => out.push('y'),
            'ñ' => out.push('n'),
            'œ' => out.push_str("oe"),
            'æ' => out.push_str("ae"),
            '’' | '\'' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Whether pointing a person to this entry would reveal something of art. 9
/// GDPR or of justice: such entries are flagged and never named across the
/// boundary.
pub fn looks_sensitive(service: &Service, structure: Option<&Structure>) -> bool {
    let text = normalise(&format!(
        "{} {} {} ",
        service.nom,
        service.description.as_deref().unwrap_or_default(),
        structure.map(|s| s.nom.as_str()).unwrap_or_default()
    ));
    SENSITIVE_WORDS.iter().any(|w| text.contains(w))
}

/// What a professional looks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    /// Thématiques or whole categories (`logement-hebergement` matches its subcategories).
    pub thematiques: Vec<String>,
    pub publics: Vec<String>,
    /// INSEE code of the commune, or the commune's name.
    pub code_insee: Option<String>,
    pub commune: Option<String>,
    pub text: Option<String>,
    /// Only what is open at this local (Europe/Paris) time.
    pub open_at: Option<NaiveDateTime>,
}

impl SearchQuery {
    /// Free text and commune normalised once, as `score` expects them.
    pub fn normalised(mut self) -> Self {
        self.text = self.text.map(|t| normalise(&t));
        self.commune = self.commune.map(|c| normalise(&c).trim().to_owned());
        self
    }
}

/// A service as the search sees it, with what it needs of its structure.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub service: Service,
    pub structure: Option<Structure>,
}

/// A candidate with its texts normalised once, for repeated searches.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub candidate: Candidate,
    name: String,
    description: String,
    structure_name: String,
    commune: Option<String>,
}

impl Prepared {
    pub fn new(candidate: Candidate) -> Self {
        let s = &candidate.service;
        let st = candidate.structure.as_ref();
        Prepared {
            name: normalise(&s.nom),
            description: normalise(s.description.as_deref().unwrap_or_default()),
            structure_name: st.map(|st| normalise(&st.nom)).unwrap_or_default(),
            commune: s
                .commune
                .as_deref()
                .or(st.and_then(|st| st.commune.as_deref()))
                .map(|c| normalise(c).trim().to_owned()),
            candidate,
        }
    }
}

impl SearchQuery {
    /// The score of a candidate, `None` when it does not match. Name matches
    /// weigh most, then description, then the structure; being in the
    /// commune asked for adds to the score.
    pub fn score(&self, p: &Prepared) -> Option<u32> {
        let c = &p.candidate;
        let s = &c.service;
        if !self.thematiques.is_empty()
            && !self.thematiques.iter().any(|wanted| {
                s.thematiques
                    .iter()
                    .any(|t| t == wanted || t.split("--").next() == Some(wanted.as_str()))
            })
        {
            return None;
        }
        if !self.publics.is_empty()
            && !s.publics.is_empty()
            && !s
                .publics
                .iter()
                .any(|p| p == "tous-publics" || self.publics.contains(p))
        {
            return None;
        }
        let mut score = 1;
        let insee = s
            .code_insee
            .as_deref()
            .or(c.structure.as_ref().and_then(|st| st.code_insee.as_deref()));
        if let Some(wanted) = &self.code_insee {
            let eligible = s
                .zone_eligibilite
                .iter()
                .any(|z| z == wanted || z == "france" || wanted.starts_with(z.as_str()));
            if insee == Some(wanted.as_str()) {
                score += 20;
            } else if !eligible {
                return None;
            }
        }
        if let Some(commune) = &self.commune {
            // Callers pass the commune normalised (see `SearchQuery::normalised`).
            if p.commune.as_deref() != Some(commune.as_str()) {
                return None;
            }
            score += 20;
        }
        if let Some(text) = &self.text {
            for term in text.split_whitespace().filter(|t| t.len() > 1) {
                let found = (p.name.contains(term) as u32) * 10
                    + (p.description.contains(term) as u32) * 3
                    + (p.structure_name.contains(term) as u32) * 2;
                if found == 0 {
                    return None;
                }
                score += found;
            }
        }
        if let Some(at) = self.open_at {
            let hours = s.horaires_accueil.as_deref().or(c
                .structure
                .as_ref()
                .and_then(|st| st.horaires_accueil.as_deref()));
            if hours.and_then(|h| is_open(h, at)) != Some(true) {
                return None;
            }
        }
        Some(score)
    }
}

const DAYS: [(&str, Weekday); 7] = [
    ("mo", Weekday::Mon),
    ("tu", Weekday::Tue),
    ("we", Weekday::Wed),
    ("th", Weekday::Thu),
    ("fr", Weekday::Fri),
    ("sa", Weekday::Sat),
    ("su", Weekday::Sun),
];

fn day(token: &str) -> Option<u32> {
    DAYS.iter().position(|(d, _)| *d == token).map(|i| i as u32)
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60).then_some(h * 60 + m)
}

/// Whether an OpenStreetMap `opening_hours` value says open at `at` (local
/// time). Understands the forms directories use: day lists and ranges,
/// several time ranges, `off`, `24/7`; `None` for anything else, so an
/// unparsed value never claims a place is open.
pub fn is_open(spec: &str, at: NaiveDateTime) -> Option<bool> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "24/7" {
        return Some(true);
    }
    let today = at.weekday().num_days_from_monday();
    let now = at.hour() * 60 + at.minute();
    let mut open = false;
    for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let (days, times) = rule.split_once(' ').unwrap_or((rule, ""));
        if days == "ph" {
            // Public holidays are not known here; their rule says nothing of other days.
            continue;
        }
        let mut applies = false;
        for part in days.split(',') {
            match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day(from)?, day(to)?);
                    applies |= if from <= to {
                        (from..=to).contains(&today)
                    } else {
                        today >= from || today <= to
                    };
                }
                None => applies |= day(part)? == today,
            }
        }
        if !applies {
            continue;
        }
        let times = times.trim();
        if times == "off" || times == "closed" {
            // A later rule for the same day replaces an earlier one.
            open = false;
            continue;
        }
        let mut in_range = false;
        for range in times.split(',') {
            let (from, to) = range.trim().split_once('-')?;
            let (from, to) = (minutes(from)?, minutes(to)?);
            in_range |= from <= now && now < to;
        }
        open = in_range;
    }
    Some(open)
}

/// One record an import could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// `structures` or `services`.
    pub collection: String,
    /// Position in the imported array.
    pub index: u32,
    /// The record's id when it had one.
    pub id: String,
    pub field: String,
    pub reason: String,
}

/// A record's position in its array, and the record or why it was refused.
pub type Parsed<T> = (u32, Result<T, Rejection>);

/// Parses a data·inclusion array record by record: a record that is not
/// even the right shape is rejected alone, never the whole file.
pub fn parse_records<T: serde::de::DeserializeOwned>(
    collection: &str,
    json: &str,
) -> Result<Vec<Parsed<T>>, FieldError> {
    let values: Vec<serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| FieldError::new(collection, format!("is not a JSON array of records: {e}")))?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let index = i as u32;
            let id = value
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            // The path names the field at fault, nested ones included.
            let parsed = serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
                let path = e.path().to_string();
                Rejection {
                    collection: collection.to_owned(),
                    index,
                    id,
                    field: if path == "." { "record".into() } else { path },
                    reason: e.into_inner().to_string(),
                }
            });
            (index, parsed)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .expect("valid")
    }

    #[test]
    fn opening_hours_in_the_forms_directories_use() {
        let spec = "Mo-Fr 08:30-12:30,13:30-17:00; Sa 09:00-12:00; PH off";
        // 2026-11-23 is a Monday.
        assert_eq!(is_open(spec, at(2026, 11, 23, 9, 0)), Some(true));
        assert_eq!(is_open(spec, at(2026, 11, 23, 12, 45)), Some(false));
        assert_eq!(is_open(spec, at(2026, 11, 28, 11, 59)), Some(true));
        assert_eq!(is_open(spec, at(2026, 11, 29, 10, 0)), Some(false));
        assert_eq!(
            is_open("Mo,We 14:00-18:00; We off", at(2026, 11, 25, 15, 0)),
            Some(false)
        );
        assert_eq!(is_open("24/7", at(2026, 11, 29, 3, 0)), Some(true));
        assert_eq!(is_open("sunrise-sunset", at(2026, 11, 23, 9, 0)), None);
    }

    #[test]
    fn accents_and_case_do_not_matter() {
        assert_eq!(
            normalise("Épicerie SOLIDAIRE à Rennes"),
            "epicerie solidaire a rennes"
        );
        assert_eq!(normalise("L’Œuvre"), "l oeuvre");
    }

    #[test]
    fn sensitive_entries_are_recognised() {
        let s = |nom: &str| Service {
            nom: nom.into(),
            ..Default::default()
        };
        assert!(looks_sensitive(
            &s("CSAPA — consultations addictologie"),
            None
        ));
        assert!(looks_sensitive(
            &s("Permanence d'accès au droit — SPIP"),
            None
        ));
        assert!(!looks_sensitive(
            &s("Atelier CV et lettre de motivation"),
            None
        ));
    }

    #[test]
    fn a_malformed_record_is_rejected_alone() {
        let json = r#"[{"id":"s1","source":"cd35","nom":"Épicerie"},{"id":"s2","nom":5},{"id":"s3","source":"cd35","nom":"CCAS"}]"#;
        let parsed = parse_records::<Structure>("structures", json).expect("array");
        assert!(parsed[0].1.is_ok() && parsed[2].1.is_ok());
        let rejected = parsed[1].1.as_ref().expect_err("wrong type");
        assert_eq!((rejected.index, rejected.id.as_str()), (1, "s2"));
    }

    #[test]
    fn validation_names_the_field() {
        let service = Service {
            id: "x".into(),
            structure_id: "s".into(),
            source: "cd35".into(),
            nom: "Aide au permis".into(),
            thematiques: vec!["mobilite--financer-mon-permis".into(), "voyages".into()],
            ..Default::default()
        };
        assert_eq!(
            service.validate().map_err(|e| e.field),
            Err("thematiques[1]".into())
        );
    }
}
