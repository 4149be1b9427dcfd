//! The picture of `simulate compare`: each task's wait at the time it started (top) above
//! the replicas each policy set (bottom), on one time axis, one colour per policy.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::cluster::RunResult;
use super::plot::PlotError;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Writes the SVG to `path`; `max_wait` is drawn as a line on the wait panel, and the
/// offline schedule's pods, when given, as a dashed line beside the runs' replicas.
pub fn write_compare_svg(
    path: &Path,
    title: &str,
    runs: &[RunResult],
    schedule: Option<&[(f64, i32)]>,
    max_wait: f64,
) -> Result<(), PlotError> {
    let fail = |detail: String| PlotError::new(path, detail);
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    draw(&root, title, runs, schedule, max_wait).map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// Corner points of a replica staircase that holds each value until the next change.
fn steps(changes: &[(f64, i32)], t_end: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(changes.len() * 2);
    for (i, &(t, replicas)) in changes.iter().enumerate() {
        let y = f64::from(replicas);
        points.push((t, y));
        points.push((changes.get(i + 1).map_or(t_end, |n| n.0), y));
    }
    points
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    runs: &[RunResult],
    schedule: Option<&[(f64, i32)]>,
    max_wait: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(330);
    let t_end = runs.iter().map(|r| r.end).fold(1.0, f64::max);
    let waits = |run: &RunResult| -> Vec<(f64, f64)> {
        run.tasks
            .iter()
            .filter_map(|t| t.start.map(|s| (s, s - t.arrival)))
            .collect()
    };
    let most_wait = runs
        .iter()
        .flat_map(|r| waits(r).into_iter().map(|(_, w)| w))
        .fold(max_wait, f64::max)
        .max(1.0)
        * 1.1;
    let most_replicas = runs
        .iter()
        .flat_map(|r| r.replicas.iter().map(|&(_, n)| n))
        .chain(schedule.unwrap_or_default().iter().map(|&(_, n)| n))
        .max()
        .unwrap_or(0)
        .max(1);

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..most_wait)?;
    chart
        .configure_mesh()
        .y_desc("task wait (s), at its start")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, max_wait), (t_end, max_wait)],
            BLACK.mix(0.5).stroke_width(1),
        ))?
        .label(format!("target wait W = {max_wait} s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.5).stroke_width(1)));
    for (i, run) in runs.iter().enumerate() {
        let c = colour(i);
        chart.draw_series(
            waits(run)
                .into_iter()
                .map(|p| Circle::new(p, 2, c.mix(0.8).filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()?;

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..f64::from(most_replicas) * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("replicas")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    if let Some(schedule) = schedule {
        let end = schedule.last().map_or(0.0, |s| s.0);
        let grey = BLACK.mix(0.6);
        chart
            .draw_series(DashedLineSeries::new(
                steps(schedule, end),
                6,
                4,
                grey.stroke_width(2),
            ))?
            .label("offline schedule (bound)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], grey.stroke_width(2)));
    }
    for (i, run) in runs.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(
                steps(&run.replicas, run.end),
                c.stroke_width(2),
            ))?
            .label(run.policy.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staircases_hold_each_value_until_the_next_change() {
        assert_eq!(
            steps(&[(0.0, 0), (10.0, 3)], 20.0),
            vec![(0.0, 0.0), (10.0, 0.0), (10.0, 3.0), (20.0, 3.0)]
        );
    }
}
