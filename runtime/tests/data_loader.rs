//! DataLoader: every sample exactly once per epoch (in order and shuffled), seeded
//! determinism, partial and dropped last batches, batch contents against the data set, value
//! targets, custom data sets, and allocation-free `next_into` once warm (counted by a global
//! allocator, per thread so that the test harness's other threads do not interfere).

mod counting;
use counting::allocations_in;
use kiln_runtime::data::{Batch, DataLoader, Dataset, TargetKind, TargetMut, TensorDataset};
use ndarray::{Array1, Array2, Array3, ArrayD};
use std::collections::BTreeSet;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// `n` samples with features `[i, -i, 0.5 i]` and label `i % 3`: every row names its index.
fn labelled(n: usize) -> TensorDataset<f32> {
    let x = Array2::from_shape_fn((n, 3), |(i, j)| [1.0, -1.0, 0.5][j] * i as f32);
    TensorDataset::with_labels(x, Array1::from_shape_fn(n, |i| i % 3), 3).unwrap()
}

/// `n` samples of 2×2 features `[[i, i+1], [i+2, i+3]]` with value targets `[10 i, 20 i]`.
fn valued(n: usize) -> TensorDataset<f64> {
    let x = Array3::from_shape_fn((n, 2, 2), |(i, r, c)| (i + 2 * r + c) as f64);
    let y = Array2::from_shape_fn((n, 2), |(i, j)| (10 * (j + 1) * i) as f64);
    TensorDataset::with_values(x, y).unwrap()
}

/// Checks that every row of `batch` is the data set's sample at the batch's index.
fn assert_rows_match(data: &TensorDataset<f32>, batch: &Batch<f32>) {
    let labels = batch
        .labels
        .as_ref()
        .expect("a labelled data set gives labels");
    assert!(batch.values.is_none());
    assert_eq!(batch.x.shape(), [batch.len(), 3]);
    assert_eq!(labels.len(), batch.len());
    for (row, &index) in batch.indices.iter().enumerate() {
        assert_eq!(
            batch.x.index_axis(ndarray::Axis(0), row),
            data.features().index_axis(ndarray::Axis(0), index),
            "row {row} of the batch is sample {index}"
        );
        assert_eq!(labels[row], index % 3);
    }
}

fn indices_of(loader: &DataLoader<'_, f32, TensorDataset<f32>>, epoch: usize) -> Vec<usize> {
    loader.epoch(epoch).flat_map(|b| b.indices).collect()
}

#[test]
fn in_order_epoch_visits_every_sample_once_with_a_partial_last_batch() {
    let _exclusive = counting::exclusive();
    let data = labelled(10);
    let loader = DataLoader::new(&data, 3);
    assert_eq!(loader.num_batches(), 4);
    let batches: Vec<Batch<f32>> = loader.epoch(0).collect();
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    for batch in &batches {
        assert_rows_match(&data, batch);
    }
    let order: Vec<usize> = batches.into_iter().flat_map(|b| b.indices).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
    // Without shuffling every epoch is the same.
    assert_eq!(indices_of(&loader, 5), order);
    assert_eq!(loader.epoch_order(3), order);
}

#[test]
fn shuffled_epoch_visits_every_sample_once() {
    let _exclusive = counting::exclusive();
    let data = labelled(103);
    let loader = DataLoader::new(&data, 10).shuffle(5);
    for epoch in 0..4 {
        let batches: Vec<Batch<f32>> = loader.epoch(epoch).collect();
        assert_eq!(batches.len(), 11);
        assert_eq!(batches.last().map(Batch::len), Some(3));
        let mut seen: Vec<usize> = Vec::new();
        for batch in &batches {
            assert_rows_match(&data, batch);
            seen.extend(&batch.indices);
        }
        assert_ne!(
            seen,
            (0..103).collect::<Vec<_>>(),
            "epoch {epoch} is shuffled"
        );
        assert_eq!(seen, loader.epoch_order(epoch));
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..103).collect::<Vec<_>>(),
            "epoch {epoch}: each sample once"
        );
    }
}

#[test]
fn shuffling_is_deterministic_per_seed_and_epoch() {
    let _exclusive = counting::exclusive();
    let data = labelled(50);
    let a = DataLoader::new(&data, 8).shuffle(42);
    let b = DataLoader::new(&data, 8).shuffle(42);
    let other_seed = DataLoader::new(&data, 8).shuffle(43);
    assert_eq!(indices_of(&a, 0), indices_of(&b, 0));
    assert_eq!(indices_of(&a, 7), indices_of(&b, 7));
    // Epochs can be replayed in any order.
    let third = indices_of(&a, 3);
    let _ = indices_of(&a, 0);
    assert_eq!(indices_of(&a, 3), third);
    assert_ne!(indices_of(&a, 0), indices_of(&a, 1));
    assert_ne!(indices_of(&a, 0), indices_of(&other_seed, 0));
    // Many epochs give many different orders, not a short cycle.
    let orders: BTreeSet<Vec<usize>> = (0..20).map(|e| indices_of(&a, e)).collect();
    assert_eq!(orders.len(), 20);
}

#[test]
fn drop_last_keeps_only_full_batches() {
    let _exclusive = counting::exclusive();
    let data = labelled(10);
    let loader = DataLoader::new(&data, 3).drop_last(true);
    assert_eq!(loader.num_batches(), 3);
    let sizes: Vec<usize> = loader.epoch(0).map(|b| b.len()).collect();
    assert_eq!(sizes, [3, 3, 3]);
    assert_eq!(indices_of(&loader, 0), (0..9).collect::<Vec<_>>());

    // Shuffled: 9 distinct samples per epoch, and over epochs every sample gets its turn.
    let loader = DataLoader::new(&data, 3).shuffle(1).drop_last(true);
    let mut ever = BTreeSet::new();
    for epoch in 0..20 {
        let seen = indices_of(&loader, epoch);
        assert_eq!(seen.len(), 9);
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 9);
        assert_eq!(seen[..], loader.epoch_order(epoch)[..9]);
        ever.extend(seen);
    }
    assert_eq!(ever.len(), 10);

    // An exact multiple loses nothing; a batch larger than the data set gives no batch.
    let loader = DataLoader::new(&data, 5).drop_last(true);
    assert_eq!(loader.epoch(0).map(|b| b.len()).collect::<Vec<_>>(), [5, 5]);
    let loader = DataLoader::new(&data, 11).drop_last(true);
    assert_eq!((loader.num_batches(), loader.epoch(0).count()), (0, 0));
    let loader = DataLoader::new(&data, 11);
    assert_eq!(loader.epoch(0).map(|b| b.len()).collect::<Vec<_>>(), [10]);
}

#[test]
fn batch_size_zero_is_clamped_to_one_and_empty_data_sets_give_no_batches() {
    let _exclusive = counting::exclusive();
    let data = labelled(3);
    let loader = DataLoader::new(&data, 0);
    assert_eq!(loader.batch_size(), 1);
    assert_eq!(
        loader.epoch(0).map(|b| b.len()).collect::<Vec<_>>(),
        [1, 1, 1]
    );

    let empty = labelled(0);
    assert!(empty.is_empty());
    let loader = DataLoader::new(&empty, 4).shuffle(3);
    assert_eq!(loader.num_batches(), 0);
    assert_eq!(loader.epoch(0).count(), 0);
    let mut batch = Batch::new();
    assert!(!loader.epoch(0).next_into(&mut batch));
}

#[test]
fn iterator_reports_its_exact_length() {
    let _exclusive = counting::exclusive();
    let data = labelled(10);
    let loader = DataLoader::new(&data, 4);
    let mut epoch = loader.epoch(0);
    assert_eq!(epoch.len(), 3);
    epoch.next();
    assert_eq!(epoch.len(), 2);
    assert_eq!(DataLoader::new(&data, 4).drop_last(true).epoch(0).len(), 2);
}

#[test]
fn value_targets_are_batched_with_their_shape() {
    let _exclusive = counting::exclusive();
    let data = valued(5);
    assert_eq!(data.targets(), TargetKind::Values { shape: vec![2] });
    let loader = DataLoader::new(&data, 2).shuffle(9);
    let mut seen = Vec::new();
    for batch in loader.epoch(0) {
        let values = batch.values.as_ref().expect("value targets");
        assert!(batch.labels.is_none());
        assert_eq!(batch.x.shape(), [batch.len(), 2, 2]);
        assert_eq!(values.shape(), [batch.len(), 2]);
        for (row, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.x[[row, 1, 0]], (i + 2) as f64);
            assert_eq!(batch.x[[row, 1, 1]], (i + 3) as f64);
            assert_eq!(values[[row, 0]], (10 * i) as f64);
            assert_eq!(values[[row, 1]], (20 * i) as f64);
        }
        seen.extend(batch.indices);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
}

#[test]
fn next_into_matches_the_iterator_and_reshapes_the_reused_batch() {
    let _exclusive = counting::exclusive();
    let data = labelled(10);
    let loader = DataLoader::new(&data, 4).shuffle(2);
    let owned: Vec<Batch<f32>> = loader.epoch(1).collect();
    let mut batch = Batch::new();
    let mut epoch = loader.epoch_batches(1);
    for expected in &owned {
        assert!(epoch.next_into(&mut batch));
        assert_eq!(&batch, expected);
    }
    assert_eq!(batch.len(), 2, "the last batch is partial");
    assert!(!epoch.next_into(&mut batch));
    assert_eq!(batch.len(), 2, "an exhausted epoch leaves the batch alone");
    // The same buffer grows back to a full batch in the next epoch.
    assert!(loader.epoch(2).next_into(&mut batch));
    assert_eq!(batch.x.shape(), [4, 3]);
    assert_rows_match(&data, &batch);

    // A batch that held value targets switches to labels (and back).
    let values = valued(3);
    let mut batch = Batch::new();
    assert!(DataLoader::new(&values, 2).epoch(0).next_into(&mut batch));
    let data64 = {
        let x = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
        TensorDataset::with_labels(x, Array1::from_vec(vec![2, 0, 1]), 3).unwrap()
    };
    assert!(DataLoader::new(&data64, 2).epoch(0).next_into(&mut batch));
    assert!(batch.values.is_none());
    assert_eq!(batch.labels.as_ref().map(|l| l.to_vec()), Some(vec![2, 0]));
    assert_eq!(batch.x.shape(), [2, 4]);
    assert!(DataLoader::new(&values, 3).epoch(0).next_into(&mut batch));
    assert!(batch.labels.is_none());
    assert_eq!(
        batch.values.as_ref().map(|v| v.shape().to_vec()),
        Some(vec![3, 2])
    );
}

#[test]
fn warm_next_into_allocates_nothing() {
    let _exclusive = counting::exclusive();
    for (name, data) in [("in order", false), ("shuffled", true)] {
        let images = {
            let x = ArrayD::from_shape_fn(vec![50, 1, 4, 4], |i| i[0] as f32);
            TensorDataset::with_labels(x, Array1::from_shape_fn(50, |i| i % 10), 10).unwrap()
        };
        let loader = DataLoader::new(&images, 8);
        let loader = if data { loader.shuffle(11) } else { loader };
        let mut batch = Batch::new();
        let mut epoch = loader.epoch(0);
        let first = allocations_in(|| assert!(epoch.next_into(&mut batch)));
        let later = allocations_in(|| {
            let mut batches = 1;
            while epoch.next_into(&mut batch) {
                batches += 1;
                assert_eq!(batch.x[[0, 0, 0, 0]], batch.indices[0] as f32);
            }
            assert_eq!(batches, 7);
        });
        assert!(first > 0, "{name}: the first batch allocates its buffers");
        assert_eq!(
            later, 0,
            "{name}: warm batches (including the partial last) allocated"
        );
    }

    // Value targets too.
    let data = valued(9);
    let loader = DataLoader::new(&data, 4);
    let mut batch = Batch::new();
    let mut epoch = loader.epoch(0);
    assert!(epoch.next_into(&mut batch));
    let later = allocations_in(|| while epoch.next_into(&mut batch) {});
    assert_eq!(later, 0, "value targets: warm batches allocated");
}

/// A data set computed on the fly, nothing held in memory: sample `i` is `[i; 5]` with the
/// scalar value target `i²`.
struct Squares;

impl Dataset<f64> for Squares {
    fn len(&self) -> usize {
        7
    }
    fn sample_shape(&self) -> &[usize] {
        &[5]
    }
    fn targets(&self) -> TargetKind {
        TargetKind::Values { shape: vec![] }
    }
    fn copy_sample(&self, index: usize, features: &mut [f64], target: TargetMut<'_, f64>) {
        features.fill(index as f64);
        match target {
            TargetMut::Values(y) => y[0] = (index * index) as f64,
            TargetMut::Label(_) => unreachable!("Squares has value targets"),
        }
    }
}

#[test]
fn custom_and_trait_object_data_sets_are_served() {
    let _exclusive = counting::exclusive();
    let dynamic: &dyn Dataset<f64> = &Squares;
    let loader = DataLoader::new(dynamic, 3).shuffle(0);
    let mut seen = Vec::new();
    for batch in loader.epoch(0) {
        let values = batch.values.expect("value targets");
        // Scalar targets: one axis, the batch.
        assert_eq!(values.shape(), [batch.indices.len()]);
        for (row, &i) in batch.indices.iter().enumerate() {
            assert_eq!(row_of(&batch.x, row), vec![i as f64; 5]);
            assert_eq!(values[[row]], (i * i) as f64);
        }
        seen.extend(batch.indices);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
}

#[test]
fn zero_sized_samples_still_carry_their_labels() {
    let _exclusive = counting::exclusive();
    let x = Array2::<f32>::zeros((4, 0));
    let data = TensorDataset::with_labels(x, Array1::from_vec(vec![1, 0, 1, 1]), 2).unwrap();
    let batches: Vec<Batch<f32>> = DataLoader::new(&data, 3).epoch(0).collect();
    assert_eq!(batches[0].x.shape(), [3, 0]);
    assert_eq!(
        batches[0].labels.as_ref().map(|l| l.to_vec()),
        Some(vec![1, 0, 1])
    );
    assert_eq!(
        batches[1].labels.as_ref().map(|l| l.to_vec()),
        Some(vec![1])
    );
}

/// Row `row` of a dynamic array as a `Vec`.
fn row_of(a: &ArrayD<f64>, row: usize) -> Vec<f64> {
    a.index_axis(ndarray::Axis(0), row)
        .iter()
        .copied()
        .collect()
}
