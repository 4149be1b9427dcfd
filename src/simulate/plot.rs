//! The simulator's picture: backlog and replicas over time, as SVG.
//!
//! Messages use the left axis, replicas the right one, with the min/max replica bounds drawn
//! as a shaded band. plotters' SVG backend writes text as SVG `<text>`, so no font files or
//! font libraries are needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One plotted step.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    pub t: f64,
    pub messages: u64,
    pub in_flight: u64,
    pub desired: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot {path}: {detail}")]
pub struct PlotError {
    path: String,
    detail: String,
}

impl PlotError {
    pub(crate) fn new(path: &Path, detail: String) -> Self {
        PlotError {
            path: path.display().to_string(),
            detail,
        }
    }
}

const BACKLOG: RGBColor = RGBColor(31, 119, 180);
const IN_FLIGHT: RGBColor = RGBColor(255, 127, 14);
const REPLICAS: RGBColor = RGBColor(44, 160, 44);
const BOUNDS: RGBColor = RGBColor(150, 150, 150);

/// Writes the SVG to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    points: &[PlotPoint],
    min_replicas: i32,
    max_replicas: i32,
) -> Result<(), PlotError> {
    let fail = |detail: String| PlotError {
        path: path.display().to_string(),
        detail,
    };
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    draw(&root, title, points, min_replicas, max_replicas).map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[PlotPoint],
    min_replicas: i32,
    max_replicas: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let t_end = points.last().map_or(1.0, |p| p.t).max(1.0);
    let most_messages = points
        .iter()
        .map(|p| p.messages.max(p.in_flight))
        .max()
        .unwrap_or(0)
        .max(1);
    let y_messages = most_messages as f64 * 1.1;
    let most_replicas = points.iter().map(|p| p.desired).max().unwrap_or(0);
    let y_replicas = f64::from(most_replicas.max(max_replicas).max(1)) * 1.1;

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..y_messages)?
        .set_secondary_coord(0.0..t_end, 0.0..y_replicas);

    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("messages")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("replicas")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    // The allowed replica range, behind everything else.
    let band_low = f64::from(min_replicas.clamp(0, max_replicas.max(0)));
    let band_high = f64::from(max_replicas.max(0));
    chart
        .draw_secondary_series(std::iter::once(Rectangle::new(
            [(0.0, band_low), (t_end, band_high)],
            BOUNDS.mix(0.12).filled(),
        )))?
        .label(format!(
            "min..max replicas ({min_replicas}..{max_replicas})"
        ))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], BOUNDS.mix(0.3).filled()));

    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.t, p.messages as f64)),
            BACKLOG.stroke_width(2),
        ))?
        .label("visible messages (left)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BACKLOG.stroke_width(2)));
    if points.iter().any(|p| p.in_flight > 0) {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t, p.in_flight as f64)),
                IN_FLIGHT.stroke_width(2),
            ))?
            .label("in flight (left)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], IN_FLIGHT.stroke_width(2)));
    }
    // Replicas change at decision instants: draw them as steps.
    chart
        .draw_secondary_series(LineSeries::new(
            replica_steps(points, t_end),
            REPLICAS.stroke_width(3),
        ))?
        .label("replicas (right)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], REPLICAS.stroke_width(3)));

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// Corner points of the replica staircase: each decision holds until the next step.
fn replica_steps(points: &[PlotPoint], t_end: f64) -> Vec<(f64, f64)> {
    let mut steps = Vec::with_capacity(points.len() * 2 + 1);
    for (i, p) in points.iter().enumerate() {
        let y = f64::from(p.desired);
        steps.push((p.t, y));
        let next_t = points.get(i + 1).map_or(t_end, |n| n.t);
        steps.push((next_t, y));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, messages: u64, desired: i32) -> PlotPoint {
        PlotPoint {
            t,
            messages,
            in_flight: messages / 2,
            desired,
        }
    }

    #[test]
    fn svg_has_axes_legend_and_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plot.svg");
        let points = vec![
            point(0.0, 0, 0),
            point(30.0, 900, 6),
            point(60.0, 0, 6),
            point(700.0, 0, 0),
        ];
        write_svg(&path, "example-wpa", &points, 0, 10).expect("plot written");
        let svg = std::fs::read_to_string(&path).expect("svg readable");
        assert!(svg.starts_with("<svg"), "not an SVG");
        for text in [
            "example-wpa",
            "time (s)",
            "messages",
            "replicas",
            "visible messages (left)",
            "in flight (left)",
            "replicas (right)",
            "min..max replicas (0..10)",
        ] {
            assert!(svg.contains(text), "missing `{text}` in the SVG");
        }
        assert!(
            svg.matches("<polyline").count() >= 3,
            "expected line series"
        );
    }

    #[test]
    fn steps_hold_each_decision_until_the_next_row() {
        let points = vec![point(0.0, 0, 1), point(10.0, 0, 3)];
        assert_eq!(
            replica_steps(&points, 20.0),
            vec![(0.0, 1.0), (10.0, 1.0), (10.0, 3.0), (20.0, 3.0)]
        );
    }

    #[test]
    fn a_single_row_at_time_zero_still_draws() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("one.svg");
        write_svg(&path, "one", &[point(0.0, 0, 0)], 0, 1).expect("plot written");
        assert!(std::fs::metadata(&path).expect("exists").len() > 0);
    }

    #[test]
    fn unwritable_path_is_an_error_not_a_panic() {
        let err = write_svg(
            Path::new("/nonexistent-dir/x/plot.svg"),
            "t",
            &[point(0.0, 1, 1)],
            0,
            1,
        )
        .expect_err("cannot write there");
        assert!(err.to_string().contains("/nonexistent-dir/x/plot.svg"));
    }
}
