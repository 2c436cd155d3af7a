//! Training curves as a PNG image: loss (training and validation), for class labels accuracy,
//! and one panel per [metric](super::Metric) of the run, three to a row, epochs from 1 on the
//! horizontal axis.
//!
//! Drawn with `plotters`' bitmap backend; text is rendered with a subset of DejaVu Sans
//! compiled into the library (13 KB, license in `src/train/fonts/LICENSE`), so plots look the
//! same everywhere and need no system fonts. The bitmap is encoded as PNG here, over `flate2`,
//! to avoid pulling in an image library.
//!
//! ```no_run
//! # fn demo(history: &kiln_runtime::train::History) -> kiln_runtime::Result<()> {
//! history.plot("training.png")?;
//! # Ok(())
//! # }
//! ```

use super::history::History;
use crate::{Error, Result};
use plotters::prelude::*;
use plotters::style::register_font;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans, printable ASCII and a few symbols (see `fonts/LICENSE`).
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
/// The family name the font is registered under in plotters' global font table; a name of our
/// own, so that a program registering its own "sans-serif" is not overridden.
const FAMILY: &str = "kiln-dejavu-sans";

/// One panel's size in pixels.
const PANEL: (u32, u32) = (560, 420);
/// Matplotlib's first two colors, which most readers know as "train" and "validation".
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

fn register() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the bundled font could not be parsed".to_string())
    }
}

/// The image of `history`'s curves: width, height and RGB8 pixels, row-major.
///
/// # Errors
/// A description of what failed in plotters (not expected with the bundled font).
pub(crate) fn render(history: &History) -> std::result::Result<(u32, u32, Vec<u8>), String> {
    register()?;
    let panels = panels(history);
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let (width, height) = (PANEL.0 * cols as u32, PANEL.1 * rows as u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, cols));
        for (area, p) in areas.iter().zip(&panels) {
            panel(
                area,
                &p.title,
                &p.y_name,
                history.len(),
                &p.train,
                &p.val,
                p.lower_is_better,
            )?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok((width, height, pixels))
}

/// One panel's curves: training and validation points `(epoch from 1, value)`.
struct Curves {
    title: String,
    y_name: String,
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    /// Where the legend goes: top right for a figure that falls as training goes (a loss),
    /// bottom right for one that rises.
    lower_is_better: bool,
}

/// The panels of `history`: the loss, the accuracy when there is one, then each metric in the
/// order the run computed them.
fn panels(history: &History) -> Vec<Curves> {
    let points = |get: &dyn Fn(&super::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .epochs
            .iter()
            .filter_map(|r| Some(((r.epoch + 1) as f64, get(r)?)))
            .collect()
    };
    let mut panels = vec![Curves {
        title: "Loss".into(),
        y_name: "loss".into(),
        train: points(&|r| Some(r.train_loss)),
        val: points(&|r| r.val_loss),
        lower_is_better: true,
    }];
    let accuracy = Curves {
        title: "Accuracy".into(),
        y_name: "accuracy".into(),
        train: points(&|r| r.train_accuracy),
        val: points(&|r| r.val_accuracy),
        lower_is_better: false,
    };
    if !accuracy.train.is_empty() || !accuracy.val.is_empty() {
        panels.push(accuracy);
    }
    let names: Vec<String> = history
        .epochs
        .first()
        .map(|r| r.train_metrics.names().map(str::to_string).collect())
        .unwrap_or_default();
    for name in names {
        let val_name = format!("val_{name}");
        panels.push(Curves {
            title: metric_title(&name),
            lower_is_better: matches!(name.as_str(), "mae" | "mse" | "rmse"),
            train: points(&|r| r.train_metrics.get(&name)),
            val: points(&|r| r.val_metrics.get(&val_name)),
            y_name: name,
        });
    }
    panels
}

/// A metric's panel title, as a reader says it: `f1` is "F1", `top_5_accuracy` "Top-5
/// accuracy", `mae` "MAE".
fn metric_title(name: &str) -> String {
    match name {
        "f1" => "F1 (macro)".into(),
        "precision" => "Precision (macro)".into(),
        "recall" => "Recall (macro)".into(),
        "mae" | "mse" | "rmse" => name.to_uppercase(),
        other => match other
            .strip_prefix("top_")
            .and_then(|k| k.strip_suffix("_accuracy"))
        {
            Some(k) => format!("Top-{k} accuracy"),
            None => other.to_string(),
        },
    }
}

/// The value range of the finite values, padded by 8% on each side (a flat curve gets a band
/// around its value), or `[0, 1]` when there is nothing to show.
fn value_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1e-3) * 0.1
    };
    lo - pad..hi + pad
}

/// The epoch axis: `1..n` with a little room at both ends (a single epoch gets `0.5..1.5`).
fn epoch_range(n: usize) -> Range<f64> {
    let n = n.max(1) as f64;
    let pad = ((n - 1.0) * 0.03).max(0.5);
    1.0 - pad..n + pad
}

/// Decimals for the value ticks: enough to tell apart ticks about `span / 8` apart (one for
/// a loss from 0 to 2, two for an accuracy from 0.6 to 1, three for ticks 0.001 apart).
fn decimals(span: f64) -> usize {
    let step = span / 8.0;
    if step.is_finite() && step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 8.0) as usize
    } else {
        2
    }
}

/// Formats an epoch tick: whole numbers only, since epochs are integers (a tick between two
/// epochs gets no label).
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_name: &str,
    epochs: usize,
    train: &[(f64, f64)],
    val: &[(f64, f64)],
    legend_top: bool,
) -> std::result::Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let y = value_range(train.iter().chain(val).map(|&(_, v)| v));
    let digits = decimals(y.end - y.start);
    let value_label = move |v: &f64| format!("{v:.digits$}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(epoch_range(epochs), y)
        .map_err(err)?;
    // At most one tick per epoch; plotters picks "nice" values, and `epoch_label` hides the
    // fractional ones.
    let x_ticks = epochs.clamp(2, 10);
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_name)
        .x_labels(x_ticks)
        .y_labels(8)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&value_label)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(err)?;
    let finite = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    for (points, color, label) in [(train, TRAIN, "train"), (val, VALIDATION, "validation")] {
        if points.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(finite(points), style).point_size(3))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(if legend_top {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        })
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Renders `history` and writes it to `path` as a PNG, atomically.
pub(crate) fn write_png(history: &History, path: &Path) -> Result<()> {
    let (width, height, pixels) = render(history)
        .map_err(|e| Error::file(path, format!("cannot draw the training plot: {e}")))?;
    crate::image::write_rgb_png(path, width, height, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_pad_and_survive_degenerate_input() {
        assert_eq!(value_range([f64::NAN].into_iter()), 0.0..1.0);
        let r = value_range([2.0, f64::INFINITY].into_iter());
        assert!(r.start < 2.0 && r.end > 2.0);
        let r = value_range([1.0, 3.0].into_iter());
        assert!((r.start - 0.84).abs() < 1e-12 && (r.end - 3.16).abs() < 1e-12);
        assert_eq!(epoch_range(1), 0.5..1.5);
        assert_eq!(epoch_label(&3.0), "3");
        assert_eq!(epoch_label(&2.5), "");
        assert_eq!(decimals(2.0), 1);
        assert_eq!(decimals(0.4), 2);
        assert_eq!(decimals(0.008), 3);
        assert_eq!(decimals(0.0), 2);
        assert_eq!(metric_title("top_5_accuracy"), "Top-5 accuracy");
        assert_eq!(metric_title("f1"), "F1 (macro)");
        assert_eq!(metric_title("rmse"), "RMSE");
    }
}
