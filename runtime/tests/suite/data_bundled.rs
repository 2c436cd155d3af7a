//! The bundled data sets: sizes, shapes, class counts, value ranges and known samples, checked
//! against the source files (`runtime/data/`), and their use through a loader and a split.

use kiln_runtime::data::{self, DataLoader, Dataset, Standardizer};
use ndarray::Axis;

/// Class counts of the UCI digits copy (`cut -d, -f65 | sort | uniq -c`).
const DIGIT_COUNTS: [usize; 10] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];

#[test]
fn digits_has_1797_scaled_8x8_images_of_10_classes() {
    let digits = data::digits::<f32>().unwrap();
    assert_eq!(digits.len(), 1797);
    assert_eq!(digits.sample_shape(), [1, 8, 8]);
    assert_eq!(digits.classes(), Some(10));
    let counts = digits.class_counts().unwrap();
    assert_eq!(counts, DIGIT_COUNTS);
    assert_eq!(counts.iter().sum::<usize>(), 1797);

    // Pixels 0..16 scaled by 1/16: in [0, 1], both ends reached, all multiples of 1/16.
    let features = digits.features();
    let (min, max) = features
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    assert_eq!((min, max), (0.0, 1.0));
    assert!(features.iter().all(|&v| (v * 16.0).fract() == 0.0));

    // The first sample is a 0: its first two rows in the source file are
    // `0,0,5,13,9,1,0,0` and `0,0,13,15,10,15,5,0`.
    let first = features.index_axis(Axis(0), 0);
    let rows: Vec<f32> = first.iter().take(16).map(|&v| v * 16.0).collect();
    assert_eq!(
        rows,
        [0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0.]
    );
    assert_eq!(digits.labels().unwrap()[0], 0);
    // The last line of the file ends `...,0,1,8,12,14,12,1,0,8`.
    assert_eq!(digits.labels().unwrap()[1796], 8);
    let last_row: Vec<f32> = (0..8).map(|c| features[[1796, 0, 7, c]] * 16.0).collect();
    assert_eq!(last_row, [0., 1., 8., 12., 14., 12., 1., 0.]);

    let digits64 = data::digits::<f64>().unwrap();
    assert_eq!(digits64.features().mapv(|v| v as f32), features);
}

#[test]
fn iris_has_150_flowers_of_3_named_classes() {
    let iris = data::iris::<f64>().unwrap();
    assert_eq!((iris.len(), iris.sample_shape()), (150, &[4][..]));
    assert_eq!(iris.classes(), Some(3));
    assert_eq!(iris.class_counts(), Some(vec![50, 50, 50]));
    let names: Vec<&str> = iris
        .class_names()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["setosa", "versicolor", "virginica"]);
    // First and last rows of the file: `5.1,3.5,1.4,0.2,0` and `5.9,3.0,5.1,1.8,2`.
    let row = |i: usize| -> Vec<f64> {
        iris.features()
            .index_axis(Axis(0), i)
            .iter()
            .copied()
            .collect()
    };
    assert_eq!(row(0), [5.1, 3.5, 1.4, 0.2]);
    assert_eq!(row(149), [5.9, 3.0, 5.1, 1.8]);
    assert_eq!(iris.labels().unwrap()[149], 2);
    // Measurements in cm, all positive and below 8.
    assert!(iris.features().iter().all(|&v| v > 0.0 && v < 8.0));
}

#[test]
fn bundled_data_feeds_a_loader_and_a_split() {
    let digits = data::digits::<f32>().unwrap();
    let loader = DataLoader::new(&digits, 64).shuffle(0);
    assert_eq!(loader.num_batches(), 29);
    let mut counts = [0usize; 10];
    for batch in loader.epoch(0) {
        assert_eq!(batch.x.shape()[1..], [1, 8, 8]);
        for &label in batch.labels.as_ref().unwrap() {
            counts[label] += 1;
        }
    }
    assert_eq!(counts, DIGIT_COUNTS);

    let iris = data::iris::<f32>().unwrap();
    let (mut train, mut test) = data::stratified_split(&iris, 0.2, 1);
    assert_eq!(
        (train.class_counts(), test.class_counts()),
        (Some(vec![40; 3]), Some(vec![10; 3]))
    );
    assert_eq!(train.class_names(), iris.class_names());
    let standardizer = Standardizer::fit(&train);
    standardizer.transform(&mut train).unwrap();
    standardizer.transform(&mut test).unwrap();
    assert!(Standardizer::fit(&train)
        .mean()
        .iter()
        .all(|m| m.abs() < 1e-5));
}
