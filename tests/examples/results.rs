//! Each example's training function reaches its stated result.

use crate::{austen, digits, iris, linear_regression, segment, sentiment, translate};

#[test]
fn linear_regression_recovers_the_generating_parameters() {
    use linear_regression::{train, TRUE_BIAS, TRUE_WEIGHT};
    let (weight, bias) = train(false).expect("training runs");
    assert!((weight - TRUE_WEIGHT).abs() < 0.05, "weight {weight}");
    assert!((bias - TRUE_BIAS).abs() < 0.05, "bias {bias}");
}

#[test]
fn iris_reaches_90_percent_on_held_out_flowers() {
    let accuracy = iris::train(false).expect("training runs");
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
}

#[test]
fn digits_cnn_reaches_97_percent_on_held_out_digits() {
    let out = std::env::temp_dir().join(format!("kiln-digits-test-{}", std::process::id()));
    let outcome = digits::train_digits(25, &out, false).expect("training runs");
    assert!(
        outcome.test_accuracy >= 0.97,
        "test accuracy {}",
        outcome.test_accuracy
    );
    assert!(outcome.weights.exists() && outcome.plot.exists());
    let graph = std::fs::read_to_string(&outcome.graph).expect("the graph is written");
    assert!(graph.starts_with("digraph \"DigitsCnn\""), "{graph}");
    // The ONNX file: ir_version 8 and producer `kiln` first (tests/onnx_export.rs runs such
    // files in another runtime).
    let onnx = std::fs::read(&outcome.onnx).expect("the ONNX file is written");
    assert_eq!(&onnx[..8], &[0x08, 8, 0x12, 4, b'k', b'i', b'l', b'n']);
    assert!(outcome.checkpoints.is_dir());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn lenet5_reaches_97_percent_on_held_out_real_mnist_digits() {
    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/mnist10k");
    let out = std::env::temp_dir().join(format!("kiln-mnist-test-{}", std::process::id()));
    // Five of the example's ten epochs: 0.9765 on the 2,000 test digits (0.9780 after ten).
    let outcome = digits::train_mnist(&mnist, 5, &out, false).expect("training runs");
    assert!(
        outcome.test_accuracy >= 0.97,
        "test accuracy {}",
        outcome.test_accuracy
    );
    assert!(outcome.weights.exists() && outcome.plot.exists());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn austen_char_gpt_learns_well_below_the_uniform_loss() {
    use kiln::rand::rngs::StdRng;
    use kiln::rand::SeedableRng;
    let text = austen::load_text().expect("the bundled text reads");
    // A tenth of the recipe's steps, at three times its learning rate: enough to leave the
    // plateau of letter frequencies (about 2.5) behind. The run is seeded and deterministic.
    let config = austen::Config {
        iterations: 250,
        warmup: 30,
        lr: 3e-3,
        min_lr: 3e-4,
        eval_windows: 40,
        ..austen::Config::recipe()
    };
    let outcome = austen::train(&text, &config, false).expect("training runs");
    // Uniform guessing over the 81 characters scores ln 81 ≈ 4.39.
    assert!(
        outcome.validation_loss < 2.6,
        "validation loss {}",
        outcome.validation_loss
    );
    let sampling = kiln::sampling::Sampling::new().temperature(0.8).top_k(10);
    // 100 characters after a 5-character prompt: the decoding cache fills (64 positions) and
    // starts again from the last characters.
    let sample = austen::sample(&outcome.model, &outcome.vocab, "Emma ", 100, &sampling, 3)
        .expect("sampling runs");
    assert_eq!(sample.chars().count(), 100, "{sample:?}");
    // What --sample-only reads back samples the same text.
    let dir = std::env::temp_dir().join(format!("kiln-austen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    kiln::io::save(&outcome.model, dir.join("char_gpt.safetensors")).expect("saves");
    outcome.vocab.save(dir.join("vocab.json")).expect("saves");
    let vocab = kiln::text::Vocab::load(dir.join("vocab.json")).expect("loads");
    let mut model = austen::CharGpt::<f32>::new(&mut StdRng::seed_from_u64(9));
    kiln::io::load(&mut model, dir.join("char_gpt.safetensors")).expect("loads");
    let again = austen::sample(&model, &vocab, "Emma ", 100, &sampling, 3).expect("sampling runs");
    assert_eq!(again, sample);
    std::fs::remove_dir_all(&dir).ok();
    assert!(austen::sample(&outcome.model, &outcome.vocab, "€", 1, &sampling, 3).is_err());
}

#[test]
fn sentiment_lstm_reaches_65_percent_on_held_out_tweets() {
    let out = std::env::temp_dir().join(format!("kiln-sentiment-test-{}", std::process::id()));
    // One of the example's six epochs on 24,000 of the tweets: 0.690 on the held-out tweets,
    // macro-F1 0.664 (the majority class is 0.42, whose macro-F1 is 0.20), so floors of 0.65
    // and 0.62 show the model learned every class with a margin.
    let config = sentiment::Config {
        epochs: 1,
        train_limit: Some(24_000),
        out: out.clone(),
        verbose: false,
        ..sentiment::Config::default()
    };
    let outcome = sentiment::train(&config).expect("training runs");
    println!(
        "test accuracy {:.4}, macro-F1 {:.4}",
        outcome.test_accuracy, outcome.macro_f1
    );
    assert!(
        outcome.test_accuracy >= 0.65,
        "test accuracy {}",
        outcome.test_accuracy
    );
    assert!(outcome.macro_f1 >= 0.62, "macro-F1 {}", outcome.macro_f1);
    // The saved model reloads and scores as the trained one did.
    let classifier = sentiment::Classifier::load(&out).expect("the saved model loads");
    assert_eq!(classifier.classes(), ["negative", "neutral", "positive"]);
    let p = classifier
        .probabilities(&["I love it, thank you!", ""])
        .expect("classifies");
    assert_eq!(p.len(), 2);
    assert!(p
        .iter()
        .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-4));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn translate_writes_every_style_of_a_known_date() {
    let dates = translate::all_dates();
    assert_eq!(dates.len(), 73_049);
    let july_4 = dates
        .iter()
        .find(|d| (d.year, d.month, d.day) == (1976, 7, 4))
        .expect("the date exists");
    assert_eq!(july_4.iso(), "1976-07-04");
    for (style, (name, example)) in translate::STYLES.iter().enumerate() {
        assert_eq!(
            translate::write_date(july_4, style).as_deref(),
            Some(*example),
            "{name}"
        );
    }
    // 2000-01-01 was a Saturday; every source fits the model and reads without <unk>.
    let y2k = dates
        .iter()
        .find(|d| d.year == 2000)
        .expect("the date exists");
    assert_eq!(
        translate::write_date(y2k, 4).as_deref(),
        Some("saturday, 1 january 2000")
    );
    let vocab = translate::source_vocab();
    assert_eq!(vocab.len(), translate::SOURCE_VOCAB);
    for date in dates.iter().step_by(7) {
        for style in 0..translate::STYLES.len() {
            if let Some(source) = translate::write_date(date, style) {
                let ids = vocab.encode(&source);
                assert!(ids.len() <= translate::MAX_SOURCE, "{source}");
                assert!(!ids.contains(&kiln::text::Vocab::UNK), "{source}");
            }
        }
    }
}

#[test]
fn translate_transformer_reaches_70_percent_on_dates_never_seen() {
    let out = std::env::temp_dir().join(format!("kiln-translate-test-{}", std::process::id()));
    // 200 of the recipe's 800 steps at a higher learning rate, scored on 200 held-out pairs:
    // 0.770 exact (0.765 with seed 7 in place of 42; 300 steps at 3e-3 gave 0.88), so a floor
    // of 0.70 shows the model learned the task with a margin. The full recipe reaches 0.95.
    let config = translate::Config {
        steps: 200,
        warmup: 30,
        lr: 5e-3,
        test_pairs: 200,
        out: out.clone(),
        verbose: false,
        ..translate::Config::default()
    };
    let report = translate::train(&config).expect("training runs");
    println!(
        "exact match {:.4}, characters {:.4}, {:.1} s",
        report.exact_match, report.char_accuracy, report.train_seconds
    );
    assert!(
        report.exact_match >= 0.70,
        "exact match {}",
        report.exact_match
    );
    // The saved model reloads and translates as the trained one did.
    let translator = translate::Translator::load(&out).expect("the saved model loads");
    let sources: Vec<&str> = report.test[..20]
        .iter()
        .map(|e| e.source.as_str())
        .collect();
    let again = translator.translate(&sources).expect("translates");
    assert_eq!(again, report.predictions[..20]);
    // Decoding through the cache (one target position per step) writes what whole forward
    // passes over the growing target write.
    let all: Vec<&str> = report.test.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(
        translator.translate(&all).expect("translates"),
        translator
            .translate_without_cache(&all)
            .expect("translates"),
    );
    assert!(translator.translate(&["x".repeat(100).as_str()]).is_err());
    std::fs::remove_dir_all(&out).ok();
}

/// The segmentation data: on canvases drawn from the real MNIST test digits, a pixel is
/// labelled a digit exactly where a digit's stroke is bright (grey level ≥ 0.5 before the
/// ±0.2 noise), with at most three digits per canvas.
#[test]
fn segmentation_canvases_label_the_strokes_of_their_digits() {
    use kiln::ndarray::Array2;
    use kiln::rand::SeedableRng;
    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/mnist10k");
    let (_, test) = segment::DigitBank::load(&mnist).expect("the MNIST files load");
    let mut rng = kiln::rand::rngs::StdRng::seed_from_u64(3);
    let (mut image, mut mask) = (Array2::zeros((64, 64)), Array2::zeros((64, 64)));
    let mut foreground = 0usize;
    for _ in 0..50 {
        segment::draw_canvas(&test, &mut rng, &mut image, &mut mask);
        let mut classes = std::collections::BTreeSet::new();
        for (&v, &m) in image.iter().zip(mask.iter()) {
            assert!((0.0..=1.0).contains(&v));
            assert!(m < segment::CLASSES);
            if m > 0 {
                assert!(v >= 0.3, "a labelled pixel is dark: {v}");
                classes.insert(m);
                foreground += 1;
            } else {
                assert!(v < 0.7, "a bright pixel is unlabelled: {v}");
            }
        }
        assert!((1..=3).contains(&classes.len()), "{classes:?}");
    }
    let share = foreground as f64 / (50.0 * 64.0 * 64.0);
    assert!(
        (0.02..0.15).contains(&share),
        "strokes cover {share} of the pixels"
    );
    // The wide canvases the trained model is also measured on hold 3 to 9 digits.
    let (height, width) = segment::WIDE;
    let (mut image, mut mask) = (
        Array2::zeros((height, width)),
        Array2::zeros((height, width)),
    );
    let mut most = 0;
    for _ in 0..20 {
        segment::draw_canvas(&test, &mut rng, &mut image, &mut mask);
        let classes: std::collections::BTreeSet<usize> =
            mask.iter().copied().filter(|&m| m > 0).collect();
        assert!((1..=9).contains(&classes.len()), "{classes:?}");
        most = most.max(classes.len());
    }
    assert!(
        most > 3,
        "a wide canvas holds more digits than a square one"
    );
}

#[test]
fn iou_counts_per_class_and_for_strokes() {
    use kiln::ndarray::Array3;
    let truth = Array3::from_shape_vec((1, 2, 3), vec![0, 0, 1, 1, 2, 2]).unwrap();
    let predicted = Array3::from_shape_vec((1, 2, 3), vec![0, 1, 1, 2, 2, 0]).unwrap();
    let mut counts = segment::IouCounts::default();
    counts.add(truth.view(), predicted.view());
    let iou = counts.iou();
    // background: 1 of {0, 1, 5}; class 1: 1 of {1, 2, 3}; class 2: 1 of {3, 4, 5}.
    assert_eq!(iou[0], Some(1.0 / 3.0));
    assert_eq!(iou[1], Some(1.0 / 3.0));
    assert_eq!(iou[2], Some(1.0 / 3.0));
    assert_eq!(iou[3], None);
    assert!((counts.mean_iou() - 1.0 / 3.0).abs() < 1e-12);
    assert!((counts.pixel_accuracy() - 0.5).abs() < 1e-12);
    // strokes: truth {2, 3, 4, 5}, prediction {1, 2, 3, 4}: 3 of 5.
    assert!((counts.foreground_iou() - 0.6).abs() < 1e-12);
}
