//! `Trainer::metrics`: Keras-style metrics beyond accuracy (macro F1, precision and recall,
//! top-k accuracy, MAE, MSE, RMSE) on the training batches and on validation, checked against
//! counts of our own from the model's outputs; early stopping on a metric; the history's
//! columns; metrics that do not fit the model; and `predict` with the confusion matrix of its
//! classes.

use crate::common::params;
use crate::common::{Tagged, Tagger};
use kiln::data::{self, BatchSource, Dataset, TensorDataset};
use kiln::ndarray::{Array2, ArrayViewD};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{
    self, batch_targets, evaluate, evaluate_batches_metrics, evaluate_metrics, EarlyStopping,
    Metric, Mode, Trainer, Verdict,
};
use kiln::{Adam, Sgd, Supervised, Trainable};
use std::path::PathBuf;

kiln::model! {
    /// A small perceptron for the 8×8 digits, flattened to 64 features.
    pub struct DigitsNet {
        input x: [B, 64];
        target y: [B] classes 10;
        let h = relu(linear(x, 32));
        let logits = linear(h, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

kiln::model! {
    /// A small regression: four features, two values.
    pub struct TwoValues {
        input x: [B, 4];
        target t: [B, 2];
        let h = tanh(linear(x, 16));
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, t);
    }
}

fn digits_split() -> (TensorDataset<f32>, TensorDataset<f32>) {
    crate::common::digits_split(11)
}

fn digits_net(seed: u64) -> DigitsNet<f32> {
    DigitsNet::new(&mut StdRng::seed_from_u64(seed))
}

/// The index of the largest score, the first on ties.
fn argmax(row: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in row.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// A confusion matrix, `[label][predicted]`.
struct Confusion(Vec<Vec<u64>>);

impl Confusion {
    fn new(classes: usize) -> Self {
        Confusion(vec![vec![0; classes]; classes])
    }

    fn add(&mut self, label: usize, predicted: usize) {
        self.0[label][predicted] += 1;
    }

    /// Scikit-learn's `f1_score(average="macro", labels=range(C), zero_division=0)`, from
    /// precision and recall per class.
    fn macro_f1(&self) -> f64 {
        let classes = self.0.len();
        let mut total = 0.0;
        for c in 0..classes {
            let tp = self.0[c][c] as f64;
            let support: u64 = self.0[c].iter().sum();
            let predicted: u64 = self.0.iter().map(|row| row[c]).sum();
            let precision = if predicted == 0 {
                0.0
            } else {
                tp / predicted as f64
            };
            let recall = if support == 0 {
                0.0
            } else {
                tp / support as f64
            };
            if precision + recall > 0.0 {
                total += 2.0 * precision * recall / (precision + recall);
            }
        }
        total / classes as f64
    }

    fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.0.len()).map(|c| self.0[c][c]).sum();
        let all: u64 = self.0.iter().flatten().sum();
        right as f64 / all as f64
    }
}

/// The confusion matrix and the top-3 hits of `model` on `data`, from its forward output in
/// batches of 100.
fn digits_confusion(model: &DigitsNet<f32>, data: &TensorDataset<f32>) -> (Confusion, usize) {
    let mut confusion = Confusion::new(10);
    let mut top3 = 0;
    let mut ws = <DigitsNet<f32> as Supervised<f32>>::Workspace::default();
    let mut batch = data::Batch::new();
    let loader = data::DataLoader::new(data, 100);
    let mut batches = loader.epoch_batches(0);
    while batches.next_into(&mut batch) {
        model
            .eval_batch(batch.x.view(), batch_targets(&batch), &mut ws)
            .expect("evaluates");
        let output = <DigitsNet<f32> as Supervised<f32>>::last_output(&ws).expect("ran");
        let labels = batch.labels.as_ref().expect("digits have labels");
        for (row, &label) in output.outer_iter().zip(labels.iter()) {
            confusion.add(label, argmax(row.iter().copied()));
            let above = row.iter().filter(|&&v| v > row[label]).count();
            top3 += usize::from(above < 3);
        }
    }
    (confusion, top3)
}

#[test]
fn fit_reports_macro_f1_and_top_k_that_recount_from_the_outputs() {
    let (train, val) = digits_split();
    let mut model = digits_net(0);
    let history = Trainer::new(10, 32)
        .shuffle_seed(2)
        .validation(&val)
        .eval_batch_size(128)
        .metrics([
            Metric::MacroF1,
            Metric::TopKAccuracy(3),
            Metric::Accuracy,
            Metric::MacroF1,
        ])
        .progress(false)
        .fit(&mut model, &mut Adam::new(3e-3), &train)
        .expect("training runs");
    println!("{history}");
    let last = history.last().expect("epochs ran");

    // The trainer's figures, against a confusion matrix of our own from the model's output.
    let val_f1 = last.metric("val_f1").expect("asked for");
    let (confusion, top3) = digits_confusion(&model, &val);
    let recount = confusion.macro_f1();
    println!("val_f1 {val_f1:.4} (recounted {recount:.4})");
    assert!(
        (val_f1 - recount).abs() < 1e-12,
        "{val_f1} against {recount}"
    );
    let val_top3 = last.metric("val_top_3_accuracy").expect("asked for");
    assert_eq!(val_top3, top3 as f64 / val.len() as f64);
    let val_accuracy = last.val_accuracy.expect("labels");
    assert!((val_accuracy - confusion.accuracy()).abs() < 1e-12);
    // 0.975 when written; ten balanced classes: F1 follows accuracy closely.
    assert!(val_f1 >= 0.94, "validation F1 {val_f1}\n{history}");
    for r in &history.epochs {
        for (top, acc) in [
            (r.metric("top_3_accuracy"), r.train_accuracy),
            (r.metric("val_top_3_accuracy"), r.val_accuracy),
        ] {
            let (top, acc) = (top.expect("top 3"), acc.expect("accuracy"));
            assert!(top >= acc, "top-3 {top} below accuracy {acc}");
        }
        assert!(r.metric("f1").is_some_and(|f1| f1 > 0.0 && f1 <= 1.0));
    }
    assert!(history.epochs[0].metric("f1") < last.metric("f1"));

    // Accuracy, asked for, is reported once: as the accuracy columns, not as a metric.
    assert!(last.train_metrics.get("accuracy").is_none());
    assert_eq!(
        last.train_metrics.names().collect::<Vec<_>>(),
        ["f1", "top_3_accuracy"]
    );
    assert_eq!(
        last.val_metrics.names().collect::<Vec<_>>(),
        ["val_f1", "val_top_3_accuracy"]
    );
    let csv = history.to_csv();
    let header = csv.lines().next().expect("a header");
    assert_eq!(
        header,
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second,\
         f1,top_3_accuracy,val_f1,val_top_3_accuracy"
    );
    let row: Vec<&str> = csv.lines().last().expect("rows").split(',').collect();
    assert_eq!(row.len(), 12);
    assert_eq!(row[10].parse::<f64>().expect("a number"), val_f1);
    let table = history.to_string();
    assert!(
        table.contains("val_f1") && table.contains("val_top_3_accuracy"),
        "{table}"
    );

    // The plot: loss, accuracy, F1 and top-3 accuracy, three panels to a row.
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("train_metrics-curves.png");
    history.plot(&path).expect("the plot is written");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&path).expect("the plot exists"),
    ));
    let info = decoder
        .read_info()
        .expect("a valid PNG header")
        .info()
        .clone();
    assert_eq!((info.width, info.height), (3 * 560, 2 * 420));

    // `evaluate_metrics` over the same data gives the trainer's validation figures.
    let evaluated = evaluate_metrics(
        &model,
        &val,
        64,
        &[Metric::MacroF1, Metric::TopKAccuracy(3), Metric::Accuracy],
    )
    .expect("evaluates");
    assert_eq!(
        evaluated.names().collect::<Vec<_>>(),
        ["loss", "f1", "top_3_accuracy", "accuracy"]
    );
    assert_eq!(evaluated.get("f1"), Some(val_f1));
    assert_eq!(evaluated.get("top_3_accuracy"), Some(val_top3));
    assert_eq!(evaluated.get("accuracy"), Some(val_accuracy));
    let plain = evaluate(&model, &val, 64).expect("evaluates");
    assert_eq!(evaluated.get("loss"), Some(plain.loss));

    // `predict` (in batches of 64, the last one short), `classes` and `confusion_matrix` give
    // the matrix counted above.
    let logits = train::predict(&model, &val, 64).expect("predicts");
    assert_eq!(logits.shape(), [val.len(), 10]);
    let labels = val.labels().expect("labels").to_vec();
    let predicted = train::classes(logits.view()).expect("classes");
    let matrix = train::confusion_matrix(&labels, &predicted, 10).expect("a confusion matrix");
    for (t, row) in confusion.0.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            assert_eq!(matrix[[t, p]] as u64, count, "[{t}, {p}]");
        }
    }
}

#[test]
fn early_stopping_monitors_val_f1_upwards_and_restores_its_best_epoch() {
    let (train, val) = digits_split();
    // A learning rate too high for the net: validation F1 peaks early and then wobbles, so
    // a rule that wants 0.5% more F1 each epoch soon stops.
    let trainer = |epochs| {
        Trainer::new(epochs, 64)
            .shuffle_seed(4)
            .validation(&val)
            .metrics([Metric::MacroF1])
            .progress(false)
    };
    let mut stopped = digits_net(5);
    let history = trainer(30)
        .early_stopping_on("val_f1", Mode::Max, 1, 0.005)
        .fit(&mut stopped, &mut Adam::new(2e-2), &train)
        .expect("training runs");
    println!("{history}");
    let f1: Vec<f64> = history
        .epochs
        .iter()
        .map(|r| r.metric("val_f1").expect("asked for"))
        .collect();

    // Replaying the rule on the recorded F1 scores stops where the trainer stopped.
    let mut rule = EarlyStopping::new(1, 0.005).monitor("val_f1", Mode::Max);
    let stop_epoch = f1
        .iter()
        .enumerate()
        .position(|(epoch, &v)| rule.update(epoch, v) == Verdict::Stop)
        .expect("the rule stops on these scores");
    assert_eq!(history.len(), stop_epoch + 1, "{history}");
    assert_eq!(history.stopped_early, Some(stop_epoch));
    assert!(history.len() < 30, "{history}");
    let (best, best_f1) = rule.best().expect("a best epoch");
    // In Mode::Max the best epoch has the highest F1 up to it. A later epoch may score a
    // little higher, by less than min_delta: `best_epoch_by` (no min_delta) finds that one.
    assert!(f1[..=best].iter().all(|&v| v <= best_f1), "{f1:?}");
    let highest = history.best_epoch_by("val_f1", Mode::Max).expect("scores");
    assert!(
        f1[highest] >= best_f1 && f1[highest] < best_f1 + 0.005,
        "{f1:?}"
    );
    // 0.933 when written.
    assert!(best_f1 > 0.9, "{f1:?}");

    // The model holds the best epoch's weights: those of a run of best + 1 epochs.
    let mut reference = digits_net(5);
    trainer(best + 1)
        .fit(&mut reference, &mut Adam::new(2e-2), &train)
        .expect("training runs");
    assert_eq!(params(&stopped), params(&reference));
}

#[test]
fn monitors_and_metrics_that_do_not_fit_are_refused_before_training() {
    let (train, val) = digits_split();
    let mut model = digits_net(0);
    let before = params(&model);
    let trainer = || Trainer::<f32>::new(1, 32).progress(false);

    let err = trainer()
        .validation(&val)
        .metrics([Metric::MacroF1])
        .early_stopping_on("val_f2", Mode::Max, 2, 0.0)
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect_err("no such figure");
    assert_eq!(
        err.to_string(),
        "Trainer: early stopping monitors `val_f2`, which this run does not compute (a \
         metric's figures need it in Trainer::metrics); it computes loss, accuracy, f1, \
         val_loss, val_accuracy, val_f1"
    );
    let err = trainer()
        .metrics([Metric::MacroF1])
        .early_stopping_on("val_f1", Mode::Max, 2, 0.0)
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect_err("no validation data");
    assert_eq!(
        err.to_string(),
        "Trainer: early stopping monitors `val_f1`, which this run does not compute \
         (validation figures need validation data); it computes loss, accuracy, f1"
    );
    let err = trainer()
        .metrics([Metric::MeanAbsoluteError, Metric::RootMeanSquaredError])
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect_err("errors of class labels");
    assert_eq!(
        err.to_string(),
        "metrics: `mae` needs float targets with as many elements as the model's first \
         output, but the model's target is class labels of shape [1] and its first output \
         has shape [1, 10]"
    );
    let err = trainer()
        .metrics([Metric::TopKAccuracy(0)])
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect_err("k = 0");
    assert!(err.to_string().contains("TopKAccuracy(0)"), "{err}");
    assert_eq!(params(&model), before, "nothing was trained");

    // A classification metric on a regression model.
    let data = regression_data(32, 1);
    let mut regressor = TwoValues::<f64>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(1, 8)
        .progress(false)
        .metrics([Metric::MeanAbsoluteError, Metric::MacroF1])
        .fit(&mut regressor, &mut Sgd::new(0.1), &data)
        .expect_err("F1 of float values");
    assert_eq!(
        err.to_string(),
        "metrics: `f1` needs class scores in the model's first output and a class-label \
         target, but the model's target is float values of shape [1, 2] and its first output \
         has shape [1, 2]"
    );
    let err = Trainer::new(1, 8)
        .progress(false)
        .metrics([Metric::TopKAccuracy(2)])
        .fit(&mut regressor, &mut Sgd::new(0.1), &data)
        .expect_err("top-k of float values");
    assert_eq!(
        err.to_string(),
        "metrics: `top_2_accuracy` needs class scores in the model's first output and a \
         class-label target, but the model's target is float values of shape [1, 2] and its \
         first output has shape [1, 2]"
    );

    // A regression metric on a tagger, through `fit_batches`.
    let tagged = tagged(16, 5);
    let mut tagger = Tagger::<f32>::new(&mut StdRng::seed_from_u64(0));
    let before = params(&tagger);
    let err = Trainer::new(1, 8)
        .progress(false)
        .metrics([Metric::MeanSquaredError])
        .fit_batches(&mut tagger, &mut Sgd::new(0.1), &tagged)
        .expect_err("MSE of labels");
    assert_eq!(
        err.to_string(),
        "metrics: `mse` needs float targets with as many elements as the model's first \
         output, but the model's target is class labels of shape [1, 8] and its first output \
         has shape [1, 8, 3]"
    );
    assert_eq!(params(&tagger), before);
}

/// `n` sequences; the tag of a token is its id modulo 3, except that one token in `noisy`
/// (id 5) is tagged 0 or 1 by position, which a per-token model cannot learn exactly.
fn tagged(n: usize, seed: usize) -> Tagged {
    let t = 8;
    let tokens = Array2::from_shape_fn((n, t), |(i, j)| (i * 7 + j * 3 + seed) % 20);
    let tags = Array2::from_shape_fn((n, t), |(i, j)| {
        if j >= 2 + i % 6 {
            9
        } else if tokens[[i, j]] == 5 {
            j % 2
        } else {
            tokens[[i, j]] % 3
        }
    });
    Tagged { tokens, tags }
}

/// The confusion matrix of `model` on every position of `data` but the padding.
fn tag_confusion(model: &Tagger<f32>, data: &Tagged) -> Confusion {
    let mut batch = Vec::new();
    let indices: Vec<usize> = (0..BatchSource::<f32>::len(data)).collect();
    data.fill(&indices, &mut batch).expect("fills");
    let mut ws = Default::default();
    model.eval_step(&batch, &mut ws).expect("evaluates");
    let output: ArrayViewD<'_, f32> =
        <Tagger<f32> as Trainable<f32>>::last_output(&ws).expect("ran");
    let mut confusion = Confusion::new(3);
    for ((i, j), &tag) in data.tags.indexed_iter() {
        if tag != 9 {
            let scores = (0..3).map(|c| output[[i, j, c]]);
            confusion.add(tag, argmax(scores));
        }
    }
    confusion
}

#[test]
fn fit_batches_counts_per_position_metrics_without_the_padding() {
    let (train, val) = (tagged(64, 0), tagged(32, 3));
    let mut model = Tagger::<f32>::new(&mut StdRng::seed_from_u64(1));
    let history = Trainer::new(12, 16)
        .validation_batches(&val)
        .metrics([
            Metric::MacroF1,
            Metric::MacroPrecision,
            Metric::MacroRecall,
            Metric::TopKAccuracy(2),
        ])
        .progress(false)
        .fit_batches(&mut model, &mut Adam::new(0.05), &train)
        .expect("trains");
    println!("{history}");
    let last = history.last().expect("epochs ran");
    let confusion = tag_confusion(&model, &val);
    let val_f1 = last.metric("val_f1").expect("asked for");
    assert!(
        (val_f1 - confusion.macro_f1()).abs() < 1e-12,
        "{val_f1} against {}",
        confusion.macro_f1()
    );
    assert_eq!(last.val_accuracy, Some(confusion.accuracy()));
    // Token 5's tag depends on its position, so no per-token model is always right; every
    // other token is learnable. 0.994 when written.
    assert!(val_f1 > 0.85 && val_f1 < 1.0, "{val_f1}\n{history}");
    let top2 = last.metric("val_top_2_accuracy").expect("asked for");
    assert!(top2 >= last.val_accuracy.expect("labels"), "{history}");
    // In batches of the trainer's size: the loss is a mean of per-batch means.
    let evaluated = evaluate_batches_metrics(
        &model,
        &val,
        16,
        &[Metric::MacroF1, Metric::MacroPrecision, Metric::MacroRecall],
    )
    .expect("evaluates");
    assert_eq!(evaluated.get("f1"), Some(val_f1));
    assert_eq!(evaluated.get("precision"), last.metric("val_precision"));
    assert_eq!(evaluated.get("recall"), last.metric("val_recall"));
    assert_eq!(evaluated.get("loss"), last.val_loss);

    // `predict_batches` stacks the per-position scores `[n, T, 3]` of batches of 10; the
    // confusion matrix without the padding label is the one counted above.
    let scores = train::predict_batches(&model, &val, 10).expect("predicts");
    assert_eq!(scores.shape(), [32, val.tags.ncols(), 3]);
    let predicted = train::classes(scores.view()).expect("classes");
    let tags: Vec<usize> = val.tags.iter().copied().collect();
    let matrix =
        train::confusion_matrix_ignoring(&tags, &predicted, 3, Some(9)).expect("a confusion");
    for (t, row) in confusion.0.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            assert_eq!(matrix[[t, p]] as u64, count, "[{t}, {p}]");
        }
    }
}

fn regression_data(n: usize, seed: u64) -> TensorDataset<f64> {
    use kiln::rand::RngExt;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Array2::from_shape_simple_fn((n, 4), || rng.random_range(-1.0..1.0));
    let t = Array2::from_shape_fn((n, 2), |(i, j)| {
        let row = x.row(i);
        if j == 0 {
            3.0 * row[0] - row[1] + 0.5
        } else {
            row[2] * row[3] * 4.0
        }
    });
    TensorDataset::with_values(x, t).expect("same sample count")
}

#[test]
fn regression_metrics_follow_the_outputs_and_rmse_is_the_root_of_mse() {
    let (train, val) = (regression_data(200, 1), regression_data(50, 2));
    let mut model = TwoValues::<f64>::new(&mut StdRng::seed_from_u64(3));
    let history = Trainer::new(12, 16)
        .validation(&val)
        .metrics([
            Metric::MeanAbsoluteError,
            Metric::MeanSquaredError,
            Metric::RootMeanSquaredError,
        ])
        .progress(false)
        .fit(&mut model, &mut Adam::new(3e-2), &train)
        .expect("trains");
    println!("{history}");
    for r in &history.epochs {
        for prefix in ["", "val_"] {
            let mse = r.metric(&format!("{prefix}mse")).expect("asked for");
            let rmse = r.metric(&format!("{prefix}rmse")).expect("asked for");
            assert_eq!(rmse, mse.sqrt());
        }
        // The loss is the mean squared error: the same figure, summed in another order.
        let (val_mse, val_loss) = (r.metric("val_mse"), r.val_loss);
        let (val_mse, val_loss) = (val_mse.expect("mse"), val_loss.expect("validation"));
        assert!((val_mse - val_loss).abs() <= 1e-12 * val_loss, "{r:?}");
        assert!(r.train_accuracy.is_none());
    }
    let last = history.last().expect("epochs ran");
    // Mean absolute error of our own, over every value of the validation set.
    let mut ws = <TwoValues<f64> as Supervised<f64>>::Workspace::default();
    let batch = {
        let mut b = data::Batch::new();
        let loader = data::DataLoader::new(&val, val.len());
        assert!(loader.epoch_batches(0).next_into(&mut b));
        b
    };
    model
        .eval_batch(batch.x.view(), batch_targets(&batch), &mut ws)
        .expect("evaluates");
    let output = <TwoValues<f64> as Supervised<f64>>::last_output(&ws).expect("ran");
    let targets = batch.values.as_ref().expect("float targets");
    let mae = output
        .iter()
        .zip(targets.iter())
        .map(|(o, t)| (o - t).abs())
        .sum::<f64>()
        / output.len() as f64;
    let val_mae = last.metric("val_mae").expect("asked for");
    assert!((val_mae - mae).abs() < 1e-12, "{val_mae} against {mae}");
    // The targets' spread is about 2; the net learns them to a fraction of it (0.14 when
    // written).
    assert!(val_mae < 0.25, "{history}");
    assert!(last.metric("mae") < history.epochs[0].metric("mae"));
    let header = history.to_csv();
    assert!(
        header.lines().next().is_some_and(
            |h| h.ends_with(",samples_per_second,mae,mse,rmse,val_mae,val_mse,val_rmse")
        ),
        "{header}"
    );
}

/// A checkpoint keeps the metrics of the epochs before it and the early-stopping rule on a
/// metric: a resumed run's history is that of an uninterrupted one.
#[test]
fn a_resumed_run_keeps_its_metrics_and_its_monitor() {
    let (train, val) = digits_split();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("metrics-resume");
    let _ = std::fs::remove_dir_all(&dir);
    let trainer = |epochs| {
        Trainer::new(epochs, 64)
            .shuffle_seed(8)
            .validation(&val)
            .metrics([Metric::MacroF1, Metric::TopKAccuracy(2)])
            .early_stopping_on("val_f1", Mode::Max, 5, 0.0)
            .progress(false)
    };
    let mut straight = digits_net(6);
    let whole = trainer(4)
        .fit(&mut straight, &mut Adam::new(3e-3), &train)
        .expect("four epochs");

    let mut first = digits_net(6);
    trainer(2)
        .checkpoints(&dir)
        .fit(&mut first, &mut Adam::new(3e-3), &train)
        .expect("two epochs");
    let mut resumed = digits_net(99);
    let history = trainer(4)
        .checkpoints(&dir)
        .resume_from(&dir)
        .fit(&mut resumed, &mut Adam::new(3e-3), &train)
        .expect("resumes for two more");
    let figures = |h: &kiln::train::History| -> Vec<(String, f64)> {
        h.epochs
            .iter()
            .flat_map(|r| r.train_metrics.iter().chain(r.val_metrics.iter()))
            .map(|(name, v)| (name.to_string(), v))
            .collect()
    };
    assert_eq!(figures(&history), figures(&whole));
    assert_eq!(figures(&history).len(), 4 * 4);
    assert_eq!(params(&resumed), params(&straight));
    assert_eq!(
        history.best_epoch_by("val_f1", Mode::Max),
        whole.best_epoch_by("val_f1", Mode::Max)
    );
}
