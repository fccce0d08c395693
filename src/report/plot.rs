//! The PNG plot of an incident's triggering metric: the samples from `--context` before to
//! after it, its thresholds as horizontal lines and the firing span shaded. Drawn with
//! `plotters` into a bitmap (text through `ab_glyph`, which needs a TrueType font file
//! registered at run time: no system font stack is linked), encoded with `png`.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::error::ReportError;

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 360;
/// The metric's line; tests look for this colour in a rendered report.
pub const LINE: RGBColor = RGBColor(31, 119, 180);
const WARNING: RGBColor = RGBColor(255, 127, 14);
const CRITICAL: RGBColor = RGBColor(214, 39, 40);
const SPAN: RGBColor = RGBColor(214, 39, 40);

/// Where Debian (fonts-dejavu-core) and other distributions put a sans font.
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the plots' font once per process: `SITEWATCH_REPORT_FONT`, else the first
/// candidate found.
pub fn ensure_font() -> Result<(), ReportError> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_none() {
        register()?;
        let _ = DONE.set(());
    }
    Ok(())
}

fn register() -> Result<(), ReportError> {
    let env = std::env::var("SITEWATCH_REPORT_FONT").ok();
    let candidates: Vec<String> = env
        .iter()
        .cloned()
        .chain(FONT_CANDIDATES.iter().map(|s| s.to_string()))
        .collect();
    let Some((path, bytes)) = candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
    else {
        return Err(ReportError::NoFont {
            tried: candidates.join(", "),
        });
    };
    // plotters keeps the font for the process's life; it is read once.
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| ReportError::BadFont { path })
}

/// (severity, value) of a threshold line.
pub type Threshold = (String, f64);

/// Splits `thresholds` into those on the metric's scale and the others: a rule on a rate of
/// change (or another derived value) has thresholds in other units, and a line at 3 under
/// readings of 24..30 would only squash the plot. A level's threshold lies within or near
/// the readings, as the readings crossed it; "near" is one range of the readings away.
pub fn on_scale(
    points: &[(i64, f64)],
    thresholds: &[Threshold],
) -> (Vec<Threshold>, Vec<Threshold>) {
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    if !lo.is_finite() {
        return (thresholds.to_vec(), Vec::new());
    }
    let reach = (hi - lo).max(hi.abs().max(lo.abs()) * 0.1).max(1.0);
    thresholds
        .iter()
        .cloned()
        .partition(|(_, t)| *t >= lo - reach && *t <= hi + reach)
}

pub struct PlotSpec<'a> {
    pub title: String,
    pub y_label: String,
    pub points: &'a [(i64, f64)],
    pub thresholds: &'a [Threshold],
    /// The shaded firing span.
    pub span: (i64, i64),
    /// The x range.
    pub window: (i64, i64),
    /// Axis labels: ns to local clock time.
    pub clock: &'a dyn Fn(i64) -> String,
}

/// The plot as PNG bytes.
pub fn render_png(spec: &PlotSpec<'_>) -> Result<Vec<u8>, String> {
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(spec, &mut rgb).map_err(|e| format!("drawing failed: {e}"))?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| format!("PNG encoding failed: {e}"))?;
        w.write_image_data(&rgb)
            .map_err(|e| format!("PNG encoding failed: {e}"))?;
    }
    Ok(out)
}

fn draw(spec: &PlotSpec<'_>, rgb: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let secs = |ns: i64| ns as f64 / 1e9;
    let (x0, mut x1) = (secs(spec.window.0), secs(spec.window.1));
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let ys = spec
        .points
        .iter()
        .map(|p| p.1)
        .chain(spec.thresholds.iter().map(|t| t.1));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !y0.is_finite() || !y1.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.1).max(0.5);
    let (y0, y1) = (y0 - pad, y1 + pad);

    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&spec.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let clock = |x: &f64| (spec.clock)((*x * 1e9) as i64);
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&clock)
        .y_desc(spec.y_label.as_str())
        .label_style(("sans-serif", 12))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let (s0, s1) = (secs(spec.span.0).max(x0), secs(spec.span.1).min(x1));
    if s1 > s0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(s0, y0), (s1, y1)],
                SPAN.mix(0.12).filled(),
            )))?
            .label("firing")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], SPAN.mix(0.2).filled()));
    }
    for (severity, t) in spec.thresholds {
        let colour = if severity == "critical" {
            CRITICAL
        } else {
            WARNING
        };
        chart
            .draw_series(LineSeries::new(
                [(x0, *t), (x1, *t)],
                colour.stroke_width(1),
            ))?
            .label(format!("{severity} threshold {t}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
    }
    chart
        .draw_series(LineSeries::new(
            spec.points.iter().map(|(t, v)| (secs(*t), *v)),
            LINE.stroke_width(2),
        ))?
        .label(spec.y_label.as_str())
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], LINE.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_off_the_metrics_scale_are_left_out() {
        let points = [(0, 24.1), (1, 30.0)];
        let t = |s: &str, v: f64| (s.to_string(), v);
        let (drawn, left) = on_scale(
            &points,
            &[
                t("warning", 27.0),
                t("warning", 3.0),
                t("critical", 32.0),
                t("critical", 5.0),
            ],
        );
        assert_eq!(drawn, vec![t("warning", 27.0), t("critical", 32.0)]);
        assert_eq!(left, vec![t("warning", 3.0), t("critical", 5.0)]);
        let (drawn, _) = on_scale(&[(0, 100.0), (1, 40.0)], &[t("warning", 50.0)]);
        assert_eq!(drawn.len(), 1);
        let (drawn, _) = on_scale(&[], &[t("warning", 50.0)]);
        assert_eq!(drawn.len(), 1);
    }

    #[test]
    fn a_plot_shows_the_line_thresholds_and_span() {
        ensure_font().expect("a font (fonts-dejavu-core)");
        let points: Vec<(i64, f64)> = (0..60)
            .map(|i| (i * 60_000_000_000, 20.0 + (i as f64 / 6.0).sin() * 8.0))
            .collect();
        let clock = |ns: i64| format!("{}", ns / 60_000_000_000);
        let png_bytes = render_png(&PlotSpec {
            title: "env t".into(),
            y_label: "t".into(),
            points: &points,
            thresholds: &[("warning".into(), 27.0), ("critical".into(), 32.0)],
            span: (600_000_000_000, 1_800_000_000_000),
            window: (0, 3_600_000_000_000),
            clock: &clock,
        })
        .unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let px = |c: RGBColor| {
            buf.chunks(3)
                .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                .count()
        };
        assert!(px(LINE) > 500, "line pixels: {}", px(LINE));
        assert!(px(WARNING) > 500 && px(CRITICAL) > 500);
    }
}
