//! The directory's records between the wire and the domain: the wire's
//! empty strings are the schema's absent values.

use passerelle_domain::directory::{Rejection, Service, Structure};

use crate::v1;

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn text(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

impl From<&v1::DirectoryStructure> for Structure {
    fn from(p: &v1::DirectoryStructure) -> Self {
        Structure {
            id: p.id.trim().to_owned(),
            source: p.source.trim().to_owned(),
            nom: p.nom.trim().to_owned(),
            date_maj: opt(&p.date_maj),
            siret: opt(&p.siret),
            commune: opt(&p.commune),
            code_postal: opt(&p.code_postal),
            code_insee: opt(&p.code_insee),
            adresse: opt(&p.adresse),
            complement_adresse: opt(&p.complement_adresse),
            longitude: p.longitude,
            latitude: p.latitude,
            telephone: opt(&p.telephone),
            courriel: opt(&p.courriel),
            site_web: opt(&p.site_web),
            description: opt(&p.description),
            horaires_accueil: opt(&p.horaires_accueil),
            accessibilite_lieu: opt(&p.accessibilite_lieu),
            reseaux_porteurs: p.reseaux_porteurs.clone(),
            extra: Default::default(),
        }
    }
}

impl From<&Structure> for v1::DirectoryStructure {
    fn from(d: &Structure) -> Self {
        v1::DirectoryStructure {
            id: d.id.clone(),
            source: d.source.clone(),
            nom: d.nom.clone(),
            date_maj: text(&d.date_maj),
            siret: text(&d.siret),
            commune: text(&d.commune),
            code_postal: text(&d.code_postal),
            code_insee: text(&d.code_insee),
            adresse: text(&d.adresse),
            complement_adresse: text(&d.complement_adresse),
            longitude: d.longitude,
            latitude: d.latitude,
            telephone: text(&d.telephone),
            courriel: text(&d.courriel),
            site_web: text(&d.site_web),
            description: text(&d.description),
            horaires_accueil: text(&d.horaires_accueil),
            accessibilite_lieu: text(&d.accessibilite_lieu),
            reseaux_porteurs: d.reseaux_porteurs.clone(),
        }
    }
}

impl From<&v1::DirectoryEntry> for Service {
    fn from(p: &v1::DirectoryEntry) -> Self {
        Service {
            id: p.id.trim().to_owned(),
            structure_id: p.structure_id.trim().to_owned(),
            source: p.source.trim().to_owned(),
            nom: p.nom.trim().to_owned(),
            description: opt(&p.description),
            date_maj: opt(&p.date_maj),
            types: p.types.clone(),
            thematiques: p.thematiques.clone(),
            frais: opt(&p.frais),
            publics: p.publics.clone(),
            conditions_acces: opt(&p.conditions_acces),
            commune: opt(&p.commune),
            code_postal: opt(&p.code_postal),
            code_insee: opt(&p.code_insee),
            adresse: opt(&p.adresse),
            telephone: opt(&p.telephone),
            courriel: opt(&p.courriel),
            contact_nom_prenom: opt(&p.contact_nom_prenom),
            zone_eligibilite: p.zone_eligibilite.clone(),
            modes_accueil: p.modes_accueil.clone(),
            modes_mobilisation: p.modes_mobilisation.clone(),
            mobilisable_par: p.mobilisable_par.clone(),
            horaires_accueil: opt(&p.horaires_accueil),
            volume_horaire_hebdomadaire: p.volume_horaire_hebdomadaire,
            nombre_semaines: p.nombre_semaines,
            extra: Default::default(),
        }
    }
}

impl From<&Service> for v1::DirectoryEntry {
    fn from(d: &Service) -> Self {
        v1::DirectoryEntry {
            id: d.id.clone(),
            structure_id: d.structure_id.clone(),
            source: d.source.clone(),
            nom: d.nom.clone(),
            description: text(&d.description),
            date_maj: text(&d.date_maj),
            types: d.types.clone(),
            thematiques: d.thematiques.clone(),
            frais: text(&d.frais),
            publics: d.publics.clone(),
            conditions_acces: text(&d.conditions_acces),
            commune: text(&d.commune),
            code_postal: text(&d.code_postal),
            code_insee: text(&d.code_insee),
            adresse: text(&d.adresse),
            telephone: text(&d.telephone),
            courriel: text(&d.courriel),
            contact_nom_prenom: text(&d.contact_nom_prenom),
            zone_eligibilite: d.zone_eligibilite.clone(),
            modes_accueil: d.modes_accueil.clone(),
            modes_mobilisation: d.modes_mobilisation.clone(),
            mobilisable_par: d.mobilisable_par.clone(),
            horaires_accueil: text(&d.horaires_accueil),
            volume_horaire_hebdomadaire: d.volume_horaire_hebdomadaire,
            nombre_semaines: d.nombre_semaines,
        }
    }
}

impl From<&Rejection> for v1::ImportRejection {
    fn from(d: &Rejection) -> Self {
        v1::ImportRejection {
            collection: d.collection.clone(),
            index: d.index,
            id: d.id.clone(),
            field: d.field.clone(),
            reason: d.reason.clone(),
        }
    }
}
