//! The two plans of a case: the social plan (social worker) and the
//! employment plan (counsellor), each theme → goal → action with statuses.
//! The details stay with their author's institution; only a summary of
//! counts per theme crosses to the partner.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::ids::CaseId;
use crate::person::optional_text;
use crate::vocabulary::{Institution, coded_enum};

/// Longest title of a goal or an action.
pub const MAX_TITLE: usize = 200;
const MAX_THEMES: usize = 20;
const MAX_GOALS: usize = 20;
const MAX_ACTIONS: usize = 50;

coded_enum!(PlanKind { Social => "social", Employment => "employment" });

coded_enum!(
    /// Themes: the data·inclusion thématiques for the social plan, the
    /// job-search themes of the PPAE for the employment plan.
    Theme {
        Mobility => "mobilite",
        Housing => "logement-hebergement",
        Health => "sante",
        FamilyChildcare => "famille",
        Financial => "difficultes-financieres",
        AdministrativeLegal => "difficultes-administratives-ou-juridiques",
        Digital => "numerique",
        LiteracyNumeracy => "lecture-ecriture-calcul",
        SocialInsertion => "remobilisation",
        JobProject => "projet-professionnel",
        JobSearch => "recherche-emploi",
        Training => "formation",
        WorkExperience => "mise-en-situation",
    }
);

coded_enum!(
    ActionStatus {
        Planned => "planned",
        InProgress => "in_progress",
        Done => "done",
        Abandoned => "abandoned",
    }
);

impl Theme {
    pub fn belongs_to(self, kind: PlanKind) -> bool {
        let employment = matches!(
            self,
            Theme::JobProject | Theme::JobSearch | Theme::Training | Theme::WorkExperience
        );
        employment == (kind == PlanKind::Employment)
    }
}

impl PlanKind {
    /// The institution whose agents hold this plan.
    pub fn holder(self) -> Institution {
        match self {
            PlanKind::Social => Institution::Social,
            PlanKind::Employment => Institution::Emploi,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAction {
    pub title: String,
    pub status: ActionStatus,
    /// The directory service the person is pointed to; stays local.
    #[serde(default)]
    pub directory_service_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanGoal {
    pub title: String,
    pub actions: Vec<PlanAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTheme {
    pub theme: Theme,
    pub goals: Vec<PlanGoal>,
}

/// A plan in full, as its author's institution holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub case_id: CaseId,
    pub kind: PlanKind,
    pub themes: Vec<PlanTheme>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Counts for one theme: what the partner sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThemeSummary {
    pub theme: Theme,
    pub goals: u32,
    pub planned: u32,
    pub in_progress: u32,
    pub done: u32,
    pub abandoned: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub case_id: CaseId,
    pub kind: PlanKind,
    pub themes: Vec<ThemeSummary>,
    pub updated_at: DateTime<Utc>,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Plan {
    /// Checks sizes, titles and themes, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.themes.len() > MAX_THEMES {
            return Err(FieldError::new(
                "plan.themes",
                format!("at most {MAX_THEMES}"),
            ));
        }
        for (t, theme) in self.themes.iter().enumerate() {
            let at = format!("plan.themes[{t}]");
            if !theme.theme.belongs_to(self.kind) {
                return Err(FieldError::new(
                    format!("{at}.theme"),
                    format!("{} is not a theme of the {} plan", theme.theme, self.kind),
                ));
            }
            if self.themes[..t].iter().any(|o| o.theme == theme.theme) {
                return Err(FieldError::new(format!("{at}.theme"), "is repeated"));
            }
            if theme.goals.is_empty() || theme.goals.len() > MAX_GOALS {
                return Err(FieldError::new(
                    format!("{at}.goals"),
                    format!("needs 1 to {MAX_GOALS} goals"),
                ));
            }
            for (g, goal) in theme.goals.iter().enumerate() {
                let at = format!("{at}.goals[{g}]");
                required_title(&format!("{at}.title"), &goal.title)?;
                if goal.actions.len() > MAX_ACTIONS {
                    return Err(FieldError::new(
                        format!("{at}.actions"),
                        format!("at most {MAX_ACTIONS}"),
                    ));
                }
                for (a, action) in goal.actions.iter().enumerate() {
                    required_title(&format!("{at}.actions[{a}].title"), &action.title)?;
                }
            }
        }
        Ok(())
    }

    /// What crosses: counts per theme, never a title.
    pub fn summary(&self) -> PlanSummary {
        PlanSummary {
            case_id: self.case_id.clone(),
            kind: self.kind,
            updated_at: self.updated_at,
            themes: self
                .themes
                .iter()
                .map(|t| {
                    let statuses: Vec<ActionStatus> = t
                        .goals
                        .iter()
                        .flat_map(|g| g.actions.iter().map(|a| a.status))
                        .collect();
                    let with = |s| count(statuses.iter().filter(|x| **x == s).count());
                    ThemeSummary {
                        theme: t.theme,
                        goals: count(t.goals.len()),
                        planned: with(ActionStatus::Planned),
                        in_progress: with(ActionStatus::InProgress),
                        done: with(ActionStatus::Done),
                        abandoned: with(ActionStatus::Abandoned),
                    }
                })
                .collect(),
        }
    }
}

fn required_title(field: &str, title: &str) -> Result<(), FieldError> {
    match optional_text(field, title, MAX_TITLE)? {
        Some(_) => Ok(()),
        None => Err(FieldError::new(field, "is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            case_id: "k".into(),
            kind: PlanKind::Social,
            themes: vec![PlanTheme {
                theme: Theme::Housing,
                goals: vec![PlanGoal {
                    title: "Stabiliser le logement".into(),
                    actions: vec![
                        PlanAction {
                            title: "Dossier FSL".into(),
                            status: ActionStatus::Done,
                            directory_service_id: None,
                        },
                        PlanAction {
                            title: "Rendez-vous bailleur".into(),
                            status: ActionStatus::Planned,
                            directory_service_id: Some("svc-csapa".into()),
                        },
                    ],
                }],
            }],
            updated_by: "sw".into(),
            updated_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
        }
    }

    #[test]
    fn the_summary_counts_and_carries_no_title() {
        let summary = plan().summary();
        assert_eq!(
            summary.themes,
            vec![ThemeSummary {
                theme: Theme::Housing,
                goals: 1,
                planned: 1,
                in_progress: 0,
                done: 1,
                abandoned: 0
            }]
        );
        let text = serde_json::to_string(&summary).expect("json");
        assert!(!text.contains("FSL") && !text.contains("Stabiliser") && !text.contains("csapa"));
    }

    #[test]
    fn themes_belong_to_their_plan_and_titles_are_required() {
        plan().validate().expect("valid");
        let mut wrong = plan();
        wrong.themes[0].theme = Theme::JobSearch;
        assert_eq!(
            wrong.validate().map_err(|e| e.field),
            Err("plan.themes[0].theme".into())
        );
        let mut untitled = plan();
        untitled.themes[0].goals[0].actions[1].title = "  ".into();
        assert_eq!(
            untitled.validate().map_err(|e| e.field),
            Err("plan.themes[0].goals[0].actions[1].title".into())
        );
    }
}
