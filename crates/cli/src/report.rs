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
    let (width, row, left) = (640, 28, 190);
    let height = 40 + row * bars.len().max(1) + if target.is_some() { 24 } else { 0 };
    let max = bars
        .iter()
        .filter_map(|(_, v)| *v)
        .chain(target.map(|(_, t)| t))
        .max()
        .unwrap_or(1)
        .max(1);
    let scale = |v: u64| (v as f64 / max as f64 * f64::from(width - left - 70)) as u32;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}"><title>{t}</title><defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs><text x="0" y="18" font-size="15" font-weight="bold">{t}</text>"##,
        t = escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 32 + row * i;
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
    }
    if let Some((label, t)) = target {
        let x = left + scale(t);
        let bottom = 32 + row * bars.len().max(1);
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="28" x2="{x}" y2="{bottom}" stroke="#c0392b" stroke-width="2" stroke-dasharray="5,3"/><text x="{x}" y="{ty}" font-size="12" fill="#c0392b" text-anchor="end">{l} : {t}</text>"##,
            ty = bottom + 16,
            l = escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn table_html(t: &v1::PublishedTable) -> String {
    let mut html = format!("<h3>{}</h3>", escape(&title_of(&t.name)));
    if t.withheld {
        html.push_str(
            "<p class=\"note\">Tableau non publié : trop peu de personnes pour le protéger.</p>",
        );
        return html;
    }
    html.push_str("<table><thead><tr><th></th>");
    for c in &t.columns {
        let _ = write!(html, "<th>{}</th>", escape(c));
    }
    html.push_str("<th>Total</th></tr></thead><tbody>");
    for (r, row) in t.rows.iter().enumerate() {
        let _ = write!(html, "<tr><th>{}</th>", escape(row));
        for c in 0..t.columns.len() {
            let _ = write!(
                html,
                "<td>{}</td>",
                cell_text(t.cells.get(r * t.columns.len() + c))
            );
        }
        let _ = write!(
            html,
            "<td><b>{}</b></td></tr>",
            t.row_totals.get(r).copied().unwrap_or_default()
        );
    }
    html.push_str("<tr><th>Total</th>");
    for total in &t.column_totals {
        let _ = write!(html, "<td><b>{total}</b></td>");
    }
    html.push_str("<td></td></tr></tbody></table>");
    html
}

fn title_of(name: &str) -> String {
    match name {
        "exits_by_office" => "Sorties par type et par structure de rattachement",
        "entry_delay_by_year" => "Délai orientation → entrée (jours), par année d'entrée",
        "referrals_by_month" => "Orientations par mois et par réseau prescripteur",
        "barriers_by_office" => "Typologie des freins par structure (attribut sensible)",
        "age_band_by_office" => "Âge à l'orientation, par structure",
        "rsa_by_office" => "Bénéficiaires du RSA, par structure (attribut sensible)",
        "exclusive_support_by_office" => {
            "Accompagnement social exclusif : entrées par structure et par année (quota)"
        }
        other => other,
    }
    .to_owned()
}

fn table<'a>(d: &'a v1::Dashboard, name: &str) -> Option<&'a v1::PublishedTable> {
    d.tables.iter().find(|t| t.name == name && !t.withheld)
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
    let entries = value(d.entries.as_ref());
    let target = agreement
        .targets
        .entries_per_counsellor_per_year
        .map(|per| {
            (
                "objectif annuel",
                (f64::from(per) * agreement.capacity.counsellors_fte) as u64,
            )
        })
        .or(agreement
            .targets
            .participants
            .map(|p| ("objectif de participants", u64::from(p))));
    body.push_str(&bar_chart(
        "Entrées cumulées au regard de l'objectif",
        &[
            ("Entrées cumulées".into(), entries),
            ("En cours".into(), value(d.in_progress.as_ref())),
        ],
        target,
    ));

    body.push_str("<h2>Délai d'entrée</h2>");
    if let Some(t) = table(d, "entry_delay_by_year") {
        let bars: Vec<(String, Option<u64>)> = t
            .columns
            .iter()
            .zip(&t.column_totals)
            .map(|(c, n)| (format!("{c} j"), Some(*n)))
            .collect();
        body.push_str(&bar_chart(
            "Répartition des délais orientation → entrée",
            &bars,
            None,
        ));
    }
    let targets: Vec<String> = agreement
        .targets
        .entry_delay
        .iter()
        .map(|t| format!("{} : {} jours", t.year, t.days))
        .collect();
    let _ = write!(
        body,
        "<p>Délai moyen : <b>{}</b>{}</p>",
        if d.average_entry_delay_suppressed {
            "masqué".to_owned()
        } else {
            format!("{:.1} jours", d.average_entry_delay_days)
        },
        if targets.is_empty() {
            String::new()
        } else {
            format!(" — objectifs de la convention : {}", targets.join(", "))
        }
    );

    body.push_str("<h2>Portefeuilles</h2>");
    let average = value(d.in_progress.as_ref())
        .map(|n| (n as f64 / agreement.capacity.counsellors_fte).round() as u64);
    body.push_str(&bar_chart(
        "Portefeuille moyen par conseiller (ETP) au regard de la capacité",
        &[("Portefeuille moyen".into(), average)],
        Some(("maximum", u64::from(agreement.capacity.portfolio_max))),
    ));

    body.push_str("<h2>Sorties</h2>");
    let exits: Vec<(String, Option<u64>)> = d
        .exits_by_type
        .iter()
        .map(|c| (c.key.clone(), value(Some(c))))
        .collect();
    body.push_str(&bar_chart("Sorties par type", &exits, None));

    body.push_str("<h2>Typologie des freins</h2>");
    match table(d, "barriers_by_office") {
        Some(t) => {
            let bars: Vec<(String, Option<u64>)> = t
                .columns
                .iter()
                .zip(&t.column_totals)
                .map(|(c, n)| (c.clone(), Some(*n)))
                .collect();
            body.push_str(&bar_chart("Freins repérés à l'orientation", &bars, None));
        }
        None => body.push_str("<p class=\"note\">Non publié : trop peu de personnes.</p>"),
    }

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
<html lang="fr"><head><meta charset="utf-8"><title>Comité de pilotage — {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2rem; max-width: 900px; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #bbb; padding: .2rem .6rem; text-align: right; }}
thead th {{ background: #eef3f7; }}
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
    let mut files = vec![("indicateurs.csv".to_owned(), scalars)];
    for t in &d.tables {
        let mut csv = String::from("ligne,colonne,valeur\n");
        if !t.withheld {
            for (r, row) in t.rows.iter().enumerate() {
                for (c, column) in t.columns.iter().enumerate() {
                    let _ = writeln!(
                        csv,
                        "{row},{column},{}",
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
    fn masked_values_never_reach_the_page() {
        let chart = bar_chart(
            "Sorties",
            &[("job".into(), Some(42)), ("training".into(), None)],
            Some(("objectif", 50)),
        );
        assert!(chart.contains(">42<") && chart.contains("masqué"));
        let d = v1::Dashboard {
            tables: vec![v1::PublishedTable {
                name: "exits_by_office".into(),
                rows: vec!["MDS-01".into()],
                columns: vec!["job".into(), "training".into()],
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
                row_totals: vec![19],
                column_totals: vec![7, 12],
                withheld: false,
            }],
            ..Default::default()
        };
        let csv = csv_files(&d);
        assert_eq!(
            csv[1].1,
            "ligne,colonne,valeur\nMDS-01,job,s\nMDS-01,training,s\n"
        );
    }
}
