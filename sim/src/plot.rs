//! Charts as SVG documents, drawn with `plotters`, so every chart the simulator writes has real
//! axes, ticks, units and a legend.
//!
//! Two kinds of chart:
//!
//! - a [`Figure`]: a title and panels stacked over one shared x axis (a run over time), each
//!   [`Panel`] a set of [`Series`] in one unit (lines, points or bars), on a linear or
//!   logarithmic y axis ([`Scale`]), with x ranges shaded ([`Figure::shade`]: faults) and
//!   x positions marked ([`Figure::mark`]: phases, scheduled actions) across every panel;
//! - a [`BarChart`]: one panel per measure, one bar per category (a client), every bar labelled
//!   with its exact value, so a count of 1 next to one of 906 stays visible and readable.
//!
//! A panel with nothing to draw says "no data" instead of showing empty axes silently.
//!
//! ```
//! use keepfresh_sim::plot::{Figure, Panel, Scale, Series};
//! let svg = Figure::new("demo", "time (s)")
//!     .panel(Panel::new("requests", "per second")
//!         .series(Series::line("achieved", vec![(0.0, 1.0), (1.0, 3.0)]))
//!         .series(Series::dashed("target", vec![(0.0, 2.0), (1.0, 2.0)])))
//!     .panel(Panel::new("calls", "calls per 10 s")
//!         .scale(Scale::Log)
//!         .series(Series::bars("token endpoint", 0.5, vec![(0.0, 1.0), (0.5, 906.0)])))
//!     .shade("store outage", 0.2, 0.4)
//!     .mark("workload end", 0.9)
//!     .to_svg()
//!     .unwrap();
//! assert!(svg.starts_with("<svg"));
//! assert!(svg.contains("achieved") && svg.contains("per second") && svg.contains("time (s)"));
//! assert!(svg.contains("store outage") && svg.contains("workload end"));
//! ```

use std::fmt;
use std::ops::Range;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
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
#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    Line,
    Dashed,
    Points,
    Crosses,
    /// One bar per point, from `x` to `x + width`.
    Bars(f64),
}

/// One labelled line, set of points or set of bars of `(x, y)` values. Non-finite values are
/// skipped.
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

    /// Unconnected crosses (events that may coincide with another series' points).
    ///
    /// ```
    /// # use keepfresh_sim::plot::{Figure, Panel, Series};
    /// let p = Panel::new("waits", "ms")
    ///     .series(Series::points("longest", vec![(2.0, 9.0)]))
    ///     .series(Series::crosses("mean", vec![(2.0, 9.0)]));
    /// assert!(Figure::new("t", "s").panel(p).to_svg().is_ok());
    /// ```
    pub fn crosses(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            style: Style::Crosses,
            ..Series::line(label, points)
        }
    }

    /// Bars: each point `(x, y)` is a bar from `x` to `x + width` up to `y` (counts per time
    /// bucket: `x` is the bucket's start, `width` its length). Bars of height 0 are not drawn.
    ///
    /// ```
    /// # use keepfresh_sim::plot::{Figure, Panel, Series};
    /// let p = Panel::new("calls", "calls per minute")
    ///     .series(Series::bars("token endpoint", 1.0, vec![(0.0, 2.0), (1.0, 0.0), (2.0, 1.0)]));
    /// let svg = Figure::new("t", "time (min)").panel(p).to_svg().unwrap();
    /// assert!(svg.contains("<rect"));
    /// ```
    pub fn bars(label: impl Into<String>, width: f64, points: Vec<(f64, f64)>) -> Series {
        let width = if width.is_finite() && width > 0.0 {
            width
        } else {
            1.0
        };
        Series {
            style: Style::Bars(width),
            ..Series::line(label, points)
        }
    }

    fn finite(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    /// The points that draw something on a y axis of `scale`.
    fn drawn(&self, log: bool) -> impl Iterator<Item = (f64, f64)> + '_ {
        let bars = matches!(self.style, Style::Bars(_));
        self.finite()
            .filter(move |&(_, y)| !((log && y <= 0.0) || (bars && y == 0.0)))
    }

    /// The x extent of the series (a bar reaches to its end).
    fn x_extent(&self) -> impl Iterator<Item = f64> + '_ {
        let w = match self.style {
            Style::Bars(w) => w,
            _ => 0.0,
        };
        self.finite().flat_map(move |(x, _)| [x, x + w])
    }
}

/// How a panel's y axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Linear from zero (or the smallest value, when negative).
    #[default]
    Linear,
    /// Logarithmic, over the positive values (zeros and negatives are not drawn); bars start at
    /// the bottom of the axis, so a count of 1 next to one of 1,000 is still a visible bar.
    Log,
    /// Logarithmic when the positive values span a factor of 20 or more, linear otherwise.
    Auto,
}

/// One chart: a caption, the y axis's description (with its unit), and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    caption: String,
    y_desc: String,
    series: Vec<Series>,
    scale: Scale,
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
            scale: Scale::Linear,
        }
    }

    /// Adds a series.
    ///
    /// See the [module example](self).
    pub fn series(mut self, series: Series) -> Panel {
        self.series.push(series);
        self
    }

    /// Sets the y axis's scale (linear by default).
    ///
    /// See the [module example](self).
    pub fn scale(mut self, scale: Scale) -> Panel {
        self.scale = scale;
        self
    }

    /// Whether the y axis is drawn logarithmic.
    fn is_log(&self) -> bool {
        match self.scale {
            Scale::Linear => false,
            Scale::Log => true,
            Scale::Auto => {
                let (lo, hi) = positive_range(self.series.iter().flat_map(|s| s.finite()));
                lo.is_finite() && hi >= 20.0 * lo
            }
        }
    }

    fn is_empty(&self) -> bool {
        let log = self.is_log();
        self.series.iter().all(|s| s.drawn(log).next().is_none())
    }
}

/// The smallest and the largest positive finite `y` (infinite when there is none).
fn positive_range(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    points
        .map(|(_, y)| y)
        .filter(|y| *y > 0.0 && y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        })
}

/// A shaded x range or a marked x position, drawn across every panel of a figure.
#[derive(Debug, Clone, PartialEq)]
struct Span {
    label: String,
    from: f64,
    to: f64,
}

/// A titled figure: panels stacked vertically over one x axis, with shaded x ranges and
/// marked x positions across them, and a legend of those under the panels.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    title: String,
    x_desc: String,
    panels: Vec<Panel>,
    shades: Vec<Span>,
    marks: Vec<Span>,
    x_span: Option<(f64, f64)>,
    width: u32,
    panel_height: u32,
}

/// Series colours, in series order (colour-blind-safe: Okabe–Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Shade colours, drawn translucent, in order of the shades' first labels.
const SHADES: [RGBColor; 5] = [
    RGBColor(230, 80, 80),
    RGBColor(120, 120, 120),
    RGBColor(240, 170, 40),
    RGBColor(150, 90, 200),
    RGBColor(60, 160, 200),
];

/// Mark colours, in order of the marks' first labels.
const MARKS: [RGBColor; 6] = [
    RGBColor(60, 60, 60),
    RGBColor(200, 30, 30),
    RGBColor(0, 120, 60),
    RGBColor(130, 60, 160),
    RGBColor(180, 110, 0),
    RGBColor(30, 90, 200),
];

const LEGEND_WIDTH: u32 = 240;
const LEGEND_ROW: u32 = 18;

/// Distinct labels in first-seen order.
fn labels(spans: &[Span]) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for s in spans {
        if !v.contains(&s.label.as_str()) {
            v.push(&s.label);
        }
    }
    v
}

/// A number as the charts write it on axes and bar labels: whole numbers without decimals,
/// others with up to three significant digits; empty for a non-finite value.
///
/// ```
/// use keepfresh_sim::plot::number_text;
/// assert_eq!(number_text(906.0), "906");
/// assert_eq!(number_text(72.5), "72.5");
/// assert_eq!(number_text(0.01234), "0.0123");
/// ```
pub fn number_text(v: f64) -> String {
    number(v)
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v == v.round() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

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
            shades: Vec::new(),
            marks: Vec::new(),
            x_span: None,
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

    /// Shades the x range `from..to` in every panel (a fault's window); shades with the same
    /// label share a colour and one legend entry. A range of zero width is drawn one pixel
    /// wide; non-finite ones are skipped.
    ///
    /// See the [module example](self).
    pub fn shade(mut self, label: impl Into<String>, from: f64, to: f64) -> Figure {
        if from.is_finite() && to.is_finite() {
            self.shades.push(Span {
                label: label.into(),
                from: from.min(to),
                to: from.max(to),
            });
        }
        self
    }

    /// Marks the x position `at` with a vertical line in every panel (a phase, an action);
    /// marks with the same label share a colour and one legend entry.
    ///
    /// See the [module example](self).
    pub fn mark(mut self, label: impl Into<String>, at: f64) -> Figure {
        if at.is_finite() {
            self.marks.push(Span {
                label: label.into(),
                from: at,
                to: at,
            });
        }
        self
    }

    /// Shows at least the x range `from..to` (the data, shades and marks may widen it).
    ///
    /// ```
    /// # use keepfresh_sim::plot::{Figure, Panel};
    /// let svg = Figure::new("t", "time (s)").x_span(0.0, 600.0)
    ///     .panel(Panel::new("empty", "count"))
    ///     .to_svg()
    ///     .unwrap();
    /// assert!(svg.contains("no data") && svg.contains("600"));
    /// ```
    pub fn x_span(mut self, from: f64, to: f64) -> Figure {
        if from.is_finite() && to.is_finite() {
            self.x_span = Some((from.min(to), from.max(to)));
        }
        self
    }

    /// The x range over every panel's data, the shades, the marks and the span (at least a
    /// unit wide).
    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.x_extent())
            .chain(
                self.shades
                    .iter()
                    .chain(&self.marks)
                    .flat_map(|s| [s.from, s.to]),
            )
            .chain(self.x_span.iter().flat_map(|&(a, b)| [a, b]));
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
        let shade_labels = labels(&self.shades);
        let mark_labels = labels(&self.marks);
        let entries = (shade_labels.len() + mark_labels.len()) as u32;
        let per_row = 3;
        let legend_height = if entries == 0 {
            0
        } else {
            entries.div_ceil(per_row) * LEGEND_ROW + 12
        };
        let height = title_height + self.panel_height * self.panels.len() as u32 + legend_height;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (self.width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let root = root.titled(&self.title, ("sans-serif", 20)).map_err(err)?;
            let (panels, legend) =
                root.split_vertically(self.panel_height * self.panels.len() as u32);
            let (x0, x1) = self.x_range();
            // Colours run on across panels: a colour is one series of the whole figure.
            let mut first_color = 0;
            for (area, panel) in panels
                .split_evenly((self.panels.len(), 1))
                .iter()
                .zip(&self.panels)
            {
                let (chart, side) = area.split_horizontally(self.width - LEGEND_WIDTH);
                self.draw_panel(&chart, panel, x0..x1, first_color)?;
                let entries: Vec<(String, Swatch)> = panel
                    .series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        (
                            s.label.clone(),
                            swatch(s.style, series_color(first_color + i)),
                        )
                    })
                    .collect();
                draw_legend(&side, &entries, 1, 8)?;
                first_color += panel.series.len();
            }
            let entries: Vec<(String, Swatch)> = shade_labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.to_string(), Swatch::Shade(SHADES[i % SHADES.len()])))
                .chain(
                    mark_labels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| (l.to_string(), Swatch::Mark(MARKS[i % MARKS.len()]))),
                )
                .collect();
            draw_legend(&legend, &entries, per_row as usize, 72)?;
            root.present().map_err(err)?;
        }
        Ok(svg)
    }

    fn draw_panel(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        panel: &Panel,
        x: Range<f64>,
        first_color: usize,
    ) -> Result<(), PlotError> {
        let log = panel.is_log();
        let builder = |area| {
            let mut b = ChartBuilder::on(area);
            b.caption(&panel.caption, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(64);
            b
        };
        if log {
            let (lo, hi) = positive_range(panel.series.iter().flat_map(|s| s.finite()));
            let (lo, hi) = if lo.is_finite() {
                (lo / 2.0, hi * 2.0)
            } else {
                (0.5, 10.0)
            };
            let mut chart = builder(area)
                .build_cartesian_2d(x, (lo..hi).log_scale())
                .map_err(err)?;
            self.fill_panel(&mut chart, panel, first_color, lo)
        } else {
            let ys = || panel.series.iter().flat_map(|s| s.finite().map(|(_, y)| y));
            let y_max = ys().fold(0.0f64, f64::max);
            let y_min = ys().fold(0.0f64, f64::min);
            let top = if y_max <= y_min {
                y_min + 1.0
            } else {
                y_max * 1.1
            };
            let mut chart = builder(area)
                .build_cartesian_2d(x, y_min..top)
                .map_err(err)?;
            self.fill_panel(&mut chart, panel, first_color, 0.0f64.max(y_min))
        }
    }

    /// Draws the mesh, the shades, the series (in colours from `first_color`) and the marks
    /// of one panel on `chart`; bars start at `base`.
    fn fill_panel<Y>(
        &self,
        chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
        panel: &Panel,
        first_color: usize,
        base: f64,
    ) -> Result<(), PlotError>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let log = panel.is_log();
        // Counts on a short linear axis: one tick per whole number, no fractions.
        let whole = panel
            .series
            .iter()
            .flat_map(|s| s.finite())
            .all(|(_, y)| y == y.round());
        let y_range = chart.y_range();
        let y_labels = if !log && whole && y_range.end - y_range.start <= 6.0 {
            (y_range.end - y_range.start).floor() as usize + 1
        } else {
            6
        };
        let y_format = |v: &f64| number(*v);
        let x_format = |v: &f64| number(*v);
        let y_desc = if log {
            format!("{} (log scale)", panel.y_desc)
        } else {
            panel.y_desc.clone()
        };
        chart
            .configure_mesh()
            .y_label_formatter(&y_format)
            .x_label_formatter(&x_format)
            .x_desc(&self.x_desc)
            .y_desc(y_desc)
            .x_labels(10)
            .y_labels(y_labels)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        let (y_lo, y_hi) = (y_range.start, y_range.end);
        let x_range = chart.x_range();
        // One pixel, in x units: zero-width shades stay visible.
        let px = (x_range.end - x_range.start) / f64::from(self.width.max(1));
        let shade_labels = labels(&self.shades);
        for s in &self.shades {
            let i = shade_labels.iter().position(|l| *l == s.label).unwrap_or(0);
            let color = SHADES[i % SHADES.len()].mix(0.18);
            let to = if s.to - s.from < px {
                s.from + px
            } else {
                s.to
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(s.from, y_lo), (to, y_hi)],
                    color.filled(),
                )))
                .map_err(err)?;
        }
        // Marks under the series: a line at a bar's position must not hide the bar.
        let mark_labels = labels(&self.marks);
        for m in &self.marks {
            let i = mark_labels.iter().position(|l| *l == m.label).unwrap_or(0);
            let color = MARKS[i % MARKS.len()];
            chart
                .draw_series(DashedLineSeries::new(
                    [(m.from, y_lo), (m.from, y_hi)],
                    5,
                    3,
                    color.stroke_width(2),
                ))
                .map_err(err)?;
        }
        for (i, s) in panel.series.iter().enumerate() {
            let color = series_color(first_color + i);
            let points: Vec<(f64, f64)> = s.drawn(log).collect();
            match s.style {
                Style::Line => {
                    chart
                        .draw_series(LineSeries::new(points, color.stroke_width(2)))
                        .map_err(err)?;
                }
                Style::Dashed => {
                    chart
                        .draw_series(DashedLineSeries::new(points, 6, 4, color.stroke_width(2)))
                        .map_err(err)?;
                }
                Style::Points => {
                    chart
                        .draw_series(
                            points
                                .into_iter()
                                .map(|p| Circle::new(p, 3, color.filled())),
                        )
                        .map_err(err)?;
                }
                Style::Crosses => {
                    chart
                        .draw_series(
                            points
                                .into_iter()
                                .map(|p| Cross::new(p, 4, color.stroke_width(2))),
                        )
                        .map_err(err)?;
                }
                Style::Bars(w) => {
                    chart
                        .draw_series(
                            points.into_iter().map(|(x, y)| {
                                Rectangle::new([(x, base), (x + w, y)], color.filled())
                            }),
                        )
                        .map_err(err)?;
                }
            }
        }
        if panel.is_empty() {
            let mid_x = (x_range.start + x_range.end) / 2.0;
            let mid_y = if log {
                (y_lo * y_hi).sqrt()
            } else {
                (y_lo + y_hi) / 2.0
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    "no data",
                    (mid_x, mid_y),
                    ("sans-serif", 16)
                        .into_font()
                        .color(&RGBColor(120, 120, 120))
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                )))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// How a legend entry shows its series.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Line(RGBColor),
    Dashed(RGBColor),
    Point(RGBColor),
    Cross(RGBColor),
    Bar(RGBColor),
    Shade(RGBColor),
    Mark(RGBColor),
}

fn swatch(style: Style, color: RGBColor) -> Swatch {
    match style {
        Style::Line => Swatch::Line(color),
        Style::Dashed => Swatch::Dashed(color),
        Style::Points => Swatch::Point(color),
        Style::Crosses => Swatch::Cross(color),
        Style::Bars(_) => Swatch::Bar(color),
    }
}

/// Draws legend entries in `columns` columns from the top of `area`, below `top` pixels.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, Swatch)],
    columns: usize,
    left: i32,
) -> Result<(), PlotError> {
    if entries.is_empty() {
        return Ok(());
    }
    let (w, _) = area.dim_in_pixel();
    let col_w = ((w as i32 - left) / columns.max(1) as i32).max(1);
    let font = ("sans-serif", 12).into_font();
    for (k, (label, sw)) in entries.iter().enumerate() {
        let x = left + (k % columns) as i32 * col_w;
        let y = 30 * i32::from(columns == 1) + 4 + (k / columns) as i32 * LEGEND_ROW as i32;
        let mid = y + 6;
        match *sw {
            Swatch::Line(c) => area
                .draw(&PathElement::new(
                    vec![(x, mid), (x + 18, mid)],
                    c.stroke_width(2),
                ))
                .map_err(err)?,
            Swatch::Dashed(c) | Swatch::Mark(c) => {
                for s in [0, 8, 16] {
                    area.draw(&PathElement::new(
                        vec![(x + s, mid), (x + s + 5, mid)],
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
            }
            Swatch::Point(c) => area
                .draw(&Circle::new((x + 9, mid), 4, c.filled()))
                .map_err(err)?,
            Swatch::Cross(c) => area
                .draw(&Cross::new((x + 9, mid), 4, c.stroke_width(2)))
                .map_err(err)?,
            // Swatches are polygons, not rectangles: in the SVG, the `<rect>`s filled in a
            // series' or a shade's colour are exactly its bars or shaded ranges (tests count
            // them).
            Swatch::Bar(c) => area
                .draw(&Polygon::new(
                    vec![(x + 2, y), (x + 16, y), (x + 16, y + 12), (x + 2, y + 12)],
                    c.filled(),
                ))
                .map_err(err)?,
            Swatch::Shade(c) => area
                .draw(&Polygon::new(
                    vec![(x, y), (x + 18, y), (x + 18, y + 12), (x, y + 12)],
                    c.mix(0.3).filled(),
                ))
                .map_err(err)?,
        }
        area.draw(&Text::new(label.clone(), (x + 24, y), font.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// One measure of a [`BarChart`]: a caption, the unit of its values, one value per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    caption: String,
    unit: String,
    values: Vec<f64>,
}

impl Bars {
    /// A measure captioned `caption` whose values (one per category of the chart, in order)
    /// are in `unit`.
    ///
    /// See [`BarChart`].
    pub fn new(caption: impl Into<String>, unit: impl Into<String>, values: Vec<f64>) -> Bars {
        Bars {
            caption: caption.into(),
            unit: unit.into(),
            values,
        }
    }
}

/// A comparison chart: one panel per measure ([`Bars`]), one bar per category in the
/// category's colour (the legend names them), every bar labelled with its exact value, on a
/// logarithmic y axis, so that 1 next to 906 is a visible bar and a readable number. A zero
/// draws no bar, only its label `0`.
///
/// ```
/// use keepfresh_sim::plot::{BarChart, Bars};
/// let svg = BarChart::new("clients", vec!["a".into(), "b".into()])
///     .measure(Bars::new("token-endpoint calls", "calls", vec![1.0, 906.0]))
///     .to_svg()
///     .unwrap();
/// assert!(svg.contains("\n906\n") && svg.contains("\n1\n") && svg.contains("calls (log scale)"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    title: String,
    categories: Vec<String>,
    measures: Vec<Bars>,
    columns: usize,
}

impl BarChart {
    /// A chart titled `title` over `categories` (bar colours and legend in this order).
    ///
    /// See [`BarChart`].
    pub fn new(title: impl Into<String>, categories: Vec<String>) -> BarChart {
        BarChart {
            title: title.into(),
            categories,
            measures: Vec::new(),
            columns: 3,
        }
    }

    /// Adds a measure (a panel).
    ///
    /// See [`BarChart`].
    pub fn measure(mut self, bars: Bars) -> BarChart {
        self.measures.push(bars);
        self
    }

    /// The SVG document.
    ///
    /// # Errors
    /// A chart without measures, or a drawing failure of the backend.
    ///
    /// See [`BarChart`].
    pub fn to_svg(&self) -> Result<String, PlotError> {
        if self.measures.is_empty() {
            return Err(PlotError("a bar chart needs at least one measure".into()));
        }
        let cols = self.columns.min(self.measures.len()).max(1);
        let rows = self.measures.len().div_ceil(cols);
        let (pw, ph) = (330u32, 280u32);
        let per_row = 4;
        let legend_height = (self.categories.len() as u32).div_ceil(per_row) * LEGEND_ROW + 16;
        let (width, height) = (pw * cols as u32, 40 + ph * rows as u32 + legend_height);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let root = root.titled(&self.title, ("sans-serif", 18)).map_err(err)?;
            let (grid, legend) = root.split_vertically(ph * rows as u32);
            for (area, bars) in grid.split_evenly((rows, cols)).iter().zip(&self.measures) {
                self.draw_measure(area, bars)?;
            }
            let entries: Vec<(String, Swatch)> = self
                .categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), Swatch::Bar(category_color(i))))
                .collect();
            draw_legend(&legend, &entries, per_row as usize, 20)?;
            root.present().map_err(err)?;
        }
        Ok(svg)
    }

    fn draw_measure(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        bars: &Bars,
    ) -> Result<(), PlotError> {
        let n = self.categories.len().max(1);
        let (_, hi) = positive_range(bars.values.iter().map(|&v| (0.0, v)));
        let hi = if hi.is_finite() { hi * 4.0 } else { 10.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(&bars.caption, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(10)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..n as f64, (0.5..hi).log_scale())
            .map_err(err)?;
        let y_format = |v: &f64| number(*v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_label_formatter(&y_format)
            .y_desc(format!("{} (log scale)", bars.unit))
            .y_labels(5)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for (i, v) in bars.values.iter().enumerate().take(n) {
            let x = i as f64;
            if v.is_finite() && *v > 0.5 {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.15, 0.5), (x + 0.85, *v)],
                        category_color(i).filled(),
                    )))
                    .map_err(err)?;
            }
            let top = if v.is_finite() && *v > 0.5 { *v } else { 0.5 };
            chart
                .draw_series(std::iter::once(Text::new(
                    number(*v),
                    (x + 0.5, top),
                    ("sans-serif", 13).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// The colour of a figure's `i`-th series (counted over all panels).
fn series_color(i: usize) -> RGBColor {
    category_color(i)
}

/// Bar colours of a [`BarChart`]'s categories.
fn category_color(i: usize) -> RGBColor {
    const MORE: [RGBColor; 3] = [
        RGBColor(127, 127, 127),
        RGBColor(140, 86, 75),
        RGBColor(188, 189, 34),
    ];
    if i < PALETTE.len() {
        PALETTE[i]
    } else {
        MORE[(i - PALETTE.len()) % MORE.len()]
    }
}

/// A small valid SVG document that says `message` (the chart of last resort, when drawing a
/// figure failed).
///
/// ```
/// let svg = keepfresh_sim::plot::message_svg("no data");
/// assert!(svg.starts_with("<svg") && svg.contains("no data"));
/// ```
pub fn message_svg(message: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (600, 80)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let _ = root.draw(&Text::new(
            message.to_string(),
            (20, 30),
            ("sans-serif", 14).into_font(),
        ));
        let _ = root.present();
    }
    svg
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
            vec![(0.0, 0.0)],
        ] {
            for scale in [Scale::Linear, Scale::Log, Scale::Auto] {
                let svg = Figure::new("t", "x (s)")
                    .panel(
                        Panel::new("p", "y (ms)")
                            .scale(scale)
                            .series(Series::line("s", points.clone()))
                            .series(Series::bars("b", f64::NAN, points.clone())),
                    )
                    .shade("s", f64::NAN, 1.0)
                    .mark("m", f64::INFINITY)
                    .to_svg()
                    .unwrap();
                assert!(svg.contains("y (ms)"));
            }
        }
        assert!(Figure::new("t", "x").to_svg().is_err());
        assert!(BarChart::new("t", vec![]).to_svg().is_err());
        let svg = BarChart::new("t", vec![])
            .measure(Bars::new("m", "calls", vec![]))
            .to_svg()
            .unwrap();
        assert!(svg.contains("calls (log scale)"));
    }

    #[test]
    fn an_empty_panel_says_no_data() {
        let svg = Figure::new("t", "x (s)")
            .panel(Panel::new("p", "calls").series(Series::bars("b", 1.0, vec![(0.0, 0.0)])))
            .to_svg()
            .unwrap();
        assert!(svg.contains("no data"));
        let svg = Figure::new("t", "x (s)")
            .panel(Panel::new("p", "calls").series(Series::bars("b", 1.0, vec![(0.0, 1.0)])))
            .to_svg()
            .unwrap();
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn auto_scale_goes_log_for_wide_ranges() {
        let p = |v: f64| {
            Panel::new("p", "c")
                .scale(Scale::Auto)
                .series(Series::points("s", vec![(0.0, 1.0), (1.0, v)]))
        };
        assert!(!p(19.0).is_log());
        assert!(p(906.0).is_log());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(906.0), "906");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(0.01234), "0.0123");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(f64::NAN), "");
    }
}
