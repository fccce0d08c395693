//! Renders docs/img/overview.png, the README's picture of what the Grafana dashboards show,
//! from data that sitewatch stored in InfluxDB (the demo: deploy/demo/publish.sh traffic).
//!
//! It draws what the "Facility overview" dashboard draws: rack inlet temperatures with the
//! warning/critical lines of deploy/rules/environment.toml and the rule events as markers, PDU
//! phase current against the 80 % line and the circuit rating (deploy/rules/power.toml), and
//! the leak sensor's state. Names as in docs/naming.md.
//!
//! ```text
//! cargo run --example render_overview -- --influx http://127.0.0.1:8086 \
//!     [--db sitewatch] [--out docs/img/overview.png] [--font DejaVuSans.ttf]
//! ```
//! docs/img/render-overview.sh runs the demo pipeline and then this.
//!
//! Text needs a TrueType font file (no system font stack is linked); the default is Debian's
//! fonts-dejavu-core location.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::FontStyle;

const W: u32 = 1280;
const H: u32 = 900;
/// deploy/rules/environment.toml rack_inlet_temperature, deploy/rules/power.toml
/// pdu_phase_current.
const TEMP_WARN: f64 = 27.0;
const TEMP_CRIT: f64 = 32.0;
const PHASE_WARN: f64 = 12.8;
const CIRCUIT_A: f64 = 16.0;
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    influx: String,
    db: String,
    out: String,
    font: String,
}

fn args() -> Res<Args> {
    let mut a = Args {
        influx: String::new(),
        db: "sitewatch".into(),
        out: "docs/img/overview.png".into(),
        font: DEFAULT_FONT.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--influx" => a.influx = v,
            "--db" => a.db = v,
            "--out" => a.out = v,
            "--font" => a.font = v,
            _ => return Err(format!("unknown argument {k}").into()),
        }
    }
    if a.influx.is_empty() {
        return Err(
            "usage: render_overview --influx http://HOST:PORT [--db sitewatch] \
                    [--out docs/img/overview.png] [--font FILE.ttf]"
                .into(),
        );
    }
    Ok(a)
}

/// InfluxQL over plain HTTP/1.0 (the example needs no async runtime); ms timestamps.
fn query(url: &str, db: &str, q: &str) -> Res<serde_json::Value> {
    let hostport = url
        .strip_prefix("http://")
        .ok_or("only http:// InfluxDB URLs are supported")?
        .trim_end_matches('/');
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET /query?db={}&epoch=ms&q={} HTTP/1.0\r\nHost: {hostport}\r\n\r\n",
        enc(db),
        enc(q)
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{q}: {head} {body}").into());
    }
    let v: serde_json::Value = serde_json::from_str(body)?;
    if let Some(e) = v["results"][0]["error"].as_str() {
        return Err(format!("{q}: {e}").into());
    }
    Ok(v)
}

/// Series label → (time ms, value) points; the label joins the group-by tag values.
fn series(
    v: &serde_json::Value,
    as_f64: impl Fn(&serde_json::Value) -> Option<f64>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out = BTreeMap::new();
    for s in v["results"][0]["series"].as_array().into_iter().flatten() {
        let label = s["tags"]
            .as_object()
            .map(|t| {
                t.values()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let pts: Vec<(f64, f64)> = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r[0].as_f64()?, as_f64(&r[1])?)))
            .collect();
        out.insert(label, pts);
    }
    out
}

struct Event {
    t: f64,
    severity: String,
    state: String,
    text: String,
}

fn hhmmss(ms: f64) -> String {
    let s = (ms / 1000.0).round() as i64;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// A minimal PNG encoder (RGB8, no filtering) so the example needs no image codec crate.
fn write_png(path: &str, rgb: &[u8], w: u32, h: u32) -> Res<()> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bit, RGB, deflate, no filter, no interlace
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for row in rgb.chunks(w as usize * 3) {
        z.write_all(&[0])?;
        z.write_all(row)?;
    }
    let idat = z.finish()?;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out)?;
    Ok(())
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(110, 110, 110);
const DARK_GREEN: RGBColor = RGBColor(0, 140, 0);

fn main() -> Res<()> {
    let a = args()?;
    let font = std::fs::read(&a.font).map_err(|e| {
        format!(
            "font {}: {e}. Pass --font FILE.ttf, or install it: sudo apt-get install -y fonts-dejavu-core",
            a.font
        )
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| format!("{} is not a TrueType/OpenType font", a.font))?;

    let window = "time > now() - 24h";
    let temps = series(
        &query(
            &a.influx,
            &a.db,
            &format!(
                r#"SELECT "temperature_c" FROM "environment" WHERE "rack" != '' AND {window} GROUP BY "rack""#
            ),
        )?,
        |v| v.as_f64(),
    );
    let amps = series(
        &query(
            &a.influx,
            &a.db,
            &format!(
                r#"SELECT "current_a" FROM "pdu_phase" WHERE {window} GROUP BY "device", "phase""#
            ),
        )?,
        |v| v.as_f64(),
    );
    let leak = series(
        &query(
            &a.influx,
            &a.db,
            &format!(r#"SELECT "leak" FROM "leak" WHERE {window} GROUP BY "device", "sensor""#),
        )?,
        |v| v.as_bool().map(|b| if b { 1.0 } else { 0.0 }),
    );
    let ev = query(
        &a.influx,
        &a.db,
        &format!(r#"SELECT "severity", "state", "rule", "message" FROM "events" WHERE {window}"#),
    )?;
    let events: Vec<Event> = ev["results"][0]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Event {
                t: r[0].as_f64()?,
                severity: r[1].as_str()?.to_string(),
                state: r[2].as_str()?.to_string(),
                text: format!("{} {}", r[3].as_str()?, r[2].as_str()?),
            })
        })
        .collect();
    if temps.is_empty() {
        return Err("no environment temperatures in InfluxDB: run the demo traffic first".into());
    }
    let all = temps.values().chain(amps.values()).flatten().map(|p| p.0);
    let (t0, t1) = all.fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let t1 = t1.max(t0 + 1000.0);

    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(44);
        title.draw(&Text::new(
            "sitewatch · Facility overview (demo data from InfluxDB, times UTC)",
            (16, 12),
            ("sans-serif", 22).into_font().color(&BLACK),
        ))?;
        let (top, rest) = body.split_vertically(430);
        let (mid, bottom) = rest.split_vertically(300);

        // Rack inlet temperature, thresholds and events.
        // Room below the lines for the legend.
        let (ymin, ymax) = (16.0, 34.0);
        let mut c = ChartBuilder::on(&top)
            .caption(
                "Rack inlet temperature (°C) with rule events",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(t0..t1, ymin..ymax)?;
        c.configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|t| hhmmss(*t))
            .y_desc("°C")
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (level, colour, name) in [
            (TEMP_WARN, ORANGE, "warning 27 °C"),
            (TEMP_CRIT, RED, "critical 32 °C"),
        ] {
            c.draw_series(DashedLineSeries::new(
                [(t0, level), (t1, level)],
                8,
                5,
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        }
        for (i, (rack, pts)) in temps.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
                .label(format!("rack {rack}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        for (i, e) in events.iter().enumerate() {
            let colour = match (e.severity.as_str(), e.state.as_str()) {
                (_, "resolved") => DARK_GREEN,
                ("critical", _) => RED,
                _ => ORANGE,
            };
            c.draw_series(DashedLineSeries::new(
                [(e.t, ymin), (e.t, ymax)],
                4,
                4,
                colour.stroke_width(1),
            ))?;
            let y = ymax - 0.6 - (i % 4) as f64 * 0.75;
            c.draw_series(std::iter::once(Text::new(
                format!("▲ {}", e.text),
                (e.t, y),
                ("sans-serif", 12).into_font().color(&colour.mix(0.95)),
            )))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(("sans-serif", 13))
            .draw()?;

        // PDU phase current against the 80 % line and the circuit rating.
        let mut c = ChartBuilder::on(&mid)
            .caption(
                "PDU phase current (A): 80 % line and 16 A circuit rating",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(t0..t1, 0.0..CIRCUIT_A + 1.0)?;
        c.configure_mesh()
            .x_labels(8)
            .x_label_formatter(&|t| hhmmss(*t))
            .y_desc("A")
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (level, colour, name) in [
            (PHASE_WARN, ORANGE, "warning 12.8 A"),
            (CIRCUIT_A, RED, "rating 16 A"),
        ] {
            c.draw_series(DashedLineSeries::new(
                [(t0, level), (t1, level)],
                8,
                5,
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        }
        for (i, (name, pts)) in amps.iter().enumerate() {
            let colour = PALETTE[(i + 3) % PALETTE.len()];
            c.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(("sans-serif", 13))
            .draw()?;

        // Leak sensors: wet periods as red bands.
        let names: Vec<&String> = leak.keys().collect();
        let rows = names.len().max(1) as f64;
        let mut c = ChartBuilder::on(&bottom)
            .caption("Leak sensors (red = water detected)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(t0..t1, 0.0..rows)?;
        c.configure_mesh()
            .x_labels(8)
            .y_labels(0)
            .x_label_formatter(&|t| hhmmss(*t))
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let pts = &leak[*name];
            let y0 = i as f64 + 0.15;
            let y1 = i as f64 + 0.85;
            for w in pts.windows(2) {
                let colour = if w[0].1 > 0.5 {
                    RED
                } else {
                    RGBColor(170, 220, 170)
                };
                c.draw_series(std::iter::once(Rectangle::new(
                    [(w[0].0, y0), (w[1].0, y1)],
                    colour.filled(),
                )))?;
            }
            c.draw_series(std::iter::once(Text::new(
                (*name).clone(),
                (t0 + (t1 - t0) * 0.01, y1 + 0.02),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))?;
        }
        root.present()?;
    }
    write_png(&a.out, &buf, W, H)?;
    eprintln!(
        "wrote {} ({} racks, {} PDU phases, {} leak sensors, {} events)",
        a.out,
        temps.len(),
        amps.len(),
        leak.len(),
        events.len()
    );
    Ok(())
}
