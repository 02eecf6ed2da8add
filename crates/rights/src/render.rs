//! Documents people read: French, printable HTML (and Markdown cells).

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Paris;

/// A date as a French reader expects it, in Paris time.
pub fn date(at: DateTime<Utc>) -> String {
    at.with_timezone(&Paris).format("%d/%m/%Y").to_string()
}

/// A date and time, in Paris time.
pub fn date_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&Paris)
        .format("%d/%m/%Y %H:%M")
        .to_string()
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value inside a Markdown table cell: pipes and line breaks would break the row.
pub fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.45}\
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ccc}h3{font-size:1.05rem}\
table{border-collapse:collapse;width:100%;table-layout:fixed;margin:.5rem 0 1rem}th,td{border:1px solid #bbb;padding:.3rem .5rem;text-align:left;vertical-align:top}\
td{overflow-wrap:break-word}\
th{background:#f0f0f0}dl{display:grid;grid-template-columns:minmax(0,14rem) minmax(0,1fr);gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}\
@media (max-width:40rem){dl{grid-template-columns:minmax(0,1fr)}dd{margin-bottom:.5rem}\
table,tbody,tr,td{display:block;width:auto}thead{display:none}tr{border:1px solid #bbb;margin-bottom:.6rem}\
td{border:none;border-bottom:1px solid #eee}td::before{content:attr(data-label);display:block;font-weight:600;font-size:.85rem;color:#555}}\
.note{color:#555;font-size:.9rem}@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,dl{break-inside:auto}tr{break-inside:avoid}}";

/// A document people read, written once and rendered in either format,
/// and its data as JSON for machines.
pub trait Document: serde::Serialize {
    fn title(&self) -> String;
    fn write(&self, page: &mut dyn Page);

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn to_markdown(&self) -> String {
        let mut page = Markdown::page(&self.title());
        self.write(&mut page);
        page.finish()
    }

    fn to_html(&self) -> String {
        let mut page = Html::page(&self.title());
        self.write(&mut page);
        page.finish()
    }
}

/// A document built piece by piece, written once for every format.
pub trait Page {
    fn h2(&mut self, text: &str);
    fn h3(&mut self, text: &str);
    fn p(&mut self, text: &str);
    /// A lighter paragraph: an explanation beside the figures.
    fn note(&mut self, text: &str);
    fn list(&mut self, items: &[String]);
    /// Terms and their values, one per row.
    fn definitions(&mut self, rows: &[(String, String)]);
    fn table(&mut self, headings: &[&str], rows: &[Vec<String>]);
}

/// French HTML, printable, readable on a phone; every text is escaped.
#[derive(Debug)]
pub struct Html(String);

impl Html {
    pub fn page(title: &str) -> Html {
        let t = escape(title);
        Html(format!(
            "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n"
        ))
    }

    pub fn finish(mut self) -> String {
        self.0.push_str("</body></html>\n");
        self.0
    }
}

impl Page for Html {
    fn h2(&mut self, text: &str) {
        self.0.push_str(&format!("<h2>{}</h2>\n", escape(text)));
    }

    fn h3(&mut self, text: &str) {
        self.0.push_str(&format!("<h3>{}</h3>\n", escape(text)));
    }

    fn p(&mut self, text: &str) {
        self.0.push_str(&format!("<p>{}</p>\n", escape(text)));
    }

    fn note(&mut self, text: &str) {
        self.0
            .push_str(&format!("<p class=\"note\">{}</p>\n", escape(text)));
    }

    fn list(&mut self, items: &[String]) {
        self.0.push_str("<ul>");
        for i in items {
            self.0.push_str(&format!("<li>{}</li>", escape(i)));
        }
        self.0.push_str("</ul>\n");
    }

    fn definitions(&mut self, rows: &[(String, String)]) {
        self.0.push_str("<dl>");
        for (term, value) in rows {
            self.0.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>",
                escape(term),
                escape(value)
            ));
        }
        self.0.push_str("</dl>\n");
    }

    fn table(&mut self, headings: &[&str], rows: &[Vec<String>]) {
        // On a phone each row becomes a card, each cell named by its heading.
        self.0.push_str("<table><thead><tr>");
        for h in headings {
            self.0.push_str(&format!("<th>{}</th>", escape(h)));
        }
        self.0.push_str("</tr></thead><tbody>");
        for row in rows {
            self.0.push_str("<tr>");
            for (cell, heading) in row.iter().zip(headings) {
                self.0.push_str(&format!(
                    "<td data-label=\"{}\">{}</td>",
                    escape(heading),
                    escape(cell)
                ));
            }
            self.0.push_str("</tr>");
        }
        self.0.push_str("</tbody></table>\n");
    }
}

/// Markdown, for a repository or a ticket.
#[derive(Debug)]
pub struct Markdown(String);

impl Markdown {
    pub fn page(title: &str) -> Markdown {
        Markdown(format!("# {title}\n\n"))
    }

    pub fn finish(self) -> String {
        self.0
    }
}

impl Page for Markdown {
    fn h2(&mut self, text: &str) {
        self.0.push_str(&format!("## {text}\n\n"));
    }

    fn h3(&mut self, text: &str) {
        self.0.push_str(&format!("### {text}\n\n"));
    }

    fn p(&mut self, text: &str) {
        self.0.push_str(&format!("{text}\n\n"));
    }

    fn note(&mut self, text: &str) {
        self.0.push_str(&format!("_{text}_\n\n"));
    }

    fn list(&mut self, items: &[String]) {
        for i in items {
            self.0.push_str(&format!("- {i}\n"));
        }
        self.0.push('\n');
    }

    fn definitions(&mut self, rows: &[(String, String)]) {
        for (term, value) in rows {
            self.0.push_str(&format!("- {term} : {value}\n"));
        }
        self.0.push('\n');
    }

    fn table(&mut self, headings: &[&str], rows: &[Vec<String>]) {
        self.0.push_str(&format!("| {} |\n", headings.join(" | ")));
        self.0
            .push_str(&format!("|{}\n", "---|".repeat(headings.len())));
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| markdown_cell(c)).collect();
            self.0.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        self.0.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_escaped() {
        let mut h = Html::page("<script>");
        h.p("a & b <i>");
        h.table(&["<th>"], &[vec!["\"x\"".to_owned()]]);
        let page = h.finish();
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<i>"));
        assert!(page.contains("a &amp; b &lt;i&gt;"));
        assert!(page.contains("&quot;x&quot;"));
    }

    #[test]
    fn a_markdown_cell_cannot_break_its_row() {
        let mut m = Markdown::page("t");
        m.table(&["a", "b"], &[vec!["x | y".into(), "line\nbreak".into()]]);
        assert!(m.finish().contains("| x \\| y | line break |"));
    }

    #[test]
    fn dates_are_read_in_paris_time() {
        let late = DateTime::parse_from_rfc3339("2025-03-03T23:30:00Z")
            .expect("valid")
            .to_utc();
        assert_eq!(date(late), "04/03/2025");
        assert_eq!(date_time(late), "04/03/2025 00:30");
    }
}
