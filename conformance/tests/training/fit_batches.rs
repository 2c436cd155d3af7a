//! `Trainer::fit_batches`: models with token inputs and per-position labels trained by the
//! Keras-style trainer on batch sources (a character language model on Jane Austen's text),
//! accuracy over labelled positions, resuming, and data that does not fit the model.

use crate::common::params;
use crate::common::{Tagged, Tagger};
use kiln::data::{self, BatchSource};
use kiln::ndarray::{self, Array2};
use kiln::optim::{CosineAnnealing, LinearWarmup};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::text::{read_tsv, LabelledText, TokenStream, Tokenizer, Vocab};
use kiln::train::{count_correct_positions, evaluate_batches, Checkpoint, Trainer};
use kiln::{AdamW, BatchArray, Result, Trainable};
use std::path::PathBuf;

kiln::model! {
    /// A one-block character GPT, small enough to train in a test.
    pub struct TinyGpt {
        input tokens: [B, T] tokens 96;
        target next: [B, T] classes 96;
        let wte = embedding(tokens, 48);
        let wpe = position_embedding(tokens, 48, max_len = 32);
        let x = wte + wpe;
        let ln_1 = layer_norm(x);
        let attn = multi_head_attention(ln_1, heads = 4, causal = true);
        let x1 = x + attn;
        let ln_2 = layer_norm(x1);
        let fc = gelu(linear(ln_2, 96));
        let mlp = linear(fc, 48);
        let h = x1 + mlp;
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 96);
        output logits;
        loss cross_entropy(logits, next);
    }
}

kiln::model! {
    /// A bag-of-embeddings classifier of fixed-length texts, without a lengths input.
    pub struct BagOfWords {
        input tokens: [B, 6] tokens 50;
        target label: [B] classes 2;
        let e = embedding(tokens, 4);
        let pooled = mean(e, axis = 1);
        let logits = linear(pooled, 2);
        output logits;
        loss cross_entropy(logits, label);
    }
}

/// The first `chars` characters of Jane Austen's novels (the bundled text), as a stream of
/// character ids, with its vocabulary.
fn austen(chars: usize) -> (TokenStream, Vocab) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/data/austen.tsv.gz");
    let text = read_tsv(path)
        .expect("the bundled text reads")
        .joined("line", "\n")
        .expect("it has a line column");
    let text: String = text.chars().take(chars).collect();
    let vocab = Vocab::builder(Tokenizer::Chars).build([text.as_str()]);
    assert!(vocab.len() <= 96, "{} characters", vocab.len());
    (TokenStream::encode(&vocab, &text), vocab)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fit_batches-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Trains `model` on 100,000 characters of Austen for `epochs` epochs of 80 steps.
fn train_lm(
    model: &mut TinyGpt<f32>,
    epochs: usize,
    checkpoints: Option<&PathBuf>,
) -> Result<kiln::train::History> {
    let (stream, _) = austen(100_000);
    let (train, val) = stream.split(0.9);
    let mut opt = AdamW::new(6e-3).weight_decay(0.01);
    let val_windows = val.lm_windows(32).stride(32);
    let mut trainer = Trainer::new(epochs, 16)
        .shuffle_seed(5)
        .steps_per_epoch(80)
        .schedule(LinearWarmup::steps(
            20,
            CosineAnnealing::new(240, 3e-4).per_step(),
        ))
        .clip_grad_norm(1.0)
        .validation_batches(&val_windows)
        .eval_batch_size(64)
        .progress(false);
    if let Some(dir) = checkpoints {
        trainer = trainer.checkpoints(dir);
        if Checkpoint::<f32>::exists(dir) {
            trainer = trainer.resume_from(dir);
        }
    }
    trainer.fit_batches(model, &mut opt, &train.lm_windows(32))
}

#[test]
fn char_gpt_learns_austen_with_fit_batches() {
    let mut model = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(1));
    let history = train_lm(&mut model, 3, None).expect("training runs");
    println!("{history}");
    assert_eq!(history.len(), 3);
    let last = history.last().expect("epochs ran");
    // Uniform guessing over the text's characters scores about ln 80 = 4.4, and letter
    // frequencies alone about 3.1; 240 steps of a tiny model learn which letters follow which
    // (2.40 when written).
    let val_loss = last.val_loss.expect("validation ran");
    assert!(val_loss < 2.5, "validation loss {val_loss}\n{history}");
    assert!(history.epochs[0].train_loss > last.train_loss, "{history}");
    // Accuracy over every predicted character, checked against a count of our own.
    let val_accuracy = last.val_accuracy.expect("class labels give an accuracy");
    let (stream, _) = austen(100_000);
    let (_, val) = stream.split(0.9);
    let windows = val.lm_windows(32).stride(32);
    let mut batch = Vec::new();
    let indices: Vec<usize> = (0..BatchSource::<f32>::len(&windows)).collect();
    windows.fill(&indices, &mut batch).expect("fills");
    let mut ws = Default::default();
    model.eval_step(&batch, &mut ws).expect("evaluates");
    let BatchArray::Ids(next) = &batch[1] else {
        panic!("labels are ids")
    };
    let (correct, counted) = count_correct_positions(
        <TinyGpt<f32> as Trainable<f32>>::last_output(&ws).expect("ran"),
        next.view(),
        None,
    )
    .expect("shapes fit");
    assert_eq!(counted, indices.len() * 32);
    assert!(
        (val_accuracy - correct as f64 / counted as f64).abs() < 1e-12,
        "{val_accuracy} against {correct}/{counted}"
    );
    // `evaluate_batches` gives what the trainer reported.
    let metrics = evaluate_batches(&model, &windows, 64).expect("evaluates");
    assert_eq!(Some(metrics.loss), last.val_loss);
    assert_eq!(metrics.accuracy, Some(val_accuracy));
    // 0.31 when written; the most frequent character (the space) alone is right about 0.17 of
    // the time.
    assert!(val_accuracy > 0.28, "{val_accuracy}");
}

#[test]
fn resuming_a_token_model_continues_bit_for_bit() {
    let mut straight = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(2));
    let whole = train_lm(&mut straight, 2, None).expect("two epochs");

    let dir = scratch("resume");
    let mut resumed = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(2));
    train_lm(&mut resumed, 1, Some(&dir)).expect("the first epoch");
    let mut fresh = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(99));
    let history = train_lm(&mut fresh, 2, Some(&dir)).expect("resumes for the second");
    assert_eq!(history.len(), 2);
    assert_eq!(params(&fresh), params(&straight));
    assert_eq!(history.epochs[1].val_loss, whole.epochs[1].val_loss);
}

#[test]
fn accuracy_leaves_ignored_positions_out() {
    // The tag of a token is its id modulo 3; positions past each sequence's length are
    // padding, tagged 9.
    let (n, t) = (64, 8);
    let tokens = Array2::from_shape_fn((n, t), |(i, j)| (i * 7 + j * 3) % 20);
    let tags = Array2::from_shape_fn(
        (n, t),
        |(i, j)| {
            if j < 2 + i % 6 {
                tokens[[i, j]] % 3
            } else {
                9
            }
        },
    );
    let data = Tagged { tokens, tags };
    let mut model = Tagger::<f32>::new(&mut StdRng::seed_from_u64(0));
    let history = Trainer::new(40, 16)
        .validation_batches(&data)
        .progress(false)
        .fit_batches(&mut model, &mut kiln::Adam::new(0.05), &data)
        .expect("trains");
    let last = history.last().expect("epochs ran");
    // Every real position is learnable; counting the padding would cap accuracy far lower.
    assert_eq!(last.val_accuracy, Some(1.0), "{history}");
    assert_eq!(last.train_accuracy, Some(1.0), "{history}");
}

#[test]
fn data_that_does_not_fit_the_model_is_refused_before_training() {
    let texts: Vec<String> = ["good fun", "bad", "good good", "awful film"]
        .map(String::from)
        .to_vec();
    let labelled = LabelledText::new(texts, vec![1, 0, 1, 0], vec!["neg".into(), "pos".into()]);
    let vocab = Vocab::builder(Tokenizer::Words).build(labelled.texts());
    let encoded = labelled.encode(&vocab);
    let mut model = BagOfWords::<f32>::new(&mut StdRng::seed_from_u64(0));
    let before = params(&model);
    let mut opt = kiln::Adam::new(1e-3);
    let trainer = || Trainer::<f32>::new(1, 2).progress(false);

    // Three arrays (tokens, lengths, labels) for a model taking two.
    let err = trainer()
        .fit_batches(&mut model, &mut opt, &encoded.batches().pad_to(6))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hold 3 arrays") && err.contains("the model takes 2"),
        "{err}"
    );
    // Language-model windows serve labels per position where the model takes one per text.
    let stream = TokenStream::new((0..40).map(|i| i % 50).collect());
    let err = trainer()
        .fit_batches(&mut model, &mut opt, &stream.lm_windows(6))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`next tokens` as class labels of rank 2")
            && err.contains("target `label` takes labels of 2 classes of rank 1"),
        "{err}"
    );
    // Validation data for `fit` (a Dataset) is not validation data for `fit_batches`.
    let digits = data::digits::<f32>().expect("bundled");
    let err = trainer()
        .validation(&digits)
        .fit_batches(
            &mut model,
            &mut opt,
            &encoded.batches().pad_to(6).lengths(false),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation_batches"), "{err}");
    assert_eq!(params(&model), before, "nothing was trained");

    // The right arrays train.
    let history = trainer()
        .fit_batches(
            &mut model,
            &mut opt,
            &encoded.batches().pad_to(6).lengths(false),
        )
        .expect("trains");
    assert_eq!(history.len(), 1);
    assert_ne!(params(&model), before);
}

kiln::model! {
    /// Labels every pixel of an 8×8 digit: background, or the digit's class.
    pub struct PixelTagger {
        input image: [B, 1, 8, 8];
        target mask: [B, 8, 8] classes 11;
        let c1 = relu(conv2d(image, 16, kernel = 3, padding = 1));
        let c2 = relu(conv2d(c1, 32, kernel = 3, stride = 2, padding = 1));
        let c3 = relu(conv2d(c2, 64, kernel = 3, stride = 2, padding = 1));
        let pooled = adaptive_avg_pool2d(c3, 1);
        let context = upsample(pooled, scale = 8);
        let both = concat(c1, context, axis = 1);
        let logits = conv2d(both, 11, kernel = 1);
        output logits;
        loss cross_entropy(logits, mask);
    }
}

/// The bundled digits as images and per-pixel masks: 0 where a pixel is below half
/// intensity, else 1 + the digit.
fn digit_masks(data: &kiln::data::TensorDataset<f32>) -> ndarray::Array3<usize> {
    let images = data.features();
    let labels = data.labels().expect("digits have labels");
    ndarray::Array3::from_shape_fn((labels.len(), 8, 8), |(i, h, w)| {
        if images[[i, 0, h, w]] >= 0.5 {
            1 + labels[i]
        } else {
            0
        }
    })
}

/// `ArrayBatches`: whole arrays as batches, for a model with a label per pixel (which
/// `Trainer::fit`'s per-sample targets cannot take). The accuracy is per pixel, from scores
/// whose class axis is the second.
#[test]
fn pixel_labels_from_arrays_train_with_fit_batches() {
    let digits = data::digits::<f32>().expect("bundled");
    let (train, test) = data::stratified_split(&digits, 0.2, 3);
    let source = |set: &kiln::data::TensorDataset<f32>| {
        let images = set
            .features()
            .clone()
            .into_dimensionality::<ndarray::Ix4>()
            .expect("[N, 1, 8, 8]");
        data::ArrayBatches::new()
            .floats("image", images)
            .and_then(|a| a.labels("mask", digit_masks(set), 11))
            .expect("same sample count")
    };
    let (train_set, test_set) = (source(&train), source(&test));
    let mut model = PixelTagger::<f32>::new(&mut StdRng::seed_from_u64(4));
    let history = Trainer::new(6, 32)
        .validation_batches(&test_set)
        .progress(false)
        .fit_batches(&mut model, &mut kiln::Adam::new(5e-3), &train_set)
        .expect("trains");
    println!("{history}");
    let metrics = evaluate_batches(&model, &test_set, 128).expect("evaluates");
    // Labelling every pixel background scores the background's share; which digit a stroke
    // belongs to needs the whole image (the pooled context). 0.961 when written.
    let masks = digit_masks(&test);
    let background = masks.iter().filter(|&&m| m == 0).count() as f64 / masks.len() as f64;
    let accuracy = metrics.accuracy.expect("pixel labels give an accuracy");
    println!("pixel accuracy {accuracy:.4}; all background {background:.4}");
    assert!(background < 0.75, "{background}");
    assert!(accuracy > 0.92, "pixel accuracy {accuracy}\n{history}");
    assert_eq!(history.last().and_then(|e| e.val_accuracy), Some(accuracy));
}
