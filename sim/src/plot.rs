//! Charts as SVG documents, drawn with `plotters`, so every chart the simulator writes has real
//! axes, ticks, units and a legend: a [`Figure`] is a title and panels stacked over one shared
//! x axis, each [`Panel`] a set of [`Series`] in one unit.
//!
//! ```
//! use keepfresh_sim::plot::{Figure, Panel, Series};
//! let svg = Figure::new("demo", "time (s)")
//!     .panel(Panel::new("requests", "per second")
//!         .series(Series::line("achieved", vec![(0.0, 1.0), (1.0, 3.0)]))
//!         .series(Series::dashed("target", vec![(0.0, 2.0), (1.0, 2.0)])))
//!     .to_svg()
//!     .unwrap();
//! assert!(svg.starts_with("<svg"));
//! assert!(svg.contains("achieved") && svg.contains("per second") && svg.contains("time (s)"));
//! ```

use std::fmt;

use plotters::prelude::*;

/// Why a figure could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError(String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot draw the chart: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn err(e: impl fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Line,
    Dashed,
    Points,
}

/// One labelled line (or set of points) of `(x, y)` values. Non-finite values are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    style: Style,
}

impl Series {
    /// A solid line.
    ///
    /// See the [module example](self).
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            style: Style::Line,
        }
    }

    /// A dashed line (targets, limits).
    ///
    /// See the [module example](self).
    pub fn dashed(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            style: Style::Dashed,
            ..Series::line(label, points)
        }
    }

    /// Unconnected points (events).
    ///
    /// ```
    /// # use keepfresh_sim::plot::{Figure, Panel, Series};
    /// let p = Panel::new("errors", "count").series(Series::points("503", vec![(2.0, 1.0)]));
    /// assert!(Figure::new("t", "s").panel(p).to_svg().is_ok());
    /// ```
    pub fn points(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            style: Style::Points,
            ..Series::line(label, points)
        }
    }

    fn finite(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }
}

/// One chart: a caption, the y axis's description (with its unit), and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    caption: String,
    y_desc: String,
    series: Vec<Series>,
}

impl Panel {
    /// A panel with `caption` and a y axis described as `y_desc` (say the unit).
    ///
    /// See the [module example](self).
    pub fn new(caption: impl Into<String>, y_desc: impl Into<String>) -> Panel {
        Panel {
            caption: caption.into(),
            y_desc: y_desc.into(),
            series: Vec::new(),
        }
    }

    /// Adds a series.
    ///
    /// See the [module example](self).
    pub fn series(mut self, series: Series) -> Panel {
        self.series.push(series);
        self
    }
}

/// A titled figure: panels stacked vertically over one x axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    title: String,
    x_desc: String,
    panels: Vec<Panel>,
    width: u32,
    panel_height: u32,
}

/// Line colours, in series order (colour-blind-safe: Okabe–Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

impl Figure {
    /// A figure titled `title` whose shared x axis is described as `x_desc`; 900 px wide,
    /// 260 px per panel.
    ///
    /// See the [module example](self).
    pub fn new(title: impl Into<String>, x_desc: impl Into<String>) -> Figure {
        Figure {
            title: title.into(),
            x_desc: x_desc.into(),
            panels: Vec::new(),
            width: 900,
            panel_height: 260,
        }
    }

    /// Adds a panel below the others.
    ///
    /// See the [module example](self).
    pub fn panel(mut self, panel: Panel) -> Figure {
        self.panels.push(panel);
        self
    }

    /// The x range over every panel's data (at least a unit wide).
    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.finite().map(|(x, _)| x));
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if lo > hi {
            (0.0, 1.0)
        } else if hi - lo < 1e-9 {
            (lo, lo + 1.0)
        } else {
            (lo, hi)
        }
    }

    /// The SVG document.
    ///
    /// # Errors
    /// A figure without panels, or a drawing failure of the backend.
    ///
    /// See the [module example](self).
    pub fn to_svg(&self) -> Result<String, PlotError> {
        if self.panels.is_empty() {
            return Err(PlotError("a figure needs at least one panel".into()));
        }
        let title_height = 40;
        let height = title_height + self.panel_height * self.panels.len() as u32;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (self.width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let root = root.titled(&self.title, ("sans-serif", 20)).map_err(err)?;
            let (x0, x1) = self.x_range();
            for (area, panel) in root
                .split_evenly((self.panels.len(), 1))
                .iter()
                .zip(&self.panels)
            {
                draw_panel(area, panel, &self.x_desc, x0..x1)?;
            }
            root.present().map_err(err)?;
        }
        Ok(svg)
    }
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    x_desc: &str,
    x: std::ops::Range<f64>,
) -> Result<(), PlotError> {
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| s.finite().map(|(_, y)| y))
        .fold(0.0f64, f64::max);
    let y_min = panel
        .series
        .iter()
        .flat_map(|s| s.finite().map(|(_, y)| y))
        .fold(0.0f64, f64::min);
    let top = if y_max <= y_min {
        y_min + 1.0
    } else {
        y_max * 1.1
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y_min..top)
        .map_err(err)?;
    // Whole numbers on a tall axis, one decimal on a short one.
    let y_decimals = if top - y_min >= 10.0 { 0 } else { 1 };
    let y_format = move |v: &f64| format!("{v:.y_decimals$}");
    chart
        .configure_mesh()
        .y_label_formatter(&y_format)
        .x_desc(x_desc)
        .y_desc(&panel.y_desc)
        .x_labels(10)
        .y_labels(6)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = s.finite().collect();
        let drawn = match s.style {
            Style::Line => chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?,
            Style::Dashed => chart
                .draw_series(DashedLineSeries::new(points, 6, 4, color.stroke_width(2)))
                .map_err(err)?,
            Style::Points => chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(err)?,
        };
        drawn.label(s.label.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_data_draws_axes_without_panicking() {
        for points in [
            vec![],
            vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)],
            vec![(5.0, 5.0)],
            vec![(0.0, -3.0), (1.0, -1.0)],
        ] {
            let svg = Figure::new("t", "x (s)")
                .panel(Panel::new("p", "y (ms)").series(Series::line("s", points)))
                .to_svg()
                .unwrap();
            assert!(svg.contains("y (ms)"));
        }
        assert!(Figure::new("t", "x").to_svg().is_err());
    }
}
