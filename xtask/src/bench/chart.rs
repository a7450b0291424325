//! `docs/bench-concurrent.svg`: hit throughput against tasks, per library.

use std::collections::BTreeMap;
use std::path::Path;

use super::Estimate;

pub(super) fn chart(est: &BTreeMap<String, Estimate>, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let libs = ["echocache", "echocache_sharded", "moka", "quick_cache"];
    let tasks = [1u32, 2, 4, 8];
    let series: Vec<(&str, Vec<(u32, f64)>)> = libs
        .iter()
        .map(|lib| {
            let points = tasks
                .iter()
                .filter_map(|t| {
                    est.get(&format!("fetch_concurrent/{lib}/{t}"))
                        .map(|e| (*t, 1_000.0 / e.median)) // million ops per second
                })
                .collect();
            (*lib, points)
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max);
    if max == 0.0 {
        return Err("no fetch_concurrent results".into());
    }
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Hit throughput vs tasks (2-worker runtime)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..8u32, 0.0..max * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("tasks")
        .y_desc("million hits / s")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RED, MAGENTA, BLUE, GREEN];
    for ((lib, points), color) in series.iter().zip(colors) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*lib)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
