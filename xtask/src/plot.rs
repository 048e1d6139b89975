//! What every PNG chart of xtask needs: the font and plotters' errors as anyhow errors.

use std::fs;

use anyhow::Result;
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
