//! TensorDataset construction and validation, reshaping, subsets, and the preprocessing
//! helpers: train/test splits, stratified splits, standardization, scaling, one-hot.

use kiln_runtime::data::{
    one_hot, scale, stratified_split, train_test_split, Dataset, Standardizer, TargetKind,
    TargetMut, TensorDataset,
};
use kiln_runtime::Error;
use ndarray::{array, Array1, Array2, ArrayD, Axis, IxDyn};
use std::collections::BTreeSet;

/// `n` samples whose first feature is the sample's index, labels `i % classes`.
fn indexed(n: usize, classes: usize) -> TensorDataset<f64> {
    let x = Array2::from_shape_fn((n, 4), |(i, j)| if j == 0 { i as f64 } else { j as f64 });
    TensorDataset::with_labels(x, Array1::from_shape_fn(n, |i| i % classes), classes).unwrap()
}

/// The sample indices a derived data set holds (its first feature column).
fn ids(data: &TensorDataset<f64>) -> Vec<usize> {
    data.features()
        .index_axis(Axis(1), 0)
        .iter()
        .map(|&v| v as usize)
        .collect()
}

#[test]
fn constructors_validate_counts_labels_and_axes() {
    let x = Array2::<f32>::zeros((3, 2));
    let error = TensorDataset::with_labels(x.clone(), array![0, 1], 2).unwrap_err();
    assert!(
        matches!(error, Error::Shape { name: "labels", .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("3 samples, the labels 2"), "{message}");

    let error = TensorDataset::with_labels(x.clone(), array![0, 1, 5], 3).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Label {
                ref position,
                label: 5,
                classes: 3,
                ..
            } if *position == [2]
        ),
        "{error:?}"
    );

    let error = TensorDataset::with_values(x.clone(), Array2::<f32>::zeros((4, 1))).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("3 samples, the values 4"), "{message}");

    let scalar = ArrayD::<f32>::zeros(IxDyn(&[]));
    let error = TensorDataset::with_labels(scalar, Array1::zeros(0), 1).unwrap_err();
    assert!(error.to_string().contains("no sample axis"), "{error}");
    let error = TensorDataset::with_values(x.clone(), ArrayD::zeros(IxDyn(&[]))).unwrap_err();
    assert!(error.to_string().contains("no sample axis"), "{error}");

    let data = TensorDataset::with_labels(x, array![0, 1, 1], 2).unwrap();
    let error = data.clone().with_class_names(vec!["a".into()]).unwrap_err();
    assert!(error.to_string().contains("2 classes"), "{error}");
    let named = data.with_class_names(vec!["a".into(), "b".into()]).unwrap();
    assert_eq!(
        named.class_names(),
        Some(&["a".to_string(), "b".to_string()][..])
    );
    let values = TensorDataset::with_values(array![[1.0f32]], array![2.0f32]).unwrap();
    assert!(values.with_class_names(vec![]).is_err());
}

#[test]
fn accessors_describe_the_data_set() {
    let data = indexed(6, 3);
    assert_eq!(
        (data.len(), data.sample_shape(), data.sample_size()),
        (6, &[4][..], 4)
    );
    assert_eq!(data.targets(), TargetKind::Labels { classes: 3 });
    assert_eq!((data.classes(), data.values()), (Some(3), None));
    assert_eq!(data.class_counts(), Some(vec![2, 2, 2]));
    assert_eq!(data.class_names(), None);

    let values =
        TensorDataset::with_values(array![[1.0f32, 2.0]], array![[3.0f32, 4.0, 5.0]]).unwrap();
    assert_eq!(values.targets(), TargetKind::Values { shape: vec![3] });
    assert_eq!(
        (values.labels(), values.classes(), values.class_counts()),
        (None, None, None)
    );
    let mut features = [0.0f32; 2];
    let mut target = [0.0f32; 3];
    values.copy_sample(0, &mut features, TargetMut::Values(&mut target));
    assert_eq!((features, target), ([1.0, 2.0], [3.0, 4.0, 5.0]));
}

#[test]
fn non_standard_layouts_are_read_in_logical_order() {
    // A transposed (column-major) array: sample i is row i of the logical view.
    let x = Array2::from_shape_fn((3, 2), |(i, j)| (10 * i + j) as f32);
    let fortran = Array2::from_shape_vec((2, 3), vec![0.0f32, 10.0, 20.0, 1.0, 11.0, 21.0])
        .unwrap()
        .reversed_axes();
    assert!(!fortran.is_standard_layout());
    assert_eq!(fortran, x);
    let data = TensorDataset::with_labels(fortran, array![0, 0, 0], 1).unwrap();
    let mut sample = [0.0f32; 2];
    let mut label = 9;
    data.copy_sample(2, &mut sample, TargetMut::Label(&mut label));
    assert_eq!((sample, label), ([20.0, 21.0], 0));
}

#[test]
fn reshape_samples_keeps_the_data_and_rejects_other_sizes() {
    let mut data = indexed(5, 2);
    let before = data.features().clone();
    data.reshape_samples(&[1, 2, 2]).unwrap();
    assert_eq!(data.sample_shape(), [1, 2, 2]);
    assert_eq!(data.features().shape(), [5, 1, 2, 2]);
    assert_eq!(data.features()[[3, 0, 0, 0]], 3.0);
    assert_eq!(data.features()[[3, 0, 1, 1]], 3.0);

    let error = data.reshape_samples(&[3, 3]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("4 elements"), "{message}");
    assert!(message.contains("[3, 3]"), "{message}");
    // Unchanged by the failed reshape; overflow is an error too, not a panic.
    assert_eq!(data.sample_shape(), [1, 2, 2]);
    assert!(data.reshape_samples(&[usize::MAX, 2]).is_err());

    data.reshape_samples(&[4]).unwrap();
    assert_eq!(data.features(), &before);
}

#[test]
fn subset_selects_in_order_and_rejects_out_of_range_indices() {
    let data = indexed(6, 3)
        .with_class_names(vec!["a".into(), "b".into(), "c".into()])
        .unwrap();
    let subset = data.subset(&[5, 0, 5]).unwrap();
    assert_eq!(ids(&subset), [5, 0, 5]);
    assert_eq!(subset.labels(), Some(&array![2, 0, 2]));
    assert_eq!(subset.classes(), Some(3));
    assert_eq!(subset.class_names(), data.class_names());
    assert_eq!(data.subset(&[]).unwrap().len(), 0);

    let error = data.subset(&[1, 6]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("index 6 at position 1"), "{message}");

    let values =
        TensorDataset::with_values(array![[1.0f32], [2.0]], array![[10.0f32], [20.0]]).unwrap();
    let picked = values.subset(&[1]).unwrap();
    assert_eq!(picked.values(), Some(&array![[20.0f32]].into_dyn()));
}

#[test]
fn train_test_split_partitions_at_random_and_deterministically() {
    let data = indexed(50, 5);
    let (train, test) = train_test_split(&data, 0.3, 7);
    assert_eq!((train.len(), test.len()), (35, 15));
    let mut all: Vec<usize> = ids(&train).into_iter().chain(ids(&test)).collect();
    assert_ne!(ids(&train), (0..35).collect::<Vec<_>>(), "shuffled");
    all.sort_unstable();
    assert_eq!(all, (0..50).collect::<Vec<_>>(), "a partition");
    // Labels travel with their rows.
    for part in [&train, &test] {
        let labels = part.labels().unwrap();
        for (row, id) in ids(part).into_iter().enumerate() {
            assert_eq!(labels[row], id % 5);
        }
    }
    let (again, _) = train_test_split(&data, 0.3, 7);
    assert_eq!(ids(&again), ids(&train));
    let (other, _) = train_test_split(&data, 0.3, 8);
    assert_ne!(ids(&other), ids(&train));

    // Out-of-range fractions are clamped rather than an error or a panic.
    let sizes = |f: f64| {
        let (a, b) = train_test_split(&data, f, 0);
        (a.len(), b.len())
    };
    assert_eq!(sizes(0.0), (50, 0));
    assert_eq!(sizes(-1.0), (50, 0));
    assert_eq!(sizes(f64::NAN), (50, 0));
    assert_eq!(sizes(1.0), (0, 50));
    assert_eq!(sizes(7.0), (0, 50));
}

#[test]
fn stratified_split_keeps_class_proportions() {
    // Classes of 10, 20 and 30 samples.
    let labels: Vec<usize> = (0..60)
        .map(|i| match i {
            0..10 => 0,
            10..30 => 1,
            _ => 2,
        })
        .collect();
    let x = Array2::from_shape_fn((60, 1), |(i, _)| i as f64);
    let data = TensorDataset::with_labels(x, Array1::from_vec(labels), 3).unwrap();
    let (train, test) = stratified_split(&data, 0.2, 3);
    assert_eq!(test.class_counts(), Some(vec![2, 4, 6]));
    assert_eq!(train.class_counts(), Some(vec![8, 16, 24]));
    let ids = |d: &TensorDataset<f64>| -> Vec<usize> {
        d.features().iter().map(|&v| v as usize).collect()
    };
    let all: BTreeSet<usize> = ids(&train).into_iter().chain(ids(&test)).collect();
    assert_eq!(all.len(), 60);
    // Interleaved, not in class blocks.
    assert_ne!(train.labels().unwrap().to_vec(), {
        let mut sorted = train.labels().unwrap().to_vec();
        sorted.sort_unstable();
        sorted
    });
    let (again, _) = stratified_split(&data, 0.2, 3);
    assert_eq!(ids(&again), ids(&train));

    // Value targets have no classes: a plain split.
    let values =
        TensorDataset::with_values(Array2::<f64>::zeros((10, 1)), Array1::zeros(10)).unwrap();
    let (a, b) = stratified_split(&values, 0.5, 0);
    assert_eq!((a.len(), b.len()), (5, 5));
}

#[test]
fn standardizer_uses_training_statistics() {
    let x = array![
        [1.0, 10.0, 3.0],
        [2.0, 20.0, 3.0],
        [3.0, 30.0, 3.0],
        [6.0, 60.0, 3.0]
    ];
    let mut train = TensorDataset::with_labels(x, Array1::zeros(4), 1).unwrap();
    let standardizer = Standardizer::fit(&train);
    assert_eq!(standardizer.mean(), &array![3.0, 30.0, 3.0]);
    // Population standard deviation: sqrt((4 + 1 + 0 + 9) / 4); the constant column gets 1.
    let s = (14.0f64 / 4.0).sqrt();
    assert!((standardizer.std()[0] - s).abs() < 1e-15);
    assert!((standardizer.std()[1] - 10.0 * s).abs() < 1e-13);
    assert_eq!(standardizer.std()[2], 1.0);

    standardizer.transform(&mut train).unwrap();
    let after = Standardizer::fit(&train);
    for j in 0..2 {
        assert!(after.mean()[j].abs() < 1e-15, "feature {j} is centred");
        assert!(
            (after.std()[j] - 1.0).abs() < 1e-12,
            "feature {j} has unit spread"
        );
    }
    assert_eq!(
        train
            .features()
            .index_axis(Axis(1), 2)
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [0.0; 4]
    );

    // The test set is scaled with the training statistics, not its own.
    let mut test =
        TensorDataset::with_labels(array![[3.0, 30.0 + 10.0 * s, 4.0]], array![0], 1).unwrap();
    standardizer.transform(&mut test).unwrap();
    let row = test
        .features()
        .index_axis(Axis(0), 0)
        .iter()
        .copied()
        .collect::<Vec<_>>();
    assert!(
        row[0].abs() < 1e-15 && (row[1] - 1.0).abs() < 1e-12 && row[2] == 1.0,
        "{row:?}"
    );

    // Another sample size is an error that leaves the data alone.
    let mut other = indexed(2, 1);
    let before = other.clone();
    let error = standardizer.transform(&mut other).unwrap_err();
    assert!(
        error.to_string().contains("3 elements per sample"),
        "{error}"
    );
    assert_eq!(other, before);
    assert!(standardizer
        .transform_array(ArrayD::zeros(IxDyn(&[])).view_mut())
        .is_err());

    // Nearly constant in f64 rounding terms counts as constant; an empty set is neutral.
    let big = TensorDataset::with_labels(
        array![[0.1 + 1e9], [0.1 + 1e9], [0.1 + 1e9]],
        array![0, 0, 0],
        1,
    )
    .unwrap();
    assert_eq!(Standardizer::fit(&big).std()[0], 1.0);
    let empty = Standardizer::fit(&indexed(0, 1));
    assert_eq!(
        (empty.mean().to_vec(), empty.std().to_vec()),
        (vec![0.0; 4], vec![1.0; 4])
    );
}

#[test]
fn standardizer_works_per_pixel_on_images() {
    let mut data = indexed(4, 2);
    data.reshape_samples(&[2, 2]).unwrap();
    let standardizer = Standardizer::fit(&data);
    assert_eq!(standardizer.mean().len(), 4);
    standardizer.transform(&mut data).unwrap();
    assert_eq!(data.sample_shape(), [2, 2]);
    let first_pixel: Vec<f64> = data.features().iter().step_by(4).copied().collect();
    let mean = first_pixel.iter().sum::<f64>() / 4.0;
    assert!(mean.abs() < 1e-15, "{first_pixel:?}");
}

#[test]
fn scale_and_one_hot() {
    let mut data = indexed(3, 1);
    scale(&mut data, 0.5);
    assert_eq!(
        ids(&data),
        [0, 0, 1],
        "features halved (and truncated by `ids`)"
    );
    assert_eq!(data.features()[[2, 0]], 1.0);
    assert_eq!(data.features()[[2, 3]], 1.5);

    let labels = array![1, 0, 2];
    let encoded = one_hot::<f32>(&labels, 3).unwrap();
    assert_eq!(
        encoded,
        array![[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    );
    assert_eq!(one_hot::<f64>(&Vec::new(), 4).unwrap().shape(), [0, 4]);
    let error = one_hot::<f32>(&[0, 4, 1], 4).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Label {
                ref position,
                label: 4,
                classes: 4,
                ..
            } if *position == [1]
        ),
        "{error:?}"
    );
}
