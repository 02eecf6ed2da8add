//! `passerelle report`: the steering committee's report, from the steering
//! service's dashboard alone (aggregates already under statistical secrecy),
//! as one self-contained HTML page with inline SVG charts, and the same
//! tables as CSV files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use passerelle_contract::v1;
use passerelle_domain::agreement::Agreement;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell_text(c: Option<&v1::Cell>) -> String {
    match c {
        Some(c) if c.suppressed => "s".into(),
        Some(c) => c.count.to_string(),
        None => "—".into(),
    }
}

fn value(c: Option<&v1::Cell>) -> Option<u64> {
    c.filter(|c| !c.suppressed).map(|c| c.count)
}

/// A horizontal bar chart; a masked bar is drawn hatched, without a value.
/// `target` draws a reference line with its label.
pub fn bar_chart(
    title: &str,
    bars: &[(String, Option<u64>)],
    target: Option<(&str, u64)>,
) -> String {
    chart(title, bars, target, &[], "")
}

/// A bar chart whose bars each have their own target (`marks`, one per
/// bar), drawn as a red tick across the bar and named `mark_label`.
pub fn bar_chart_marked(
    title: &str,
    bars: &[(String, Option<u64>)],
    marks: &[Option<u64>],
    mark_label: &str,
) -> String {
    chart(title, bars, None, marks, mark_label)
}

fn chart(
    title: &str,
    bars: &[(String, Option<u64>)],
    target: Option<(&str, u64)>,
    marks: &[Option<u64>],
    mark_label: &str,
) -> String {
    let row = 28;
    // Room for the longest label (about 7 px a character at this size).
    let longest = bars
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let left = (longest * 7 + 16).clamp(120, 360);
    let width = left + 440;
    let legend = target.is_some() || marks.iter().any(Option::is_some);
    let height = 40 + row * bars.len().max(1) as u32 + if legend { 24 } else { 0 };
    let max = bars
        .iter()
        .filter_map(|(_, v)| *v)
        .chain(target.map(|(_, t)| t))
        .chain(marks.iter().flatten().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let scale = |v: u64| (v as f64 / max as f64 * f64::from(width - left - 180)) as u32;
    // Scales with the page: the full size on a desk, narrower on a phone.
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" aria-label="{t}"><title>{t}</title><defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs><text x="0" y="18" font-size="15" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 32 + row * i as u32;
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{ty}" font-size="12" text-anchor="end">{l}</text>"##,
            x = left - 8,
            ty = y + 16,
            l = escape(label)
        );
        match v {
            Some(v) => {
                let _ = write!(
                    svg,
                    r##"<rect x="{left}" y="{y}" width="{w}" height="20" fill="#2f6f9f"/><text x="{tx}" y="{ty}" font-size="12">{v}</text>"##,
                    w = scale(*v).max(1),
                    tx = left + scale(*v) + 6,
                    ty = y + 15
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r##"<rect x="{left}" y="{y}" width="60" height="20" fill="url(#hatch)" stroke="#999"/><text x="{tx}" y="{ty}" font-size="12" fill="#666">masqué (secret statistique)</text>"##,
                    tx = left + 66,
                    ty = y + 15
                );
            }
        }
        if let Some(Some(m)) = marks.get(i) {
            let x = left + scale(*m);
            let _ = write!(
                svg,
                r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" stroke="#c0392b" stroke-width="3"/><text x="{tx}" y="{ty}" font-size="11" fill="#c0392b">{m}</text>"##,
                y1 = y - 3,
                y2 = y + 23,
                tx = x + 4,
                ty = y - 4
            );
        }
    }
    let bottom = 32 + row * bars.len().max(1) as u32;
    if let Some((label, t)) = target {
        let x = left + scale(t);
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="28" x2="{x}" y2="{bottom}" stroke="#c0392b" stroke-width="2" stroke-dasharray="5,3"/><text x="{x}" y="{ty}" font-size="12" fill="#c0392b" text-anchor="end">{l} : {t}</text>"##,
            ty = bottom + 16,
            l = escape(label)
        );
    } else if marks.iter().any(Option::is_some) {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y1}" x2="{left}" y2="{y2}" stroke="#c0392b" stroke-width="3"/><text x="{tx}" y="{ty}" font-size="12" fill="#c0392b">{l}</text>"##,
            y1 = bottom + 4,
            y2 = bottom + 20,
            tx = left + 8,
            ty = bottom + 16,
            l = escape(mark_label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The entries a year should count under the agreement, in proportion to
/// the part of that year the agreement covers: per counsellor (× FTE) where
/// the agreement says so, else its participants over its whole term.
pub fn entries_target(agreement: &Agreement, fte: f64, year: i32) -> Option<u64> {
    use chrono::NaiveDate;
    let term = &agreement.term;
    let first = NaiveDate::from_ymd_opt(year, 1, 1)?;
    let last = NaiveDate::from_ymd_opt(year, 12, 31)?;
    let covered = |from: NaiveDate, to: NaiveDate| (to - from).num_days() + 1;
    let (from, to) = (first.max(term.starts_on), last.min(term.ends_on));
    if from > to {
        return None;
    }
    let share_of_year = covered(from, to) as f64 / covered(first, last) as f64;
    let targets = &agreement.targets;
    let target = match (
        targets.entries_per_counsellor_per_year,
        targets.participants,
    ) {
        (Some(per), _) => f64::from(per) * fte * share_of_year,
        (None, Some(all)) => {
            f64::from(all) * covered(from, to) as f64 / covered(term.starts_on, term.ends_on) as f64
        }
        (None, None) => return None,
    };
    Some(target.round() as u64)
}

/// The cell at (row label, column label) of a published table.
fn at<'a>(t: &'a v1::PublishedTable, row: &str, column: &str) -> Option<&'a v1::Cell> {
    let r = t.rows.iter().position(|x| x == row)?;
    let c = t.columns.iter().position(|x| x == column)?;
    t.cells.get(r * t.columns.len() + c)
}

/// The headings shown on the page: months are left to the CSV files when
/// quarters sum them, so that a table stays readable.
fn shown(headings: &[String], levels: &[String]) -> Vec<usize> {
    let has_quarters = levels.iter().any(|l| l == "quarter");
    (0..headings.len())
        .filter(|&i| !(has_quarters && levels.get(i).is_some_and(|l| l == "month")))
        .collect()
}

fn table_html(t: &v1::PublishedTable) -> String {
    let title = if t.title.is_empty() {
        &t.name
    } else {
        &t.title
    };
    let view = match t.name.rsplit_once('.') {
        Some((_, "by_month")) => " — par période",
        Some((_, "by_office")) => " — par structure et réseau",
        _ => "",
    };
    let mut html = format!(
        "<h3>{}{view}{}</h3>",
        escape(title),
        if t.sensitive {
            " (attribut sensible)"
        } else {
            ""
        }
    );
    if t.withheld {
        html.push_str(
            "<p class=\"note\">Tableau non publié : trop peu de personnes pour le protéger.</p>",
        );
        return html;
    }
    let (rows, columns) = (
        shown(&t.rows, &t.row_levels),
        shown(&t.columns, &t.column_levels),
    );
    let level = |levels: &[String], i: usize| levels.get(i).cloned().unwrap_or_default();
    // Many columns: the table scrolls on a phone instead of widening the page.
    html.push_str("<div class=\"wide\"><table><thead><tr><th></th>");
    for &c in &columns {
        let _ = write!(
            html,
            "<th class=\"{}\">{}</th>",
            escape(&level(&t.column_levels, c)),
            escape(&t.columns[c])
        );
    }
    html.push_str("</tr></thead><tbody>");
    for &r in &rows {
        let _ = write!(
            html,
            "<tr class=\"{}\"><th>{}</th>",
            escape(&level(&t.row_levels, r)),
            escape(&t.rows[r])
        );
        for &c in &columns {
            let _ = write!(
                html,
                "<td>{}</td>",
                cell_text(t.cells.get(r * t.columns.len() + c))
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}

/// The table `name` when published (not withheld under secrecy).
pub(crate) fn table<'a>(d: &'a v1::Dashboard, name: &str) -> Option<&'a v1::PublishedTable> {
    d.tables.iter().find(|t| t.name == name && !t.withheld)
}

/// The total row of a table, one bar per leaf column.
pub(crate) fn total_bars(t: &v1::PublishedTable) -> Vec<(String, Option<u64>)> {
    (0..t.columns.len())
        .filter(|&c| t.column_levels.get(c).is_some_and(|l| l == "key"))
        .map(|c| (t.columns[c].clone(), value(at(t, "total", &t.columns[c]))))
        .collect()
}

/// Orientations into the three parcours, changes between them and entries
/// into accompagnement global by parcours, where the agreement runs them.
fn parcours_section(
    body: &mut String,
    d: &v1::Dashboard,
    parcours: &passerelle_domain::orientation::ParcoursRules,
) {
    let label = |code: &str| {
        parcours
            .tracks
            .iter()
            .find(|t| t.code.code() == code)
            .map_or(code.to_owned(), |t| t.label.clone())
    };
    let labelled = |bars: Vec<(String, Option<u64>)>| -> Vec<(String, Option<u64>)> {
        bars.into_iter().map(|(k, v)| (label(&k), v)).collect()
    };
    let where_ = if parcours.offices.is_empty() {
        "sur tout le territoire".to_owned()
    } else {
        format!("sur {}", parcours.offices.join(", "))
    };
    let _ = write!(
        body,
        "<h2>Parcours</h2><p>Trois parcours {}, décidés par le Département pour les bénéficiaires du RSA et par France Travail pour les autres ; l'accompagnement global est une offre mobilisable sur : {}.</p>",
        escape(&where_),
        escape(
            &parcours
                .opening(passerelle_domain::orientation::Offer::GlobalSupport)
                .map(|p| label(p.code()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    let charts: [(&str, &str, bool); 3] = [
        (
            "orientations.by_office",
            "Personnes orientées dans un parcours",
            true,
        ),
        (
            "parcours_changes.by_office",
            "Changements de parcours en cours d'accompagnement (de -> vers)",
            false,
        ),
        (
            "entries_by_parcours.by_office",
            "Entrées en accompagnement global, par parcours d'origine",
            true,
        ),
    ];
    for (name, title, by_parcours) in charts {
        match table(d, name) {
            Some(t) => {
                let bars = total_bars(t);
                let bars = if by_parcours { labelled(bars) } else { bars };
                body.push_str(&bar_chart(title, &bars, None));
            }
            None => {
                let _ = write!(
                    body,
                    "<p class=\"note\">{} : non publié (trop peu de personnes).</p>",
                    escape(title)
                );
            }
        }
    }
    body.push_str("<p class=\"note\">Par mois et par agence : voir les tableaux orientations, parcours_changes et entries_by_parcours.</p>");
}

/// The report as one HTML page.
pub fn html(answer: &v1::GetDashboardResponse, agreement: &Agreement) -> String {
    let empty = v1::Dashboard::default();
    let d = answer.dashboard.as_ref().unwrap_or(&empty);
    let mut body = String::new();
    let assembled = d
        .assembled_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%d/%m/%Y %H:%M UTC").to_string())
        .unwrap_or_default();
    let _ = write!(
        body,
        "<h1>Comité de pilotage — {}</h1><p>Indicateurs au {assembled}, agrégats seuls ; toute case de moins de {} personnes est masquée (s), ainsi que celles qui permettraient de la retrouver.</p>",
        escape(&agreement.name),
        d.min_cell_size
    );
    for s in &d.sources {
        if !s.fresh {
            body.push_str("<p class=\"warn\">Une source n'a pas répondu : ses derniers chiffres connus sont affichés.</p>");
        }
    }
    if let Some(next) = answer.calendar.as_ref().and_then(|c| c.next.as_ref()) {
        let _ = write!(
            body,
            "<p class=\"next\">Prochaine échéance : <b>{}</b> — {}</p>",
            escape(&next.on),
            escape(&next.label)
        );
    }

    body.push_str("<h2>Entrées</h2>");
    let staffing = d.staffing.clone().unwrap_or_default();
    let entries = value(d.entries.as_ref());
    let fte = staffing
        .counsellors_fte
        .max(agreement.capacity.counsellors_fte);
    let by_year: Vec<(String, Option<u64>)> = staffing
        .entries_by_year
        .iter()
        .map(|y| (y.year.clone(), value(y.entries.as_ref())))
        .collect();
    let year_targets: Vec<Option<u64>> = staffing
        .entries_by_year
        .iter()
        .map(|y| {
            y.year
                .parse()
                .ok()
                .and_then(|year| entries_target(agreement, fte, year))
        })
        .collect();
    body.push_str(&bar_chart_marked(
        "Entrées par année au regard de l'objectif",
        &by_year,
        &year_targets,
        "objectif de l'année (au prorata de la part de l'année dans la convention)",
    ));
    if let Some(t) = table(d, "entries") {
        let quarters: Vec<(String, Option<u64>)> = (0..t.columns.len())
            .filter(|&c| t.column_levels.get(c).is_some_and(|l| l == "quarter"))
            .map(|c| (t.columns[c].clone(), value(at(t, "total", &t.columns[c]))))
            .collect();
        body.push_str(&bar_chart("Entrées par trimestre", &quarters, None));
    }
    body.push_str(&bar_chart(
        "Entrées cumulées au regard de l'objectif de participants",
        &[
            ("Entrées cumulées".into(), entries),
            ("En cours".into(), value(d.in_progress.as_ref())),
        ],
        agreement
            .targets
            .participants
            .map(|p| ("objectif de participants", u64::from(p))),
    ));
    body.push_str("<div class=\"wide\"><table><thead><tr><th>Année</th><th>Entrées</th><th>Objectif d'entrées</th><th>Par conseiller (ETP)</th><th>Objectif par conseiller</th></tr></thead><tbody>");
    for (y, target) in staffing.entries_by_year.iter().zip(&year_targets) {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&y.year),
            cell_text(y.entries.as_ref()),
            target.map_or("non fixé".into(), |v| v.to_string()),
            y.entries_per_counsellor
                .map_or("—".into(), |v| format!("{v:.1}")),
            y.target_per_counsellor
                .map_or("non fixé".into(), |v| v.to_string())
        );
    }
    body.push_str("</tbody></table></div>");

    body.push_str("<h2>Délai d'entrée</h2>");
    if let Some(t) = table(d, "entry_delay.by_month") {
        let bars: Vec<(String, Option<u64>)> = total_bars(t)
            .into_iter()
            .map(|(c, n)| (format!("{c} j"), n))
            .collect();
        body.push_str(&bar_chart(
            "Répartition des délais orientation → entrée",
            &bars,
            None,
        ));
    }
    let years: Vec<&v1::DelayFigure> = d.delays.iter().filter(|f| f.level == "year").collect();
    let target = years.iter().rev().find_map(|f| f.target_days);
    body.push_str(&bar_chart(
        "Délai moyen orientation → entrée (jours) par année, au regard de l'objectif",
        &years
            .iter()
            .map(|f| {
                (
                    f.period.clone(),
                    f.referral_to_entry_days.map(|v| v.round() as u64),
                )
            })
            .collect::<Vec<_>>(),
        target.map(|t| ("objectif", u64::from(t))),
    ));
    body.push_str("<div class=\"wide\"><table><thead><tr><th>Période</th><th>Entrées</th><th>Orientation → diagnostic</th><th>Diagnostic → entrée</th><th>Orientation → entrée</th><th>Objectif</th></tr></thead><tbody>");
    let days = |v: Option<f64>| v.map_or("masqué".to_owned(), |v| format!("{v:.1} j"));
    for f in d.delays.iter().filter(|f| f.level != "month") {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.period),
            cell_text(f.entries.as_ref()),
            days(f.referral_to_diagnosis_days),
            days(f.diagnosis_to_entry_days),
            days(f.referral_to_entry_days),
            f.target_days.map_or("—".into(), |t| format!("{t} j"))
        );
    }
    body.push_str("</tbody></table></div>");

    body.push_str("<h2>Portefeuilles</h2>");
    body.push_str(&bar_chart(
        "Portefeuille moyen par conseiller (ETP) au regard de la capacité",
        &[
            (
                "Portefeuille moyen".into(),
                staffing.average_portfolio.map(|v| v.round() as u64),
            ),
            (
                "Flux constant visé".into(),
                staffing.steady_portfolio_target.map(u64::from),
            ),
        ],
        Some(("maximum", u64::from(agreement.capacity.portfolio_max))),
    ));
    let _ = write!(
        body,
        "<p>Conseillers au registre : <b>{:.1} ETP</b> (convention : {:.1} ETP), portefeuille de {} à {}.</p>",
        staffing.counsellors_fte,
        staffing.agreed_fte,
        staffing.portfolio_min,
        staffing.portfolio_max
    );

    body.push_str("<h2>Sorties</h2>");
    let exits: Vec<(String, Option<u64>)> = d
        .exits_by_type
        .iter()
        .map(|c| (c.key.clone(), value(Some(c))))
        .collect();
    body.push_str(&bar_chart("Sorties par type", &exits, None));

    if let Some(parcours) = &agreement.parcours {
        parcours_section(&mut body, d, parcours);
    }

    body.push_str("<h2>Typologie des freins</h2>");
    match table(d, "barriers.by_office") {
        Some(t) => body.push_str(&bar_chart(
            "Freins repérés à l'orientation",
            &total_bars(t),
            None,
        )),
        None => body.push_str("<p class=\"note\">Non publié : trop peu de personnes.</p>"),
    }

    body.push_str("<h2>Fonds social européen</h2><div class=\"wide\"><table><thead><tr><th>Indicateur</th><th></th><th>Valeur</th></tr></thead><tbody>");
    for f in &d.esf {
        let _ = write!(
            body,
            "<tr><th>{}</th><td style=\"text-align:left\">{}</td><td>{}</td></tr>",
            escape(&f.code),
            escape(&f.label),
            cell_text(f.count.as_ref())
        );
    }
    body.push_str("</tbody></table></div>");

    body.push_str("<h2>Accompagnement social exclusif (axe 3)</h2>");
    match &agreement.exclusive_social_support {
        Some(axe3) => body.push_str(&bar_chart(
            "Entrées en accompagnement social exclusif au regard du quota annuel",
            &[(
                "Entrées".into(),
                value(d.exclusive_support_entries.as_ref()),
            )],
            Some(("quota annuel", u64::from(axe3.quota_per_year))),
        )),
        None => body.push_str("<p>La convention ne fixe pas de règle pour l'axe 3.</p>"),
    }

    body.push_str("<h2>Tableaux</h2>");
    for t in &d.tables {
        body.push_str(&table_html(t));
    }

    if let Some(c) = &answer.calendar {
        body.push_str("<h2>Vie de la convention</h2><ul>");
        for m in &c.milestones {
            let _ = write!(body, "<li>{} — {}</li>", escape(&m.on), escape(&m.label));
        }
        body.push_str("</ul>");
    }

    format!(
        r#"<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Comité de pilotage — {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2rem auto; padding: 0 1rem; max-width: 75rem; color: #222; }}
.wide {{ overflow-x: auto; }} svg {{ display: block; margin: .6rem 0 1rem; }}
h1 {{ font-size: 1.5rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #bbb; padding: .2rem .6rem; text-align: right; }}
thead th {{ background: #eef3f7; }}
tr.network th, tr.network td, tr.year th, tr.year td, tr.total th, tr.total td {{ font-weight: bold; background: #f6f6f6; }}
.note {{ color: #666; }} .warn {{ color: #a04000; }} .next {{ background: #fff6e0; padding: .4rem; }}
</style></head><body>
{body}
</body></html>
"#,
        title = escape(&agreement.name)
    )
}

/// The published figures as CSV files: the scalar indicators and one file per table.
pub fn csv_files(d: &v1::Dashboard) -> Vec<(String, String)> {
    let mut scalars = String::from("indicateur,cle,valeur\n");
    let mut line = |name: &str, key: &str, c: Option<&v1::Cell>| {
        let _ = writeln!(scalars, "{name},{key},{}", cell_text(c));
    };
    line("entrees", "", d.entries.as_ref());
    line("en_cours", "", d.in_progress.as_ref());
    line(
        "non_integrations_diagnostic",
        "",
        d.not_entered_at_diagnosis.as_ref(),
    );
    line("file_attente", "", d.queued.as_ref());
    line("axe3_entrees", "", d.exclusive_support_entries.as_ref());
    for (name, cells) in [
        ("sorties", &d.exits_by_type),
        ("orientations_par_reseau", &d.referrals_by_network),
        ("issues_des_orientations", &d.referral_outcomes),
        ("motifs_de_refus", &d.refusals_by_reason),
        ("diagnostics_en_attente", &d.awaiting_validation_by_party),
    ] {
        for c in cells {
            line(name, &c.key, Some(c));
        }
    }
    for f in &d.esf {
        line("fse", &f.code, f.count.as_ref());
    }
    let mut files = vec![("indicateurs.csv".to_owned(), scalars)];
    let mut delays = String::from(
        "periode,niveau,entrees,orientation_diagnostic_j,diagnostic_entree_j,orientation_entree_j,objectif_j\n",
    );
    let opt = |v: Option<f64>| v.map_or("s".to_owned(), |v| format!("{v:.1}"));
    for f in &d.delays {
        let _ = writeln!(
            delays,
            "{},{},{},{},{},{},{}",
            f.period,
            f.level,
            cell_text(f.entries.as_ref()),
            opt(f.referral_to_diagnosis_days),
            opt(f.diagnosis_to_entry_days),
            opt(f.referral_to_entry_days),
            f.target_days.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    files.push(("delais.csv".to_owned(), delays));
    for t in &d.tables {
        let mut csv = String::from("ligne,niveau_ligne,colonne,niveau_colonne,valeur\n");
        if !t.withheld {
            let level = |levels: &[String], i: usize| levels.get(i).cloned().unwrap_or_default();
            for (r, row) in t.rows.iter().enumerate() {
                for (c, column) in t.columns.iter().enumerate() {
                    let _ = writeln!(
                        csv,
                        "{row},{},{column},{},{}",
                        level(&t.row_levels, r),
                        level(&t.column_levels, c),
                        cell_text(t.cells.get(r * t.columns.len() + c))
                    );
                }
            }
        }
        files.push((format!("{}.csv", t.name), csv));
    }
    files
}

/// Writes `rapport.html` and the CSV files into `dir`; returns the page's path.
pub fn write(
    dir: &Path,
    answer: &v1::GetDashboardResponse,
    agreement: &Agreement,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let page = dir.join("rapport.html");
    std::fs::write(&page, html(answer, agreement))?;
    if let Some(d) = &answer.dashboard {
        for (name, content) in csv_files(d) {
            std::fs::write(dir.join(name), content)?;
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_year_is_set_the_agreements_target_in_proportion_to_its_part_of_the_term() {
        let sem = passerelle_domain::agreement::shipped("seine-et-marne-2020").expect("SeM");
        // 765 participants over 2020-2021: each year its share of the days.
        assert_eq!(entries_target(&sem, 7.2, 2020), Some(383));
        assert_eq!(entries_target(&sem, 7.2, 2021), Some(382));
        assert_eq!(entries_target(&sem, 7.2, 2022), None);
        let iev = passerelle_domain::agreement::shipped("ille-et-vilaine-2023").expect("IeV");
        // 127 a counsellor a year, 10 FTE; 2023 from 10 July only.
        assert_eq!(entries_target(&iev, 10.0, 2024), Some(1270));
        assert_eq!(entries_target(&iev, 10.0, 2023), Some(609));
        assert_eq!(entries_target(&iev, 10.0, 2026), None);
    }

    #[test]
    fn long_labels_get_the_room_they_need() {
        let label = "difficultes-administratives-ou-juridiques";
        let svg = bar_chart("Freins", &[(label.into(), Some(3))], None);
        // The label ends 8 px left of the bars, which start after its width.
        let left = label.chars().count() as u32 * 7 + 16;
        assert!(svg.contains(&format!("<rect x=\"{left}\"")), "{svg}");
        assert!(
            svg.contains(r#"width="100%""#),
            "the chart scales with the page"
        );
    }

    #[test]
    fn masked_values_never_reach_the_page() {
        let chart = bar_chart(
            "Sorties",
            &[("job".into(), Some(42)), ("training".into(), None)],
            Some(("objectif", 50)),
        );
        assert!(chart.contains(">42<") && chart.contains("masqué"));
        let d = v1::Dashboard {
            tables: vec![v1::PublishedTable {
                name: "exits.by_office".into(),
                rows: vec!["MDS-01".into()],
                columns: vec!["job".into(), "training".into()],
                row_levels: vec!["office".into()],
                column_levels: vec!["key".into(), "key".into()],
                cells: vec![
                    v1::Cell {
                        key: "MDS-01|job".into(),
                        count: 0,
                        suppressed: true,
                    },
                    v1::Cell {
                        key: "MDS-01|training".into(),
                        count: 0,
                        suppressed: true,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let csv = csv_files(&d);
        let exits = csv
            .iter()
            .find(|(n, _)| n == "exits.by_office.csv")
            .expect("file");
        assert_eq!(
            exits.1,
            "ligne,niveau_ligne,colonne,niveau_colonne,valeur\nMDS-01,office,job,key,s\nMDS-01,office,training,key,s\n"
        );
    }
}
