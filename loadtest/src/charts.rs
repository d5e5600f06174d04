//! PNG charts for the load-test report: latency over time and the latency histogram.
//!
//! Text is rendered with plotters' pure-Rust `ab_glyph` backend, so the only runtime
//! requirement is the DejaVu Sans font file (Debian package `fonts-dejavu-core`);
//! no fontconfig or freetype is linked.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One second of one request name.
pub struct Second {
    /// Seconds since the scenario started (the second's start).
    pub at_secs: f64,
    pub requests: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The per-second statistics of one request name (`login`, `check`, `token`, ...).
pub struct TimeSeries {
    pub name: String,
    pub seconds: Vec<Second>,
}

/// A histogram bucket: requests whose latency was above the previous bucket's
/// `upper_ms` (0 for the first) and at most this one's.
pub struct Bucket {
    pub upper_ms: f64,
    pub count: u64,
}

/// The latency distribution of one request name, in log-spaced buckets.
pub struct Distribution {
    pub name: String,
    pub buckets: Vec<Bucket>,
}

/// A labelled moment in the run (a phase boundary such as "slow queries on").
pub struct Marker {
    pub at_secs: f64,
    pub label: String,
}

const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family plotters asks for by default (axis labels, legends), so registering
/// the font under this name covers every piece of text.
const FONT_FAMILY: &str = "sans-serif";

/// Width of the legend column right of each plot: legends sit outside the data so
/// they never hide a line.
const LEGEND_WIDTH: i32 = 270;
const LEGEND_ROW: i32 = 20;
/// Width of one line-sample column in a legend (p50 / p95 / p99, or requests / failed).
const LEGEND_SAMPLE: i32 = 42;
/// Left label area, identical for stacked panels so their x axes line up.
const Y_LABEL_AREA: i32 = 80;
/// Room above the latency plot for the marker labels (two staggered rows).
const MARKER_LABEL_AREA: i32 = 44;

/// Tableau-10 without red, so no request name looks like an error colour.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const LIMIT_COLOUR: RGBColor = RGBColor(120, 120, 120);
const MARKER_COLOUR: RGBColor = RGBColor(50, 50, 50);
const FRAME_COLOUR: RGBColor = RGBColor(170, 170, 170);
const GRID_COLOUR: RGBColor = RGBColor(210, 210, 210);
const LIGHT_GRID_COLOUR: RGBColor = RGBColor(238, 238, 238);

/// Percentiles are told apart by shade: the further into the tail, the darker the line,
/// so the worst case (p99) stands out. Each entry is (label, share of white mixed in).
const PERCENTILES: [(&str, f64); 3] = [("p50", 0.65), ("p95", 0.35), ("p99", 0.0)];

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws per-second latency percentiles (log scale, upper panel) and throughput
/// (lower panel) of every request name, with phase markers and latency limits.
pub fn latency_over_time(path: &Path, title: &str, series: &[TimeSeries], markers: &[Marker], limits_ms: &[f64]) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.margin(12, 0, 0, 0).titled(title, (FONT_FAMILY, 28))?;
    let (upper, lower) = body.split_vertically(60.percent_height());

    let x_range = time_range(series, markers);
    let limits: Vec<f64> = limits_ms.iter().copied().filter(|l| is_positive(*l)).collect();
    draw_latency_panel(&root, &upper, series, markers, &limits, x_range.clone())?;
    draw_throughput_panel(&lower, series, markers, x_range)?;

    root.present().with_context(|| format!("writing {}", path.display()))
}

/// Draws, per request name, the share of its requests that fell in each latency bucket.
pub fn latency_histogram(path: &Path, title: &str, dists: &[Distribution]) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.margin(12, 0, 0, 0).titled(title, (FONT_FAMILY, 28))?;
    let (plot, legend) = body.split_horizontally(body.dim_in_pixel().0 as i32 - LEGEND_WIDTH);

    let bars: Vec<Vec<Bar>> = dists.iter().map(bars).collect();
    let all_bars = || bars.iter().flatten();
    let x_range = log_range(all_bars().flat_map(|b| [b.lo, b.hi]));
    let max_share = all_bars().map(|b| b.share).fold(0.0, f64::max);

    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_right(20)
        .x_label_area_size(50)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(log_axis(x_range), 0.0..(max_share * 1.1).max(1.0))?;
    draw_mesh(&mut chart, "latency (ms, log scale)", "share of requests (%)")?;

    let area = chart.plotting_area();
    let mut rows = Vec::new();
    for (i, (dist, bars)) in dists.iter().zip(&bars).enumerate() {
        let colour = series_colour(i);
        if !bars.is_empty() {
            let outline = step_outline(bars);
            area.draw(&Polygon::new(outline.clone(), colour.mix(0.12).filled()))?;
            area.draw(&PathElement::new(outline, colour.stroke_width(2)))?;
        }
        let total = dist.buckets.iter().map(|b| b.count).sum();
        rows.push(LegendRow { label: format!("{} ({} requests)", dist.name, thousands(total)), samples: vec![Sample::solid(colour)] });
    }
    draw_legend(&legend, 10, &[], &rows)?;

    root.present().with_context(|| format!("writing {}", path.display()))
}

/// Upper panel: p50/p95/p99 per name on a log axis, limit lines, and the marker labels
/// (drawn on `root` above the plot frame so they never cover data).
fn draw_latency_panel(
    root: &Area,
    panel: &Area,
    series: &[TimeSeries],
    markers: &[Marker],
    limits: &[f64],
    x_range: Range<f64>,
) -> anyhow::Result<()> {
    let (plot, legend) = panel.split_horizontally(panel.dim_in_pixel().0 as i32 - LEGEND_WIDTH);
    let observed = series.iter().flat_map(|s| &s.seconds).filter(|s| s.requests > 0);
    let y_range = log_range(observed.flat_map(|s| [s.p50_ms, s.p95_ms, s.p99_ms]).chain(limits.iter().copied()));

    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_top(MARKER_LABEL_AREA)
        .margin_right(20)
        .x_label_area_size(30)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_range.clone(), log_axis(y_range.clone()))?;
    draw_mesh(&mut chart, "", "latency (ms, log scale)")?;
    let area = chart.plotting_area();

    let mut rows = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let mut samples = Vec::new();
        for (p, (_, whiteness)) in PERCENTILES.iter().enumerate() {
            let colour = lighten(series_colour(i), *whiteness);
            let points = s.seconds.iter().map(|sec| {
                let ms = [sec.p50_ms, sec.p95_ms, sec.p99_ms][p];
                (sec.requests > 0 && is_positive(ms)).then_some((sec.at_secs, ms))
            });
            draw_broken_line(area, points, colour.stroke_width(2))?;
            samples.push(Sample::solid(colour));
        }
        rows.push(LegendRow { label: s.name.clone(), samples });
    }

    let limit_label = TextStyle::from((FONT_FAMILY, 14).into_font()).color(&LIMIT_COLOUR).pos(Pos::new(HPos::Right, VPos::Bottom));
    for &limit in limits {
        let line = [(x_range.start, limit), (x_range.end, limit)];
        area.draw(&DashedPathElement::new(line, 10, 6, LIMIT_COLOUR.stroke_width(2)))?;
        area.draw(
            &(EmptyElement::at((x_range.end, limit)) + Text::new(format!("{} ms", format_tick(limit)), (-6, -3), limit_label.clone())),
        )?;
    }

    let marker_label = TextStyle::from((FONT_FAMILY, 14).into_font()).color(&MARKER_COLOUR);
    for (i, marker) in markers.iter().enumerate() {
        draw_marker_line(area, marker.at_secs, y_range.clone())?;
        let (x, top) = chart.backend_coord(&(marker.at_secs, y_range.end));
        let row = (i % 2) as i32;
        root.draw(&Text::new(marker.label.as_str(), (x + 4, top - 38 + row * 18), marker_label.clone()))?;
    }

    let columns = PERCENTILES.map(|(label, _)| label);
    draw_legend(&legend, MARKER_LABEL_AREA, &columns, &rows)
}

/// Lower panel: requests/s (solid) and failed/s (dashed, same colour) per name.
fn draw_throughput_panel(panel: &Area, series: &[TimeSeries], markers: &[Marker], x_range: Range<f64>) -> anyhow::Result<()> {
    let (plot, legend) = panel.split_horizontally(panel.dim_in_pixel().0 as i32 - LEGEND_WIDTH);
    let max_rate = series.iter().flat_map(|s| &s.seconds).map(|s| s.requests.max(s.failed)).max().unwrap_or(0);
    let y_range = 0.0..(max_rate as f64 * 1.1).max(1.0);

    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_right(20)
        .x_label_area_size(50)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_range, y_range.clone())?;
    draw_mesh(&mut chart, "seconds since start", "requests / s")?;
    let area = chart.plotting_area();

    let mut rows = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let colour = series_colour(i);
        let requests = s.seconds.iter().map(|sec| Some((sec.at_secs, sec.requests as f64)));
        draw_broken_line(area, requests, colour.stroke_width(2))?;

        let failed: Vec<(f64, f64)> = s.seconds.iter().map(|sec| (sec.at_secs, sec.failed as f64)).collect();
        draw_dashed_line(area, &failed, colour)?;
        rows.push(LegendRow { label: s.name.clone(), samples: vec![Sample::solid(colour), Sample::dashed(colour)] });
    }
    for marker in markers {
        draw_marker_line(area, marker.at_secs, y_range.clone())?;
    }

    draw_legend(&legend, 10, &["req/s", "failed/s"], &rows)
}

/// Draws axes, tick labels and a subdued grid the same way on every chart; an empty
/// `x_desc` leaves the axis unnamed (the latency panel shares the throughput panel's).
fn draw_mesh<X, Y>(chart: &mut ChartContext<BitMapBackend, Cartesian2d<X, Y>>, x_desc: &str, y_desc: &str) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 15))
        .bold_line_style(GRID_COLOUR)
        .light_line_style(LIGHT_GRID_COLOUR)
        .max_light_lines(2)
        .draw()?;
    Ok(())
}

/// Registers DejaVu Sans with plotters once per process. The `ab_glyph` backend keeps
/// `&'static` font bytes, so the file is read once and leaked (about 700 KB).
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        let bytes = std::fs::read(FONT_FILE)
            .map_err(|e| format!("cannot read font {FONT_FILE} ({e}); install the Debian package fonts-dejavu-core"))?;
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| format!("{FONT_FILE} is not a usable TrueType font"))
    });
    result.clone().map_err(|e| anyhow!(e))
}

/// The x range shared by both panels: from the start (or earliest data) to one second past
/// the last data point or marker, at least 10 s wide so short runs still get a usable axis.
fn time_range(series: &[TimeSeries], markers: &[Marker]) -> Range<f64> {
    let times = series.iter().flat_map(|s| &s.seconds).map(|s| s.at_secs).chain(markers.iter().map(|m| m.at_secs));
    let (start, end) = times.filter(|t| t.is_finite()).fold((0.0, 0.0), |(lo, hi): (f64, f64), t| (lo.min(t), hi.max(t + 1.0)));
    start..end.max(start + 10.0)
}

/// A log-axis range around the positive finite `values`, widened a little and snapped
/// outward to the 1-2-5 sequence so both ends carry a tick label; 1..1000 ms without data.
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (min, max) = values.filter(|v| is_positive(*v)).fold((f64::INFINITY, 0.0), |(lo, hi): (f64, f64), v| (lo.min(v), hi.max(v)));
    if max == 0.0 {
        return 1.0..1000.0;
    }
    nice_floor(min / 1.25)..nice_ceil(max * 1.25)
}

/// A log axis with labels at 1-2-5 values and light grid lines at the other integer
/// multiples; beyond four decades, labels only at powers of ten and light lines at 2 and 5.
fn log_axis(range: Range<f64>) -> WithKeyPoints<LogCoord<f64>> {
    let decades = (range.end / range.start).log10();
    let (labelled, unlabelled): (&[u32], &[u32]) = if decades > 4.0 { (&[1], &[2, 5]) } else { (&[1, 2, 5], &[3, 4, 6, 7, 8, 9]) };
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    for exponent in range.start.log10().floor() as i32..=range.end.log10().ceil() as i32 {
        for &mantissa in labelled.iter().chain(unlabelled) {
            let value = f64::from(mantissa) * 10f64.powi(exponent);
            if value < range.start * (1.0 - 1e-9) || value > range.end * (1.0 + 1e-9) {
                continue;
            }
            if labelled.contains(&mantissa) {
                bold.push(value);
            } else {
                light.push(value);
            }
        }
    }
    range.log_scale().with_key_points(bold).with_light_points(light)
}

/// The largest 1-2-5 value not above `v` (> 0).
fn nice_floor(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0].into_iter().map(|m| m * decade).find(|n| *n <= v * (1.0 + 1e-9)).unwrap_or(decade)
}

/// The smallest 1-2-5 value not below `v` (> 0).
fn nice_ceil(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * decade).find(|n| *n >= v * (1.0 - 1e-9)).unwrap_or(10.0 * decade)
}

/// Draws a line through the points, leaving a gap wherever a point is missing (a second
/// without requests, or a value the log axis cannot show) instead of bridging it; an
/// isolated point becomes a dot so a single second is still visible.
///
/// Each segment is drawn on its own: plotters joins a wide polyline with miters, and the
/// sharp zig-zags of dense per-second data turn those into long spikes off the line.
fn draw_broken_line<X, Y>(
    area: &DrawingArea<BitMapBackend, Cartesian2d<X, Y>>,
    points: impl Iterator<Item = Option<(f64, f64)>>,
    style: ShapeStyle,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let mut segment = Vec::new();
    for point in points.chain([None]) {
        if let Some(p) = point {
            segment.push(p);
            continue;
        }
        match std::mem::take(&mut segment).as_slice() {
            [] => {}
            [only] => area.draw(&Circle::new(*only, 3, style.filled()))?,
            run => {
                for pair in run.windows(2) {
                    area.draw(&PathElement::new(pair, style))?;
                }
            }
        }
    }
    Ok(())
}

/// Draws a dashed line two pixels thick as two 1-pixel dashed lines a pixel apart: like
/// solid ones, plotters' wide dashed polylines spike at the sharp turns of dense data, and
/// dashes cannot be drawn segment by segment without restarting the pattern at every point.
fn draw_dashed_line<X: Ranged<ValueType = f64>>(
    area: &DrawingArea<BitMapBackend, Cartesian2d<X, RangedCoordf64>>,
    points: &[(f64, f64)],
    colour: RGBColor,
) -> anyhow::Result<()> {
    let (_, pixels) = area.get_pixel_range();
    let y_range = area.get_y_range();
    let one_pixel = (y_range.end - y_range.start) / f64::from((pixels.end - pixels.start).max(1));
    for offset in [0.0, one_pixel] {
        let shifted = points.iter().map(|&(x, y)| (x, y + offset));
        area.draw(&DashedPathElement::new(shifted, 6, 4, colour.stroke_width(1)))?;
    }
    Ok(())
}

/// A vertical phase-marker line spanning the whole panel height.
fn draw_marker_line<X, Y>(area: &DrawingArea<BitMapBackend, Cartesian2d<X, Y>>, at_secs: f64, y_range: Range<f64>) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    area.draw(&PathElement::new([(at_secs, y_range.start), (at_secs, y_range.end)], MARKER_COLOUR.stroke_width(2)))?;
    Ok(())
}

/// One histogram bar on the latency axis, as a share (%) of its name's requests.
struct Bar {
    lo: f64,
    hi: f64,
    share: f64,
}

/// The bars of one distribution, without the empty buckets at either end (they would only
/// stretch the axis). The first bucket starts at 0 ms, which a log axis cannot show, so it
/// is drawn as wide (in log terms) as the bucket after it.
fn bars(dist: &Distribution) -> Vec<Bar> {
    let total: u64 = dist.buckets.iter().map(|b| b.count).sum();
    if total == 0 {
        return Vec::new();
    }
    let first_ratio = match dist.buckets.as_slice() {
        [a, b, ..] if is_positive(a.upper_ms) && b.upper_ms > a.upper_ms && b.upper_ms.is_finite() => b.upper_ms / a.upper_ms,
        _ => 2.0,
    };
    let mut bars = Vec::new();
    let mut lower = 0.0;
    for bucket in &dist.buckets {
        if !(bucket.upper_ms.is_finite() && bucket.upper_ms > lower) {
            continue; // malformed bound: no width to draw
        }
        let lo = if lower > 0.0 { lower } else { bucket.upper_ms / first_ratio };
        bars.push(Bar { lo, hi: bucket.upper_ms, share: 100.0 * bucket.count as f64 / total as f64 });
        lower = bucket.upper_ms;
    }
    let first = bars.iter().position(|b| b.share > 0.0).unwrap_or(bars.len());
    let last = bars.iter().rposition(|b| b.share > 0.0).map_or(first, |i| i + 1);
    bars.drain(first..last).collect()
}

/// The outline of adjacent bars as one closed step path from the axis and back, so several
/// names can overlap and still be told apart.
fn step_outline(bars: &[Bar]) -> Vec<(f64, f64)> {
    let mut points = vec![(bars[0].lo, 0.0)];
    for bar in bars {
        points.extend([(bar.lo, bar.share), (bar.hi, bar.share)]);
    }
    points.push((bars[bars.len() - 1].hi, 0.0));
    points
}

/// A legend row: a request name and a sample of each of its lines.
struct LegendRow {
    label: String,
    samples: Vec<Sample>,
}

/// How a line is drawn, shown as a short sample in the legend.
struct Sample {
    colour: RGBColor,
    dashed: bool,
}

impl Sample {
    fn solid(colour: RGBColor) -> Self {
        Self { colour, dashed: false }
    }

    fn dashed(colour: RGBColor) -> Self {
        Self { colour, dashed: true }
    }
}

/// Draws a framed legend table in its own column, starting `top` pixels down: one row per
/// request name, one sample column per kind of line (captioned by `columns`, if any). A
/// table keeps the legend short enough for many names, where one row per line would not.
fn draw_legend(area: &Area, top: i32, columns: &[&str], rows: &[LegendRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (left, right) = (4, area.dim_in_pixel().0 as i32 - 10);
    let header = if columns.is_empty() { 0 } else { LEGEND_ROW };
    let bottom = top + 8 + header + rows.len() as i32 * LEGEND_ROW;
    area.draw(&Rectangle::new([(left, top), (right, bottom)], FRAME_COLOUR.stroke_width(1)))?;

    let column_x = |c: usize| left + 8 + c as i32 * LEGEND_SAMPLE;
    let caption_style = TextStyle::from((FONT_FAMILY, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    for (c, caption) in columns.iter().enumerate() {
        let centre = (column_x(c) + (LEGEND_SAMPLE - 10) / 2, top + 4 + LEGEND_ROW / 2);
        area.draw(&Text::new(*caption, centre, caption_style.clone()))?;
    }

    let label_style = TextStyle::from((FONT_FAMILY, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in rows.iter().enumerate() {
        let y = top + 4 + header + LEGEND_ROW / 2 + r as i32 * LEGEND_ROW;
        for (c, sample) in row.samples.iter().enumerate() {
            let line = [(column_x(c), y), (column_x(c) + LEGEND_SAMPLE - 10, y)];
            let style = sample.colour.stroke_width(2);
            if sample.dashed {
                area.draw(&DashedPathElement::new(line, 6, 4, style))?;
            } else {
                area.draw(&PathElement::new(line, style))?;
            }
        }
        let label_x = column_x(row.samples.len()) + 4;
        area.draw(&Text::new(row.label.as_str(), (label_x, y), label_style.clone()))?;
    }
    Ok(())
}

fn series_colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Blends `colour` towards white: 0 keeps it, 1 makes it white.
fn lighten(colour: RGBColor, whiteness: f64) -> RGBColor {
    let blend = |c: u8| (f64::from(c) + (255.0 - f64::from(c)) * whiteness).round() as u8;
    RGBColor(blend(colour.0), blend(colour.1), blend(colour.2))
}

fn is_positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Axis numbers without float noise: "0.05", "2", "1000".
fn format_tick(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A count with thousands separators, e.g. "120,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
