//! What every PNG chart of xtask needs: the font and plotters' errors as anyhow errors.

use std::{fs, path::Path};

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Where the plotting font comes from (Debian's fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font as "sans-serif"; `false` (with a note on stderr) when it is missing,
/// in which case callers skip their charts (the numbers are printed anyway).
pub fn register_sans_serif() -> Result<bool> {
    let Ok(font) = fs::read(FONT) else {
        eprintln!("note: {FONT} not found (apt-get install fonts-dejavu-core): PNG charts skipped");
        return Ok(false);
    };
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    Ok(true)
}

/// A plotters error as an anyhow error.
pub fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

/// One named line of a chart: (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// A line chart against the number of servers, one line per series with a legend (the shape
/// of the paper's figures): `bench hashing` and `bench paper` draw with it.
pub fn servers_chart(path: &Path, caption: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let max_n = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points.map(|p| p.1).fold(0.0, f64::max) * 1.1 + 1e-9;
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_n + 1.0, 0f64..max_y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("servers (N)")
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
