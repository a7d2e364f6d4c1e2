//! SVG charts of an evaluation: the confusion matrix (row-normalised heat map) and the
//! reliability diagram (confidence vs accuracy per bin), so a person sees where a head errs.

use std::fmt::Write;

use super::eval::{Evaluation, Report};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn svg(evaluation: &Evaluation, labels: &[String]) -> String {
    let cell = 34.0;
    let margin_left = 150.0;
    let margin_top = 60.0;
    let matrix = match &evaluation.report {
        Report::Single(r) => Some(&r.confusion),
        Report::Multi(_) => None,
    };
    let n = labels.len() as f64;
    let matrix_width = if matrix.is_some() { margin_left + n * cell + 40.0 } else { 0.0 };
    let chart_size = 300.0;
    let width = matrix_width + chart_size + 330.0;
    let height = (margin_top + n * cell + 150.0).max(chart_size + 140.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="20" font-size="14">{}</text>"#, escape(&evaluation.name));
    if let Some(confusion) = matrix {
        let _ = writeln!(
            out,
            r#"<text x="{margin_left}" y="40">confusion matrix (rows: true, columns: predicted; shade = row share)</text>"#
        );
        for (t, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = margin_top + t as f64 * cell;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                margin_left - 6.0,
                y + cell * 0.6,
                escape(&labels[t])
            );
            for (p, &count) in row.iter().enumerate() {
                let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
                let x = margin_left + p as f64 * cell;
                let (r, g, b) = if t == p {
                    (255.0 - 200.0 * share, 255.0 - 80.0 * share, 255.0 - 200.0 * share)
                } else {
                    (255.0 - 30.0 * share, 255.0 - 200.0 * share, 255.0 - 200.0 * share)
                };
                let _ = writeln!(
                    out,
                    r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({:.0},{:.0},{:.0})" stroke="#ccc"/>"##,
                    r, g, b
                );
                if count > 0 {
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{}" text-anchor="middle" font-size="10">{count}</text>"#,
                        x + cell / 2.0,
                        y + cell * 0.6
                    );
                }
            }
        }
        for (p, label) in labels.iter().enumerate() {
            let x = margin_left + p as f64 * cell + cell / 2.0;
            let y = margin_top + n * cell + 8.0;
            let _ = writeln!(out, r#"<text x="{x}" y="{y}" transform="rotate(45 {x} {y})">{}</text>"#, escape(label));
        }
    }
    let bins = match &evaluation.report {
        Report::Single(r) => &r.reliability,
        Report::Multi(r) => &r.reliability,
    };
    let x0 = matrix_width + 50.0;
    let y0 = margin_top;
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="40">reliability diagram (bars: accuracy per confidence bin; line: perfect calibration)</text>"#
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{chart_size}" height="{chart_size}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{}" x2="{}" y2="{y0}" stroke="#999" stroke-dasharray="4"/>"##,
        y0 + chart_size,
        x0 + chart_size
    );
    for bin in bins {
        if bin.count == 0 {
            continue;
        }
        let x = x0 + bin.lower * chart_size;
        let w = (bin.upper - bin.lower) * chart_size;
        let h = bin.accuracy * chart_size;
        let _ = writeln!(
            out,
            r##"<rect x="{x}" y="{}" width="{w}" height="{h}" fill="#4a7ebb" fill-opacity="0.7" stroke="white"/>"##,
            y0 + chart_size - h
        );
        let cx = x0 + bin.mean_confidence * chart_size;
        let _ = writeln!(
            out,
            r##"<circle cx="{cx}" cy="{}" r="3" fill="#d9534f"/>"##,
            y0 + chart_size - bin.mean_confidence * chart_size
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="9">{}</text>"#,
            x + w / 2.0,
            y0 + chart_size + 12.0,
            bin.count
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">confidence (counts under bars)</text>"#,
        x0 + chart_size / 2.0,
        y0 + chart_size + 30.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">accuracy</text>"#,
        x0 - 12.0,
        y0 + chart_size / 2.0,
        x0 - 12.0,
        y0 + chart_size / 2.0
    );
    out.push_str("</svg>\n");
    out
}
