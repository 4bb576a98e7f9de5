//! The HTML report's line charts: labelled axes with "nice" ticks, several series, horizontal
//! threshold lines, gaps where an interval had no samples, and a log-scaled percentile axis the way
//! HdrHistogram plots a latency distribution. A plotting crate would bring fonts and a raster back
//! end we do not need; this stays under a few hundred lines.
//!
//! This module does the arithmetic: [`Chart::view`] places every tick, point and line on screen.
//! `templates/chart.html` draws the result as inline SVG, escaping every title, label and series
//! name like the rest of the page. The SVG has no `xmlns` (HTML5 does not need it) and is styled
//! by the page's CSS, so it follows the page into print. The legend is HTML under the chart so it
//! wraps in a narrow window. [`BarChart`] draws one bar per category (a fleet's instances) on
//! the same frame, through `templates/bar_chart.html`.

const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 46.0;
const PLOT_W: f64 = W - LEFT - RIGHT;
const PLOT_H: f64 = H - TOP - BOTTOM;

/// Colour-blind-safe series colours (Okabe–Ito, without the yellow that vanishes on white).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#666666", "#8C564B",
];
const THRESHOLD_COLOUR: &str = "#C00000";

/// How the x axis is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// Plain numbers (seconds, arrivals per second).
    Linear,
    /// x = log10(1 / (1 − q)) for quantile q, labelled 0%, 90%, 99%, 99.9%, ...
    Percentile,
}

/// One line. A point whose y is NaN ends a segment (an interval without samples).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line, such as a threshold's limit.
#[derive(Debug, Clone)]
pub(crate) struct RefLine {
    pub label: String,
    pub y: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// DOM id of the chart's `<figure>`.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
    pub ref_lines: Vec<RefLine>,
}

impl Chart {
    /// Points with a finite value, over all series.
    pub fn point_count(&self) -> usize {
        self.series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .count()
    }

    /// The chart placed on screen, for `templates/chart.html`.
    pub fn view(&self) -> ChartView<'_> {
        let finite = || {
            self.series
                .iter()
                .flat_map(|s| &s.points)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let x_max = finite().map(|p| p.0).fold(0.0_f64, f64::max);
        let x_min = finite().map(|p| p.0).fold(0.0_f64, f64::min);
        let y_max = finite()
            .map(|p| p.1)
            .chain(self.ref_lines.iter().map(|r| r.y))
            .fold(0.0_f64, f64::max);
        let y_min = finite().map(|p| p.1).fold(0.0_f64, f64::min);

        let (x_ticks, x_lo, x_hi) = match self.x_axis {
            XAxis::Linear => nice_ticks(x_min, x_max),
            XAxis::Percentile => {
                let hi = x_max.ceil().max(1.0);
                ((0..=hi as u32).map(f64::from).collect(), 0.0, hi)
            }
        };
        let (y_ticks, y_lo, y_hi) = nice_ticks(y_min, y_max);
        let sx = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * PLOT_W;
        let sy = |y: f64| TOP + PLOT_H - (y - y_lo) / (y_hi - y_lo) * PLOT_H;

        let y_tick_views = y_ticks
            .iter()
            .map(|&t| Tick {
                at: px(sy(t)),
                label_at: px(sy(t) + 4.0),
                label: tick_label(t, &y_ticks),
                anchor: "end",
            })
            .collect();
        let x_tick_views = x_ticks
            .iter()
            .enumerate()
            .map(|(k, &t)| Tick {
                at: px(sx(t)),
                label_at: px(sx(t)),
                label: match self.x_axis {
                    XAxis::Linear => tick_label(t, &x_ticks),
                    XAxis::Percentile => percentile_label(t as u32),
                },
                // The last percentile label (99.99%) is wide: keep it inside the frame.
                anchor: if self.x_axis == XAxis::Percentile && k + 1 == x_ticks.len() {
                    "end"
                } else {
                    "middle"
                },
            })
            .collect();
        let series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| SeriesView {
                name: &s.name,
                colour: PALETTE[i % PALETTE.len()],
                segments: segments(&s.points, &sx, &sy),
            })
            .collect();
        let ref_lines = self
            .ref_lines
            .iter()
            .map(|r| RefLineView {
                label: &r.label,
                y: px(sy(r.y)),
                label_y: px(sy(r.y) - 4.0),
            })
            .collect();
        ChartView {
            id: &self.id,
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            points: self.point_count(),
            frame: Frame::new(),
            y_ticks: y_tick_views,
            x_ticks: x_tick_views,
            series,
            ref_lines,
            threshold_colour: THRESHOLD_COLOUR,
        }
    }
}

/// A chart with every coordinate already on screen, formatted to a tenth of a unit; all its
/// text is the chart's own, escaped by the template.
pub(crate) struct ChartView<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Finite points over all series (`data-points`).
    pub points: usize,
    pub frame: Frame,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub series: Vec<SeriesView<'a>>,
    pub ref_lines: Vec<RefLineView<'a>>,
    pub threshold_colour: &'static str,
}

/// The fixed positions every chart shares: the plot area's edges and where the axis labels sit.
pub(crate) struct Frame {
    pub view_box: String,
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
    /// Where an x tick mark ends and its label's baseline is.
    pub x_tick_end: String,
    pub x_tick_label: String,
    /// Where the y tick labels end.
    pub y_tick_label: String,
    /// The x axis label's centre and baseline.
    pub x_label_x: String,
    pub x_label_y: String,
    /// The rotated y axis label's centre.
    pub y_label_y: String,
    /// Where threshold labels end.
    pub ref_label_x: String,
}

impl Frame {
    fn new() -> Frame {
        let bottom = TOP + PLOT_H;
        Frame {
            view_box: format!("0 0 {W} {H}"),
            left: LEFT.to_string(),
            right: px(W - RIGHT),
            top: TOP.to_string(),
            bottom: px(bottom),
            x_tick_end: px(bottom + 4.0),
            x_tick_label: px(bottom + 17.0),
            y_tick_label: px(LEFT - 6.0),
            x_label_x: px(LEFT + PLOT_W / 2.0),
            x_label_y: px(H - 6.0),
            y_label_y: px(TOP + PLOT_H / 2.0),
            ref_label_x: px(W - RIGHT - 2.0),
        }
    }
}

/// A tick on either axis: its grid line or mark, and its label.
pub(crate) struct Tick {
    pub at: String,
    pub label_at: String,
    pub label: String,
    pub anchor: &'static str,
}

pub(crate) struct SeriesView<'a> {
    pub name: &'a str,
    pub colour: &'static str,
    pub segments: Vec<Segment>,
}

/// A run of points without a gap: a line, or a dot when it is a single point.
pub(crate) enum Segment {
    Dot { cx: String, cy: String },
    Line { points: String },
}

pub(crate) struct RefLineView<'a> {
    pub label: &'a str,
    pub y: String,
    pub label_y: String,
}

/// A bar chart of one value per category (a fleet's instances), with some bars marked (a
/// saturated generator) in another colour.
#[derive(Debug, Clone)]
pub(crate) struct BarChart {
    /// DOM id of the chart's `<figure>`.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Category label, value, marked.
    pub bars: Vec<(String, f64, bool)>,
    /// What a marked bar means, for the legend.
    pub marked_label: String,
}

/// A bar chart placed on screen, for `templates/bar_chart.html`; owned, every text escaped by
/// the template.
pub(crate) struct BarChartView {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub frame: Frame,
    pub y_ticks: Vec<Tick>,
    pub bars: Vec<BarView>,
    pub colour: &'static str,
    pub marked_colour: &'static str,
    /// The legend's entry for marked bars; empty when no bar is marked.
    pub marked_label: String,
}

/// One bar: its rectangle, its label under the axis and its exact value (`data-v`, tooltip).
pub(crate) struct BarView {
    pub label: String,
    pub value: String,
    pub shown: String,
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub label_x: String,
    pub colour: &'static str,
}

impl BarChart {
    /// The chart placed on screen.
    pub fn view(&self) -> BarChartView {
        let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let y_max = self.bars.iter().map(|b| finite(b.1)).fold(0.0, f64::max);
        let (y_ticks, y_lo, y_hi) = nice_ticks(0.0, y_max);
        let sy = |y: f64| TOP + PLOT_H - (y - y_lo) / (y_hi - y_lo) * PLOT_H;
        let slot = PLOT_W / self.bars.len().max(1) as f64;
        let (colour, marked_colour) = (PALETTE[0], PALETTE[5]);
        let bars = self
            .bars
            .iter()
            .enumerate()
            .map(|(k, (label, value, marked))| {
                let v = finite(*value);
                let left = LEFT + slot * k as f64;
                BarView {
                    label: label.clone(),
                    value: value.to_string(),
                    shown: super::model::number(*value),
                    x: px(left + slot * 0.2),
                    y: px(sy(v)),
                    width: px(slot * 0.6),
                    height: px(sy(0.0) - sy(v)),
                    label_x: px(left + slot / 2.0),
                    colour: if *marked { marked_colour } else { colour },
                }
            })
            .collect();
        BarChartView {
            id: self.id.clone(),
            title: self.title.clone(),
            x_label: self.x_label.clone(),
            y_label: self.y_label.clone(),
            frame: Frame::new(),
            y_ticks: y_ticks
                .iter()
                .map(|&t| Tick {
                    at: px(sy(t)),
                    label_at: px(sy(t) + 4.0),
                    label: tick_label(t, &y_ticks),
                    anchor: "end",
                })
                .collect(),
            bars,
            colour,
            marked_colour,
            marked_label: if self.bars.iter().any(|b| b.2) {
                self.marked_label.clone()
            } else {
                String::new()
            },
        }
    }
}

/// A series' points on screen: runs of finite points as lines (decimated to what a pixel column
/// shows), a lone point as a dot; a gap where a value is missing.
fn segments(
    points: &[(f64, f64)],
    sx: &impl Fn(f64) -> f64,
    sy: &impl Fn(f64) -> f64,
) -> Vec<Segment> {
    points
        .split(|(x, y)| !x.is_finite() || !y.is_finite())
        .filter(|seg| !seg.is_empty())
        .map(|segment| match segment {
            [(x, y)] => Segment::Dot {
                cx: px(sx(*x)),
                cy: px(sy(*y)),
            },
            _ => {
                let screen: Vec<(f64, f64)> =
                    segment.iter().map(|(x, y)| (sx(*x), sy(*y))).collect();
                let points: Vec<String> = decimate(&screen)
                    .iter()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect();
                Segment::Line {
                    points: points.join(" "),
                }
            }
        })
        .collect()
}

/// A screen coordinate as the chart writes it.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// Screen points reduced to what a pixel column can show: for a long run (an hour is 3,600
/// intervals) each column keeps its first, lowest, highest and last point, so spikes survive and
/// the page stays small.
fn decimate(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= 2 * PLOT_W as usize {
        return points.to_vec();
    }
    let mut out: Vec<(f64, f64)> = Vec::new();
    for column in points.chunk_by(|a, b| a.0.floor() == b.0.floor()) {
        let by_y = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let (first, last) = (column[0], column[column.len() - 1]);
        let low = *column.iter().min_by(by_y).unwrap_or(&first);
        let high = *column.iter().max_by(by_y).unwrap_or(&first);
        // Keep the extremes in the order they happened.
        let (a, b) =
            if column.iter().position(|p| *p == low) < column.iter().position(|p| *p == high) {
                (low, high)
            } else {
                (high, low)
            };
        for p in [first, a, b, last] {
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Ticks at 1, 2, 2.5 or 5 × 10ⁿ covering [lo, hi], with the axis's ends.
fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64, f64) {
    let (lo, hi) = if hi - lo > 0.0 {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    };
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let n = ((last - first) / step).round() as usize;
    let ticks = (0..=n).map(|i| first + i as f64 * step).collect();
    (ticks, first, last)
}

/// A tick's label with as many decimals as the step needs.
fn tick_label(v: f64, ticks: &[f64]) -> String {
    let step = match ticks {
        [a, b, ..] => b - a,
        _ => 1.0,
    };
    let mut decimals = 0;
    while decimals < 6
        && ((step * 10f64.powi(decimals)).round() - step * 10f64.powi(decimals)).abs() > 1e-6
    {
        decimals += 1;
    }
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    format!("{v:.*}", decimals as usize)
}

/// 0 → `0%`, 1 → `90%`, 2 → `99%`, 3 → `99.9%`, ...
fn percentile_label(k: u32) -> String {
    match k {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The x coordinate of quantile `q` on a percentile axis.
pub(crate) fn percentile_x(q: f64) -> f64 {
    (1.0 / (1.0 - q)).log10()
}

#[cfg(test)]
mod tests {
    use askama::Template;

    use super::*;

    /// The chart alone, drawn as the page draws it.
    #[derive(Template)]
    #[template(path = "chart.html")]
    struct Figure<'a> {
        c: ChartView<'a>,
    }

    #[test]
    fn nice_ticks_cover_the_range() {
        let (t, lo, hi) = nice_ticks(0.0, 9.3);
        assert_eq!((lo, hi), (0.0, 10.0));
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let (_, lo, hi) = nice_ticks(0.0, 0.0);
        assert_eq!((lo, hi), (0.0, 1.0));
        let (t, _, hi) = nice_ticks(0.0, 0.11);
        assert!(hi >= 0.11);
        assert_eq!(tick_label(t[1], &t), "0.025");
    }

    #[test]
    fn long_series_keep_their_spikes() {
        let points: Vec<(f64, f64)> = (0..36_000)
            .map(|i| (i as f64 / 100.0, if i == 12_345 { 1.0 } else { 100.0 }))
            .collect();
        let kept = decimate(&points);
        assert!(kept.len() <= 4 * 360 + 4, "{}", kept.len());
        assert!(kept.contains(&(123.45, 1.0)));
        assert_eq!(kept.first(), points.first());
        assert_eq!(kept.last(), points.last());
    }

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(3), "99.9%");
        assert!((percentile_x(0.99) - 2.0).abs() < 1e-9);
    }

    #[derive(Template)]
    #[template(path = "bar_chart.html")]
    struct Bars {
        b: BarChartView,
    }

    #[test]
    fn bars_stand_on_the_axis_and_escape_labels() {
        let chart = BarChart {
            id: "bars".into(),
            title: "Queries".into(),
            x_label: "instance".into(),
            y_label: "queries".into(),
            bars: vec![
                ("0/2".into(), 100.0, false),
                ("<script>".into(), 50.0, true),
            ],
            marked_label: "saturated".into(),
        };
        let view = chart.view();
        assert_eq!(view.bars[1].colour, PALETTE[5]);
        let (h0, h1): (f64, f64) = (
            view.bars[0].height.parse().unwrap(),
            view.bars[1].height.parse().unwrap(),
        );
        assert!((h0 - 2.0 * h1).abs() < 0.2, "{h0} {h1}");
        let out = Bars { b: view }.render().unwrap();
        assert_eq!(out.matches("<rect").count(), 2);
        assert!(!out.contains("<script>") && out.contains("&lt;script&gt;"));
        assert!(out.contains("saturated"));
    }

    #[test]
    fn gaps_split_lines_and_escape_names() {
        let chart = Chart {
            id: "c".into(),
            title: "<b>".into(),
            x_label: "t".into(),
            y_label: "ms".into(),
            x_axis: XAxis::Linear,
            series: vec![Series {
                name: "<script>".into(),
                points: vec![(1.0, 1.0), (2.0, 2.0), (3.0, f64::NAN), (4.0, 3.0)],
            }],
            ref_lines: vec![RefLine {
                label: "p(99) < 2".into(),
                y: 2.0,
            }],
        };
        let out = Figure { c: chart.view() }.render().unwrap();
        assert_eq!(chart.point_count(), 3);
        assert_eq!(out.matches("<polyline").count(), 1);
        assert_eq!(out.matches("<circle").count(), 1);
        assert!(!out.contains("<script>"));
        assert!(out.contains("&lt;b&gt;"));
    }
}
