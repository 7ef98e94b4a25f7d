//! The latency plot of `BENCHMARKS.md`: percentiles (log scale, ms) against offered load
//! (deliveries/s), one colour per target, solid p50 and dashed p99, drawn to a PNG with
//! plotters. Text needs a TrueType font: the first of a few usual system paths (Debian's
//! DejaVu, Liberation) or `LOADGEN_FONT`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Which target (picks the colour).
    pub target: usize,
    /// Dashed (p99) or solid (p50).
    pub dashed: bool,
    /// (offered deliveries/s, latency ms), by load.
    pub points: Vec<(f64, f64)>,
}

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const COLOURS: [RGBColor; 4] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Registers the first font found as plotters' `sans-serif`.
fn load_font() -> Result<(), String> {
    let candidates = std::env::var("LOADGEN_FONT")
        .ok()
        .into_iter()
        .chain(FONTS.iter().map(|s| (*s).to_owned()));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err("no TrueType font for the plot (install fonts-dejavu-core, or set LOADGEN_FONT)".into())
}

/// Draws `series` to the PNG at `path`.
pub fn draw(path: &Path, series: &[Series]) -> Result<(), String> {
    if series.is_empty() {
        return Err("nothing to plot".into());
    }
    load_font()?;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x_max = xs.fold(0.0f64, f64::max) * 1.05;
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (y_min, y_max) = (y_min.max(0.01) / 1.5, y_max * 1.5);

    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fan-out latency against offered load",
            ("sans-serif", 24).into_font(),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for s in series {
        let colour = COLOURS[s.target % COLOURS.len()];
        let style = colour.stroke_width(2);
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))
                .map_err(|e| err(&e))?
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(|e| err(&e))?
        };
        anno.label(s.name.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
        });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        if load_font().is_err() {
            eprintln!("no system font: the plot is not drawn here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        let s = vec![
            Series {
                name: "reference p50".into(),
                target: 0,
                dashed: false,
                points: vec![(6000.0, 0.15), (24000.0, 0.2)],
            },
            Series {
                name: "all p99".into(),
                target: 1,
                dashed: true,
                points: vec![(6000.0, 0.8), (24000.0, 3.0)],
            },
        ];
        draw(&path, &s).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(draw(&path, &[]).is_err());
    }
}
