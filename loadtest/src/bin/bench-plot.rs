//! `bench-plot`: draws the benchmark report's picture, end-to-end latency
//! percentiles (p50, p99, p99.9) against delivered updates/s, from the
//! `--json` results of a series of `loadtest` runs (one file per feed rate,
//! in the order the rates were offered).
//!
//! ```text
//! bench-plot --out docs/latency-vs-rate.png step1.json step2.json ...
//! ```
//!
//! Text needs a TrueType font: plotters draws it through `ab_glyph`, so no
//! system font library is linked, but a font file is read at run time
//! (`--font`, default DejaVu Sans). Without one the chart is drawn with
//! lines and points only, and the caller describes the axes in prose.

use anyhow::{bail, Context, Result};
use clap::Parser;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Font tried when `--font` is not given.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "bench-plot",
    about = "Latency percentiles vs delivered updates/s from loadtest --json files"
)]
struct Args {
    /// PNG file to write.
    #[arg(long)]
    out: PathBuf,
    /// TrueType font for the labels (none found: a chart without text).
    #[arg(long, default_value = DEFAULT_FONT)]
    font: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "End-to-end latency vs delivered updates/s")]
    title: String,
    /// loadtest --json result files, one point each.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One run: delivered rate and end-to-end percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Point {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// One curve: its legend name, colour and which percentile it draws.
type Series = (&'static str, RGBColor, fn(&Point) -> f64);

fn read_point(path: &Path) -> Result<Point> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let fast = &v["fast"];
    let e2e = &fast["latency"]["end_to_end"];
    let num = |x: &Value, what: &str| x.as_f64().with_context(|| format!("{}: no {what}", path.display()));
    Ok(Point {
        rate: num(&fast["updates_per_sec"], "fast.updates_per_sec")?,
        p50: num(&e2e["p50_us"], "p50")? / 1000.0,
        p99: num(&e2e["p99_us"], "p99")? / 1000.0,
        p999: num(&e2e["p999_us"], "p99.9")? / 1000.0,
    })
}

/// Registers the font under plotters' "sans-serif" family; false if it
/// cannot be read or parsed.
fn load_font(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters keeps registered fonts for the whole process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else {
        format!("{:.0}k", r / 1e3)
    }
}

fn draw(args: &Args, points: &[Point], text: bool) -> Result<()> {
    let root = BitMapBackend::new(&args.out, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rate = points.iter().map(|p| p.rate).fold(0.0, f64::max) * 1.08;
    let lat = points.iter().flat_map(|p| [p.p50, p.p99, p.p999]);
    let lo = lat.clone().fold(f64::INFINITY, f64::min).max(0.001) / 1.5;
    let hi = lat.fold(0.0, f64::max) * 1.5;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder.caption(&args.title, ("sans-serif", 24)).x_label_area_size(50).y_label_area_size(70);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_rate, (lo..hi).log_scale())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("delivered updates/s (all connections)")
            .y_desc("end-to-end latency (ms, log scale)")
            .x_label_formatter(&|x| human_rate(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .label_style(("sans-serif", 15));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let series: [Series; 3] = [
        ("p50", RGBColor(31, 119, 180), |p| p.p50),
        ("p99", RGBColor(255, 127, 14), |p| p.p99),
        ("p99.9", RGBColor(214, 39, 40), |p| p.p999),
    ];
    for (name, color, get) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.rate, get(p))).collect();
        let drawn = chart.draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?;
        if text {
            drawn
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.draw_series(line.into_iter().map(|xy| Circle::new(xy, 4, color.filled())))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    root.present().with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let points = args.files.iter().map(|f| read_point(f)).collect::<Result<Vec<_>>>()?;
    if points.is_empty() {
        bail!("no points");
    }
    // Points stay in file (offered load) order: past saturation the
    // delivered rate can fall again, and the line should show that turn.
    let text = load_font(&args.font);
    if !text {
        eprintln!("bench-plot: no usable font at {}; drawing without text", args.font.display());
    }
    draw(&args, &points, text)?;
    println!("{} ({} points, labels: {})", args.out.display(), points.len(), if text { "yes" } else { "no" });
    Ok(())
}
