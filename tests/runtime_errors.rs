//! Bad input at run time is an `Err` that names the input and the shapes, never a panic, and
//! it changes nothing.

use kiln::ndarray::{Array1, Array2, Array4};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;

kiln::model! {
    struct Classifier {
        input x: [B, 4];
        target y: [B] classes 3;
        let h = relu(linear(x, 8));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn model() -> Classifier<f64> {
    Classifier::new(&mut StdRng::seed_from_u64(0))
}

#[test]
fn a_wrong_feature_count_names_the_input_and_both_shapes() {
    let m = model();
    let err = m.forward(Array2::zeros((5, 3)).view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `x`: expected shape [B = 5, 4], got [5, 3] (axis 1 is 3, the model declares 4)"
    );
}

#[test]
fn inputs_that_disagree_on_a_symbolic_dim_are_rejected() {
    let mut m = model();
    let before = m.clone();
    let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
    let x = Array2::zeros((5, 4));
    let y = Array1::zeros(6);
    let err = m
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `y`: expected shape [B = 5], got [6] (axis 0 is 6, but B = 5 from an earlier input)"
    );
    assert_eq!(m.h.weight, before.h.weight, "nothing changed");
}

#[test]
fn a_label_out_of_range_is_an_error() {
    let mut m = model();
    let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
    let x = Array2::zeros((3, 4));
    let y = Array1::from(vec![0usize, 3, 1]);
    let err = m
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `y`: label 3 at position 1 is out of range for 3 classes (labels must be 0..3)"
    );
}

kiln::model! {
    /// Per-pixel scores with "void" pixels labelled 255, as VOC and Cityscapes masks have.
    struct Segmenter {
        input image: [B, 1, 3, 3];
        target mask: [B, 3, 3] classes 4;
        let scores = conv2d(image, 4, kernel = 1);
        output scores;
        loss cross_entropy(scores, mask, ignore_index = 255);
    }
}

/// `ignore_index` need not be a class (PyTorch's `ignore_index=255`): masks may hold it, and
/// its pixels are left out of the mean; any other label past the classes is an error naming
/// the pixel.
#[test]
fn an_ignored_label_past_the_classes_is_accepted_and_left_out() {
    let mut m = Segmenter::<f64>::new(&mut StdRng::seed_from_u64(1));
    let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
    let image = Array4::from_shape_fn((2, 1, 3, 3), |(b, _, i, j)| (b + 2 * i + j) as f64 / 7.0);
    let mut mask = kiln::ndarray::Array3::from_shape_fn((2, 3, 3), |(b, i, j)| (b + i + j) % 4);
    mask[[0, 1, 1]] = 255;
    mask[[1, 2, 0]] = 255;
    let loss = m
        .loss_and_grad(image.view(), mask.view(), &mut ws, &mut grads)
        .expect("255 is the ignored label");

    // The mean of −log softmax over the 16 labelled pixels, from the model's own scores.
    let scores = m.forward(image.view()).expect("forward");
    let (mut sum, mut counted) = (0.0, 0);
    for ((b, i, j), &label) in mask.indexed_iter() {
        if label == 255 {
            continue;
        }
        let pixel: Vec<f64> = (0..4).map(|c| scores[[b, c, i, j]]).collect();
        let log_sum = pixel.iter().map(|s| s.exp()).sum::<f64>().ln();
        sum += log_sum - pixel[label];
        counted += 1;
    }
    assert_eq!(counted, 16);
    assert!(
        (loss - sum / 16.0).abs() < 1e-12,
        "{loss} against {}",
        sum / 16.0
    );

    mask[[1, 0, 2]] = 7;
    let err = m
        .loss_and_grad(image.view(), mask.view(), &mut ws, &mut grads)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `mask`: label 7 at position [1, 0, 2] is out of range for 4 classes (labels must be \
         0..4, or 255, the ignored label)"
    );
}

#[test]
fn a_transposed_input_is_read_correctly() {
    let m = model();
    let x = Array2::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f64 / 10.0);
    let transposed = m.forward(x.t()).unwrap();
    let contiguous = m.forward(x.t().as_standard_layout().view()).unwrap();
    assert_eq!(transposed, contiguous);
}

#[test]
fn a_replaced_parameter_of_the_wrong_size_is_an_error_not_a_panic() {
    let mut m = model();
    m.h.weight = Array2::zeros((8, 5));
    let err = m.forward(Array2::zeros((2, 4)).view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter `h.weight`: has 40 elements, but the model's layer has 32"
    );
}

kiln::model! {
    struct Normed {
        input x: [B, 2, 3, 3];
        let c = batch_norm(x);
        output c;
    }
}

kiln::model! {
    struct Heads {
        input x: [B, 2];
        let a = linear(x, 3);
        output a;
    }
}

#[test]
fn batch_norm_on_one_value_per_channel_and_backward_before_forward_are_errors() {
    let mut m = Normed::<f64>::new(&mut StdRng::seed_from_u64(0));
    let mut ws = m.workspace();
    // One sample of 3x3 is nine values per channel: fine. A 1x1 map of one sample is not.
    assert!(m
        .forward_train(Array4::zeros((1, 2, 3, 3)).view(), &mut ws)
        .is_ok());

    let mut h = Heads::<f64>::new(&mut StdRng::seed_from_u64(0));
    let mut ws = h.workspace();
    let mut grads = h.zero_grads();
    let err = h
        .backward(&mut ws, Array2::zeros((2, 3)).view(), &mut grads)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "backward called before forward_train on this workspace"
    );
    h.forward_train(Array2::zeros((2, 2)).view(), &mut ws)
        .unwrap();
    let err = h
        .backward(&mut ws, Array2::zeros((4, 3)).view(), &mut grads)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("gradient of output `a`: expected shape [2, 3], got [4, 3]"),
        "{err}"
    );
}

kiln::model! {
    struct Pixel {
        input x: [B, 3];
        let n = batch_norm(x);
        output n;
    }
}

#[test]
fn batch_norm_refuses_a_batch_of_one_in_training() {
    let mut m = Pixel::<f64>::new(&mut StdRng::seed_from_u64(0));
    let mut ws = m.workspace();
    let err = m
        .forward_train(Array2::zeros((1, 3)).view(), &mut ws)
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "layer `n`: batch norm in training needs more than one value per channel, got 1"
        ),
        "{err}"
    );
    assert!(
        m.forward(Array2::zeros((1, 3)).view()).is_ok(),
        "inference is fine"
    );
}

kiln::model! {
    /// Logits given to `bce`, which takes probabilities: the mistake PyTorch's `BCELoss`
    /// refuses at run time.
    struct LogitsToBce {
        input x: [B, 4];
        target y: [B, 2];
        let logits = linear(x, 2);
        output logits;
        loss bce(logits, y);
    }
}

#[test]
fn bce_on_values_outside_zero_one_is_an_error_naming_the_element() {
    let mut m = LogitsToBce::<f32>::new(&mut StdRng::seed_from_u64(0));
    m.logits.weight.fill(0.0);
    let bias = m.logits.bias.as_mut().expect("a bias");
    bias.assign(&Array1::from(vec![0.25f32, 1.5]));
    let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
    let x = Array2::zeros((3, 4));
    let y = Array2::zeros((3, 2));
    let err = m
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer `loss`: `bce` takes probabilities in [0, 1], but its prediction has 1.5 at \
         element 1: on logits use `bce_with_logits`, or put the prediction through `sigmoid`"
    );
    assert!(matches!(
        err,
        kiln::Error::Probability {
            position: 1,
            value: 1.5,
            ..
        }
    ));
    // Inside [0, 1] the same model trains.
    let bias = m.logits.bias.as_mut().expect("a bias");
    bias.assign(&Array1::from(vec![0.25f32, 0.75]));
    let loss = m
        .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect("probabilities");
    assert!((loss - (-(0.75f32.ln()) - 0.25f32.ln()) / 2.0).abs() < 1e-6);
}
