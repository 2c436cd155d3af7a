//! Console output of the trainer: a progress bar per epoch on a terminal, one line per epoch
//! otherwise (logs, CI, or a build without feature `progress`), nothing when progress is off.

use super::history::EpochRecord;
use super::metric::MetricCounts;
#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the bar's message (running loss, accuracy, speed) is reformatted: formatting
/// allocates, and a faster refresh than the terminal's is wasted work.
const MESSAGE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    /// Progress bars (stdout is a terminal).
    Bars,
    /// One line per epoch (stdout is a file or a pipe).
    Lines,
}

/// The trainer's console output.
#[derive(Debug)]
pub(crate) struct Reporter {
    mode: Mode,
    epochs: usize,
}

impl Reporter {
    pub fn new(enabled: bool, epochs: usize) -> Self {
        let mode = match (enabled, std::io::stdout().is_terminal()) {
            (false, _) => Mode::Off,
            // Bars need indicatif (feature `progress`); without it a terminal gets lines too.
            (true, true) if cfg!(feature = "progress") => Mode::Bars,
            (true, _) => Mode::Lines,
        };
        Self { mode, epochs }
    }

    /// Prints a line (model summary, notices) unless output is off.
    pub fn println(&self, text: impl AsRef<str>) {
        if self.mode != Mode::Off {
            println!("{}", text.as_ref());
        }
    }

    pub fn start_epoch(&self, epoch: usize, batches: usize) -> EpochProgress {
        let prefix = format!(
            "Epoch {:>w$}/{}",
            epoch + 1,
            self.epochs,
            w = digits(self.epochs)
        );
        let bar = if self.mode == Mode::Bars {
            new_bar(batches, &prefix)
        } else {
            None
        };
        EpochProgress {
            mode: self.mode,
            prefix,
            bar,
            batches,
            last_message: None,
        }
    }
}

fn digits(n: usize) -> usize {
    n.max(1).ilog10() as usize + 1
}

/// A terminal progress bar for an epoch of `batches` batches.
#[cfg(feature = "progress")]
fn new_bar(batches: usize, prefix: &str) -> Option<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout());
    bar.set_style(style(
        "{prefix} [{bar:28.cyan/blue}] {pos:>4}/{len:4} {msg} eta {eta}",
    ));
    bar.set_prefix(prefix.to_string());
    Some(bar)
}

/// Without feature `progress` there are no bars (and `Mode::Bars` is never chosen).
#[cfg(not(feature = "progress"))]
fn new_bar(_batches: usize, _prefix: &str) -> Option<ProgressBar> {
    None
}

/// The stand-in for indicatif's bar without feature `progress`: uninhabited, so an
/// `Option<ProgressBar>` is always `None` and the bar code below compiles to nothing.
#[cfg(not(feature = "progress"))]
#[derive(Debug)]
enum ProgressBar {}

#[cfg(not(feature = "progress"))]
impl ProgressBar {
    fn set_position(&self, _position: u64) {
        match *self {}
    }

    fn set_message(&self, _message: String) {
        match *self {}
    }

    fn finish_with_summary(self, _summary: String) {
        match self {}
    }
}

#[cfg(feature = "progress")]
trait FinishWithSummary {
    fn finish_with_summary(self, summary: String);
}

#[cfg(feature = "progress")]
impl FinishWithSummary for ProgressBar {
    /// Ends the bar without its eta, keeping the epoch's summary as its message.
    fn finish_with_summary(self, summary: String) {
        self.set_style(style(
            "{prefix} [{bar:28.cyan/blue}] {pos:>4}/{len:4} {msg}",
        ));
        self.finish_with_message(summary);
    }
}

#[cfg(feature = "progress")]
fn style(template: &str) -> ProgressStyle {
    // The templates are constants that parse; the fallback only guards against an indicatif
    // change, so that a template problem can never fail a training run.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The running figures shown while an epoch trains.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Running<'a> {
    pub batches_done: usize,
    pub loss: f64,
    pub accuracy: Option<f64>,
    /// The metrics' counts so far; their figures are worked out only when the message is
    /// redrawn.
    pub metrics: &'a MetricCounts,
    pub samples_per_second: f64,
}

/// One epoch's bar (or line).
#[derive(Debug)]
pub(crate) struct EpochProgress {
    mode: Mode,
    prefix: String,
    bar: Option<ProgressBar>,
    batches: usize,
    last_message: Option<Instant>,
}

impl EpochProgress {
    /// Advances the bar after a batch; reformats the message at most every
    /// [`MESSAGE_INTERVAL`].
    pub fn batch(&mut self, running: Running<'_>) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position(running.batches_done as u64);
        let now = Instant::now();
        let due = self
            .last_message
            .is_none_or(|t| now.duration_since(t) >= MESSAGE_INTERVAL);
        if due || running.batches_done == self.batches {
            self.last_message = Some(now);
            let mut msg = format!("loss {:.4}", running.loss);
            if let Some(acc) = running.accuracy {
                msg.push_str(&format!("  acc {acc:.4}"));
            }
            running.metrics.write_running(&mut msg);
            msg.push_str(&format!("  {:.0} samples/s", running.samples_per_second));
            bar.set_message(msg);
        }
    }

    /// Ends the epoch with its summary: the finished bar keeps it, or it is printed as a line.
    pub fn finish(self, record: &EpochRecord) {
        let summary = summary_line(record);
        match (self.mode, self.bar) {
            (Mode::Off, _) => {}
            (_, Some(bar)) => bar.finish_with_summary(summary),
            (_, None) => println!(
                "{} {}/{} {summary}",
                self.prefix, self.batches, self.batches
            ),
        }
    }
}

/// `1.2s  loss 0.2345  accuracy 0.9312  f1 0.9290  val_loss 0.2500  val_accuracy 0.9200
/// val_f1 0.9188  lr 1.00e-3  12345 samples/s`, as Keras prints an epoch.
pub(crate) fn summary_line(r: &EpochRecord) -> String {
    let mut line = format!("{}  loss {:.4}", duration(r.seconds), r.train_loss);
    if let Some(acc) = r.train_accuracy {
        line.push_str(&format!("  accuracy {acc:.4}"));
    }
    if !r.train_metrics.is_empty() {
        line.push_str(&format!("  {}", r.train_metrics));
    }
    if let Some(loss) = r.val_loss {
        line.push_str(&format!("  val_loss {loss:.4}"));
    }
    if let Some(acc) = r.val_accuracy {
        line.push_str(&format!("  val_accuracy {acc:.4}"));
    }
    if !r.val_metrics.is_empty() {
        line.push_str(&format!("  {}", r.val_metrics));
    }
    line.push_str(&format!(
        "  lr {:.2e}  {:.0} samples/s",
        r.lr, r.samples_per_second
    ));
    line
}

/// `850ms` below a second, `12.3s` above.
fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::MetricValues;

    #[test]
    fn summary_line_shows_what_was_measured() {
        let mut r = EpochRecord {
            epoch: 2,
            train_loss: 0.23456,
            train_accuracy: Some(0.93126),
            val_loss: Some(0.25),
            val_accuracy: Some(0.92),
            train_metrics: MetricValues::new(),
            val_metrics: MetricValues::new(),
            lr: 0.001,
            seconds: 1.234,
            samples_per_second: 12345.4,
        };
        assert_eq!(
            summary_line(&r),
            "1.2s  loss 0.2346  accuracy 0.9313  val_loss 0.2500  val_accuracy 0.9200  lr \
             1.00e-3  12345 samples/s"
        );
        r.train_metrics.push("f1", 0.92904);
        r.val_metrics.push("val_f1", 0.91876);
        r.val_metrics.push("val_top_3_accuracy", 1.0);
        assert_eq!(
            summary_line(&r),
            "1.2s  loss 0.2346  accuracy 0.9313  f1 0.9290  val_loss 0.2500  val_accuracy \
             0.9200  val_f1 0.9188  val_top_3_accuracy 1.0000  lr 1.00e-3  12345 samples/s"
        );
        r.train_metrics = MetricValues::new();
        r.val_metrics = MetricValues::new();
        r.train_accuracy = None;
        r.val_accuracy = None;
        r.val_loss = None;
        assert_eq!(
            summary_line(&r),
            "1.2s  loss 0.2346  lr 1.00e-3  12345 samples/s"
        );
        r.seconds = 0.0456;
        assert!(summary_line(&r).starts_with("46ms  loss"));
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(0), 1);
    }
}
