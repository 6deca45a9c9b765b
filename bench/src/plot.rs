//! SVG line charts for benchmark reports ("packets/s against number of services, one line per device").
//!
//! [`LinePlot::to_svg`] renders a standalone 800x500 SVG document with the `plotters` crate (SVG
//! backend only, no font feature: text is emitted as SVG `<text>` and laid out by the viewer; plotters
//! only estimates text widths, so no system font is needed).
//!
//! What the chart promises:
//! - one `<polyline>` of stroke-width 2 per series that has at least one usable point, with exactly one
//!   coordinate pair per usable point, points sorted by x (axes and tick marks are width-1 polylines);
//!   one `<circle>` marker per point; a legend on the right with every series name, colour bar and
//!   marker (a series without usable points is listed as "name (no data)" and keeps its colour; names
//!   longer than 40 characters are cut to 37 plus "...");
//! - unusable points are skipped, never an error: NaN or infinite coordinates, and values `<= 0` on a
//!   log axis;
//! - no data at all (no series, or no usable point) still renders the axes and a "no data" note: `Ok`;
//! - axis ranges come from the data with a 5% margin; a linear y axis starts at 0 when every y is `>= 0`;
//!   log axes are base 10 with ticks at decades (1, 10, 100, 1k, ...) and light grid lines at 2..9;
//! - text (title, labels, series names) is XML-escaped;
//! - `Err` only when plotters fails to draw or the data spans more than `f64` can hold (e.g. -1e308
//!   and 1e308 on one linear axis); never a panic.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

/// Width and height of the SVG document in pixels.
const SIZE: (u32, u32) = (800, 500);
/// Share of the data span added on each side of an axis.
const MARGIN: f64 = 0.05;
/// Line colours, cycled when there are more series (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a chart: `(x, y)` points in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with one line per series.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// log10 x axis (e.g. services 1, 1000, 10000, 100000).
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
}

impl LinePlot {
    /// The chart as a standalone SVG document (800x500), one line + point markers per series, legend
    /// with series names. See the module documentation for what is skipped and when it fails.
    pub fn to_svg(&self) -> Result<String, String> {
        // Points in axis units (log10 of the value on a log axis), unusable ones dropped, sorted by x.
        let lines: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                let mut pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter_map(|&(x, y)| Some((to_axis(x, self.x_log)?, to_axis(y, self.y_log)?)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                pts
            })
            .collect();
        let all = || lines.iter().flatten();
        let x_axis = Axis::from_values(all().map(|p| p.0), self.x_log, false)
            .map_err(|e| format!("plot {:?}: x axis: {e}", self.title))?;
        let y_axis = Axis::from_values(all().map(|p| p.1), self.y_log, true)
            .map_err(|e| format!("plot {:?}: y axis: {e}", self.title))?;
        let no_data = all().next().is_none();

        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root, &lines, x_axis, y_axis, no_data)
                .map_err(|e| format!("plot {:?}: drawing: {e}", self.title))?;
            root.present()
                .map_err(|e| format!("plot {:?}: writing SVG: {e}", self.title))?;
        }
        Ok(svg)
    }

    fn draw(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        lines: &[Vec<(f64, f64)>],
        x_axis: Axis,
        y_axis: Axis,
        no_data: bool,
    ) -> Result<(), String> {
        let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        root.fill(&WHITE).map_err(|e| err("background", &e))?;
        let body = root
            .titled(&self.title, ("sans-serif", 22))
            .map_err(|e| err("title", &e))?;
        let legend: Vec<String> = self
            .series
            .iter()
            .zip(lines)
            .map(|(s, pts)| legend_text(&s.name, pts))
            .collect();
        let longest = legend.iter().map(|t| t.chars().count());
        // Legend column on the right: ~6.5 px per character at 14 px sans-serif, plus the swatch.
        let legend_w = (longest.max().unwrap_or(0) as u32 * 13 / 2 + 50).clamp(120, 320);
        let (plot_area, legend_area) = body.split_horizontally(SIZE.0 - legend_w);

        let (x_log, y_log) = (x_axis.log, y_axis.log);
        let mut chart = ChartBuilder::on(&plot_area)
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x_axis, y_axis)
            .map_err(|e| err("axes", &e))?;
        let x_fmt = move |v: &f64| format_tick(from_axis(*v, x_log));
        let y_fmt = move |v: &f64| format_tick(from_axis(*v, y_log));
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .bold_line_style(RGBColor(200, 200, 200))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err("mesh", &e))?;

        for (i, pts) in lines.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err("line", &e))?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err("markers", &e))?;
        }
        if no_data {
            let (w, h) = plot_area.dim_in_pixel();
            plot_area
                .draw(&Text::new(
                    "no data",
                    (w as i32 / 2 - 25, h as i32 / 2),
                    ("sans-serif", 18)
                        .into_font()
                        .color(&RGBColor(120, 120, 120)),
                ))
                .map_err(|e| err("no-data note", &e))?;
        }

        // Legend: a short thick bar (a rect, so the only polylines are the data lines) and a marker.
        for (i, text) in legend.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let y = 30 + 22 * i as i32;
            legend_area
                .draw(&Rectangle::new([(4, y - 1), (28, y + 1)], color.filled()))
                .map_err(|e| err("legend", &e))?;
            legend_area
                .draw(&Circle::new((16, y), 3, color.filled()))
                .map_err(|e| err("legend", &e))?;
            legend_area
                .draw(&Text::new(text.as_str(), (34, y - 7), ("sans-serif", 14)))
                .map_err(|e| err("legend", &e))?;
        }
        Ok(())
    }
}

/// Longest legend entry in characters; longer names are cut with "...".
const LEGEND_CHARS: usize = 40;

/// The legend entry of a series: its name, marked when none of its points could be drawn.
fn legend_text(name: &str, points: &[(f64, f64)]) -> String {
    let mut text: String = if name.chars().count() > LEGEND_CHARS {
        name.chars()
            .take(LEGEND_CHARS - 3)
            .chain("...".chars())
            .collect()
    } else {
        name.to_string()
    };
    if points.is_empty() {
        text.push_str(" (no data)");
    }
    text
}

/// A value in axis units, or `None` when it cannot be drawn (not finite, or `<= 0` on a log axis).
fn to_axis(v: f64, log: bool) -> Option<f64> {
    match (v.is_finite(), log) {
        (false, _) => None,
        (true, false) => Some(v),
        (true, true) => (v > 0.0).then(|| v.log10()),
    }
}

fn from_axis(v: f64, log: bool) -> f64 {
    if log {
        10f64.powf(v)
    } else {
        v
    }
}

/// One axis in axis units (log10 of the value on a log axis) with its chosen ticks.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Axis {
    /// The axis for `values` (already in axis units). `zero_based`: a linear axis starts at 0 when
    /// every value is `>= 0`.
    fn from_values(
        values: impl Iterator<Item = f64>,
        log: bool,
        zero_based: bool,
    ) -> Result<Axis, String> {
        let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (lo, hi) = if min > max {
            (0.0, 1.0) // no data: 0..1 linear, 1..10 log
        } else if log {
            let pad = ((max - min) * MARGIN).max(if max == min { 0.5 } else { 0.0 });
            (min - pad, max + pad)
        } else {
            let span = max - min;
            let pad = if span > 0.0 {
                span * MARGIN
            } else {
                (min.abs() * 0.1).max(1.0)
            };
            let lo = if zero_based && min >= 0.0 {
                0.0
            } else {
                min - pad
            };
            (lo, max + pad)
        };
        if !(hi - lo).is_finite() || hi <= lo {
            return Err(format!("data range {min}..{max} is too large to draw"));
        }
        let (ticks, minor) = if log {
            log_ticks(lo, hi)
        } else {
            (linear_ticks(lo, hi), Vec::new())
        };
        Ok(Axis {
            lo,
            hi,
            log,
            ticks,
            minor,
        })
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        // Clamped to a little outside the axis: plotters subtracts pixel positions in i32 and would
        // overflow (a panic with debug assertions) on a far-away value. NaN maps to the low end.
        let frac = ((value - self.lo) / (self.hi - self.lo)).clamp(-1.0, 2.0);
        let frac = if frac.is_nan() { 0.0 } else { frac };
        (f64::from(limit.0) + frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Round ticks (1, 2 or 5 times a power of ten apart), about 5 to 10 of them, within `lo..=hi`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (first, last) = ((lo / step).ceil(), (hi / step).floor());
    // Guard against float trouble (huge lo with a tiny span): fall back to the two ends.
    if !step.is_finite() || step <= 0.0 || !(0.0..=20.0).contains(&(last - first)) {
        return vec![lo, hi];
    }
    (0..=(last - first) as i64)
        .map(|k| (first + k as f64) * step)
        .map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t })
        .collect()
}

/// Ticks for a log axis `lo..hi` (in log10 units): decades when at least two fit (thinned to at most
/// 10), else 1-2-5 values, else round linear values; plus minor 2..9 lines between decades.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (d0, d1) = (lo.ceil() as i64, hi.floor() as i64);
    let in_range = |t: &f64| *t >= lo && *t <= hi;
    let decades: Vec<i64> = (d0..=d1).collect();
    let mut minor = Vec::new();
    if decades.len() <= 30 {
        for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
            minor.extend((2..=9).map(|m| (f64::from(m) * 10f64.powi(d as i32)).log10()));
        }
        minor.retain(in_range);
    }
    if decades.len() >= 2 {
        let every = decades.len().div_ceil(10);
        let ticks = decades.iter().step_by(every).map(|&d| d as f64).collect();
        return (ticks, minor);
    }
    let mut ticks: Vec<f64> = ((lo.floor() as i64)..=(hi.ceil() as i64))
        .flat_map(|d| [1.0, 2.0, 5.0].map(|m: f64| (m * 10f64.powi(d as i32)).log10()))
        .filter(in_range)
        .collect();
    if ticks.len() < 3 {
        ticks = linear_ticks(10f64.powf(lo), 10f64.powf(hi))
            .into_iter()
            .filter(|v| *v > 0.0)
            .map(f64::log10)
            .collect();
    }
    (ticks, minor)
}

/// A tick label: up to 3 decimals, with k/M/G suffixes for large values (1500000 -> "1.5M").
fn format_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    // Round to 6 significant digits so 10^3 computed as 999.9999999 prints as 1k.
    let digits = 5 - v.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    let v = if scale.is_finite() && scale > 0.0 {
        (v * scale).round() / scale
    } else {
        v
    };
    if v.abs() < 1e-3 {
        return format!("{v:e}");
    }
    let (div, suffix) = match v.abs() {
        a if a >= 1e12 => return format!("{v:e}"),
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let text = format!("{:.3}", v / div);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.into(),
            points: points.to_vec(),
        }
    }

    fn plot(x_log: bool, y_log: bool, series: Vec<Series>) -> LinePlot {
        LinePlot {
            title: "Throughput vs services".into(),
            x_label: "services".into(),
            y_label: "packets/s".into(),
            x_log,
            y_log,
            series,
        }
    }

    /// The coordinate pairs of every data line (a `<polyline>` of width 2; axes and ticks are
    /// width-1 polylines), in document order.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .map(|rest| &rest[..rest.find("/>").expect("polyline end")])
            .filter(|tag| tag.contains("stroke-width=\"2\""))
            .map(|rest| {
                let attr = rest.split("points=\"").nth(1).expect("points attribute");
                let attr = &attr[..attr.find('"').expect("closing quote")];
                attr.split_whitespace()
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').expect("x,y");
                        (x.parse().expect("x number"), y.parse().expect("y number"))
                    })
                    .collect()
            })
            .collect()
    }

    /// The contents of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|rest| {
                let body = &rest[rest.find('>').expect("tag end") + 1..];
                body[..body.find("</text>").expect("text end")]
                    .trim()
                    .to_string()
            })
            .collect()
    }

    fn assert_document(svg: &str) {
        let trimmed = svg.trim();
        assert!(
            trimmed.starts_with("<svg") || trimmed.starts_with("<?xml"),
            "start: {}",
            &trimmed[..trimmed.len().min(80)]
        );
        assert!(trimmed.ends_with("</svg>"), "end of document");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains("width=\"800\"") && svg.contains("height=\"500\""));
    }

    #[test]
    fn two_series_have_text_lines_and_markers() {
        let p = plot(
            false,
            false,
            vec![
                series("tap", &[(1.0, 100.0), (2.0, 150.0), (3.0, 120.0)]),
                series(
                    "af_xdp",
                    &[(1.0, 300.0), (2.0, 280.0), (3.0, 310.0), (4.0, 290.0)],
                ),
            ],
        );
        let svg = p.to_svg().unwrap();
        assert_document(&svg);
        let texts = texts(&svg);
        for want in [
            "Throughput vs services",
            "services",
            "packets/s",
            "tap",
            "af_xdp",
        ] {
            assert!(
                texts.iter().any(|t| t == want),
                "{want:?} missing in {texts:?}"
            );
        }
        let lines = polylines(&svg);
        assert_eq!(lines.iter().map(Vec::len).collect::<Vec<_>>(), [3, 4]);
        // 7 data markers + 2 legend markers.
        assert_eq!(svg.matches("<circle").count(), 9);
        // x increases along each line; the higher y value is drawn higher (smaller pixel y).
        assert!(lines[0].windows(2).all(|w| w[0].0 < w[1].0));
        assert!(lines[0][1].1 < lines[0][0].1);
        // Linear y starts at 0 when all values are >= 0: a "0" tick label exists.
        assert!(texts.iter().any(|t| t == "0"), "{texts:?}");
        // No "no data" note when there is data.
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn bad_values_are_skipped() {
        let p = plot(
            true,
            false,
            vec![series(
                "mixed",
                &[
                    (1.0, 10.0),
                    (f64::NAN, 5.0),
                    (10.0, f64::INFINITY),
                    (0.0, 7.0),     // x <= 0 on the log axis
                    (-5.0, 7.0),    // x <= 0 on the log axis
                    (100.0, -30.0), // negative y is fine on a linear axis
                    (1000.0, f64::NEG_INFINITY),
                    (10000.0, 20.0),
                ],
            )],
        );
        let svg = p.to_svg().unwrap();
        assert_document(&svg);
        assert_eq!(polylines(&svg)[0].len(), 3);
        assert!(
            !svg.contains("NaN") && !svg.contains("inf"),
            "no bad numbers in the SVG"
        );
        // y has a negative value, so the linear axis goes below 0: a negative tick label.
        assert!(texts(&svg).iter().any(|t| t.starts_with('-')));
    }

    #[test]
    fn log_y_skips_non_positive() {
        let p = plot(
            false,
            true,
            vec![series(
                "s",
                &[(1.0, 0.0), (2.0, 10.0), (3.0, -1.0), (4.0, 1000.0)],
            )],
        );
        let svg = p.to_svg().unwrap();
        assert_eq!(polylines(&svg)[0].len(), 2);
        let texts = texts(&svg);
        for want in ["10", "100", "1k"] {
            assert!(
                texts.iter().any(|t| t == want),
                "{want:?} missing in {texts:?}"
            );
        }
    }

    #[test]
    fn log_x_from_1_to_100000_has_decade_ticks() {
        let xs = [1.0, 1000.0, 10000.0, 100000.0];
        let p = plot(true, false, vec![series("tap", &xs.map(|x| (x, 2e6 - x)))]);
        let svg = p.to_svg().unwrap();
        assert_document(&svg);
        let texts = texts(&svg);
        for want in ["1", "10", "100", "1k", "10k", "100k"] {
            assert!(
                texts.iter().any(|t| t == want),
                "{want:?} missing in {texts:?}"
            );
        }
        // Millions on the y axis get a suffix.
        assert!(texts.iter().any(|t| t.ends_with('M')), "{texts:?}");
        // Equal decades are equally spaced: 1 -> 1000 is three times 1000 -> 10000.
        let line = &polylines(&svg)[0];
        let (d03, d34, d45) = (
            line[1].0 - line[0].0,
            line[2].0 - line[1].0,
            line[3].0 - line[2].0,
        );
        assert!((d03 - 3.0 * d34).abs() <= 2.0, "{line:?}");
        assert!((d34 - d45).abs() <= 1.0, "{line:?}");
    }

    #[test]
    fn names_and_labels_are_escaped() {
        let mut p = plot(
            false,
            false,
            vec![series("a<b & \"c\"", &[(1.0, 1.0), (2.0, 2.0)])],
        );
        p.title = "x < y & z".into();
        let svg = p.to_svg().unwrap();
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"), "{svg}");
        assert!(svg.contains("x &lt; y &amp; z"));
        assert!(!svg.contains("a<b") && !svg.contains("x < y"));
    }

    #[test]
    fn single_point() {
        for (x_log, y_log) in [(false, false), (true, true)] {
            let p = plot(x_log, y_log, vec![series("one", &[(1000.0, 5000.0)])]);
            let svg = p.to_svg().unwrap();
            assert_document(&svg);
            assert_eq!(polylines(&svg), vec![polylines(&svg)[0].clone()]);
            assert_eq!(polylines(&svg)[0].len(), 1);
            assert_eq!(svg.matches("<circle").count(), 2); // marker + legend
        }
    }

    #[test]
    fn no_data_renders_axes_and_a_note() {
        let empty = plot(true, true, vec![]);
        let svg = empty.to_svg().unwrap();
        assert_document(&svg);
        assert!(texts(&svg).iter().any(|t| t == "no data"));
        assert!(texts(&svg).iter().any(|t| t == "services"));
        assert!(polylines(&svg).is_empty());

        let hollow = plot(
            false,
            true,
            vec![
                series("empty", &[]),
                series("all bad", &[(1.0, 0.0), (f64::NAN, 1.0)]),
            ],
        );
        let svg = hollow.to_svg().unwrap();
        let texts = texts(&svg);
        assert!(texts.iter().any(|t| t == "no data"));
        assert!(texts.iter().any(|t| t == "empty (no data)"));
        assert!(texts.iter().any(|t| t == "all bad (no data)"));
        assert!(polylines(&svg).is_empty());
    }

    #[test]
    fn a_series_without_points_does_not_shift_colours_or_lines() {
        let p = plot(
            false,
            false,
            vec![
                series("first", &[(1.0, 1.0), (2.0, 2.0)]),
                series("none", &[]),
                series("third", &[(1.0, 3.0)]),
            ],
        );
        let svg = p.to_svg().unwrap();
        assert_eq!(
            polylines(&svg).iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1]
        );
        // The third series keeps the third palette colour (green).
        assert!(
            svg.contains("#2CA02C") || svg.contains("#2ca02c"),
            "third colour used"
        );
    }

    #[test]
    fn range_too_large_is_an_error_not_a_panic() {
        let p = plot(
            false,
            false,
            vec![series("huge", &[(0.0, -1e308), (1.0, 1e308)])],
        );
        let err = p.to_svg().unwrap_err();
        assert!(err.contains("y axis"), "{err}");
    }

    #[test]
    fn extreme_but_valid_values_do_not_panic() {
        let cases: [&[(f64, f64)]; 4] = [
            &[(1e-300, 1e-300), (1e300, 1e300)],
            &[(1e15, 1.0), (1e15 + 1.0, 2.0)],
            &[(0.0, 0.0), (0.0, 0.0)],
            &[(f64::MIN_POSITIVE, f64::MAX)],
        ];
        for pts in cases {
            for (x_log, y_log) in [(false, false), (true, true), (true, false)] {
                let p = plot(x_log, y_log, vec![series("s", pts)]);
                if let Ok(svg) = p.to_svg() {
                    assert_document(&svg);
                }
            }
        }
    }

    #[test]
    fn long_names_are_cut_in_the_legend() {
        let long = "é".repeat(100);
        let p = plot(false, false, vec![series(&long, &[(1.0, 1.0)])]);
        let svg = p.to_svg().unwrap();
        let want = format!("{}...", "é".repeat(37));
        assert!(texts(&svg).contains(&want));
        assert!(!svg.contains(&long));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(10f64.powf(3.0)), "1k");
        assert_eq!(format_tick(1_500_000.0), "1.5M");
        assert_eq!(format_tick(2.5e9), "2.5G");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(-200.0), "-200");
        assert_eq!(linear_ticks(0.0, 10.5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(log_ticks(-0.1, 5.1).0, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }
}
