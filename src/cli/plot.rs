//! Charts of an evaluation: the confusion matrix (row-normalised heat map) and the reliability
//! diagram (confidence vs accuracy per bin), so a person sees where a head errs. Drawn as SVG;
//! PNG is the same SVG rasterised by resvg with the system's fonts.

use std::fmt::Write;

use tierline::learn::eval::{Evaluation, Report};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Sans-serif families preferred for the chart's text, when installed.
const SANS_FAMILIES: [&str; 4] = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"];

/// The chart as a PNG at twice the SVG's size (crisp on high-density screens).
pub fn png(evaluation: &Evaluation, labels: &[String]) -> anyhow::Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The chart asks for `sans-serif`; fontdb maps it to Arial, which Linux rarely has.
    let sans = fonts
        .faces()
        .flat_map(|face| face.families.iter().map(|(name, _)| name.clone()))
        .filter(|name| name.contains("Sans") && !name.contains("Mono"))
        .min_by_key(|name| (!SANS_FAMILIES.contains(&name.as_str()), name.len()));
    match sans {
        Some(family) => fonts.set_sans_serif_family(family),
        None => tracing::warn!("no sans-serif system font found: the PNG's labels will be missing (the SVG has them)"),
    }
    let tree = usvg::Tree::from_str(&svg(evaluation, labels), &options)?;
    let scale = 2.0;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width() * 2, size.height() * 2)
        .ok_or_else(|| anyhow::anyhow!("chart too large to rasterise"))?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    Ok(pixmap.encode_png()?)
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
    // Wide enough for the matrix and its two-line caption (~170 px at 10-11 px type).
    let matrix_width = if matrix.is_some() { margin_left + (n * cell).max(170.0) + 40.0 } else { 0.0 };
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
            r#"<text x="{margin_left}" y="36">confusion matrix</text><text x="{margin_left}" y="50" font-size="10">rows: true, columns: predicted</text>"#
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
        r#"<text x="{x0}" y="36">reliability diagram</text><text x="{x0}" y="50" font-size="10">bars: accuracy per confidence bin; dots: mean confidence; line: perfect calibration</text>"#
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
        // An empty bar (accuracy 0) is no rectangle at all; the dot still shows the bin.
        let _ = (h > 0.0).then(|| {
            writeln!(
                out,
                r##"<rect x="{x}" y="{}" width="{w}" height="{h}" fill="#4a7ebb" fill-opacity="0.7" stroke="white"/>"##,
                y0 + chart_size - h
            )
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use tierline::inference::heads::Activation;
    use tierline::learn::eval::evaluate_probabilities;
    use tierline::learn::recipe::Example;

    #[test]
    fn the_png_is_the_svg_rasterised_at_twice_its_size() {
        let labels = vec!["negative".to_string(), "positive".to_string()];
        let examples: Vec<Example> = [0, 1, 1, 0]
            .iter()
            .map(|&l| Example { text: String::new(), labels: vec![l], source: "s".into() })
            .collect();
        let probs = vec![vec![0.9, 0.1], vec![0.3, 0.7], vec![0.6, 0.4], vec![0.8, 0.2]];
        let evaluation = evaluate_probabilities("test", &labels, Activation::Softmax, &[], &probs, &examples);
        let svg = svg(&evaluation, &labels);
        let png = png(&evaluation, &labels).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let svg_width: f64 = svg.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert_eq!(width, (svg_width.ceil() as u32) * 2);
    }
}
