//! `--plot OUT.svg A.json [B.json …]`: latency by percentile, every result of every run on one
//! chart (the x axis in "nines": 90%, 99%, 99.9% … evenly spaced, as HdrHistogram plots do).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::output::Summary;

/// x for percentile `q`: the number of nines, −log10(1 − q), capped at 6 (99.9999%).
fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(1e-6).log10()).clamp(0.0, 6.0)
}

/// Draws the runs' latency curves into `out` (SVG).
///
/// Errors: no run has a curve, or the file cannot be written.
pub fn plot(out: &Path, runs: &[(String, Summary)]) -> anyhow::Result<usize> {
    let mut series = Vec::new();
    for (name, s) in runs {
        for r in &s.results {
            let points: Vec<(f64, f64)> = r
                .curve
                .iter()
                .map(|(q, ns)| (nines(*q), (*ns as f64 / 1000.0).max(0.001)))
                .collect();
            if !points.is_empty() {
                series.push((format!("{name}: {} {}", r.workload, r.target), points));
            }
        }
    }
    anyhow::ensure!(
        !series.is_empty(),
        "no latency curves in the given summaries"
    );
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0f64, f64::max);
    let bottom = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(f64::MAX, f64::min)
        .max(0.001);
    let root = SVGBackend::new(out, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).context("cannot draw")?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..6.0f64, (bottom * 0.8..top * 1.25).log_scale())
        .context("cannot lay out the chart")?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(7)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            n => format!("99.{}%", "9".repeat((n - 2) as usize)),
        })
        .draw()
        .context("cannot draw the axes")?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .context("cannot draw a curve")?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .context("cannot draw the legend")?;
    root.present()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(series.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::output::{Machine, Result};
    use crate::report::Measured;

    #[test]
    fn two_runs_draw_on_one_chart() {
        let mut m = Measured::new();
        for i in 1..=1000u64 {
            m.record(Duration::from_nanos(500 + i * 7));
        }
        m.elapsed = Duration::from_secs(1);
        let summary = Summary {
            version: "0".into(),
            profile_guided: false,
            machine: Machine::here(),
            started_unix_ms: 0,
            config: serde_json::json!({}),
            results: vec![Result::of("map-get", "corecast", &m, Some(1))],
        };
        let out = std::env::temp_dir().join(format!("corecast-plot-{}.svg", std::process::id()));
        let n = plot(
            &out,
            &[("a".into(), summary.clone()), ("b".into(), summary)],
        )
        .unwrap();
        assert_eq!(n, 2);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("a: map-get corecast"));
        std::fs::remove_file(&out).unwrap();
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
