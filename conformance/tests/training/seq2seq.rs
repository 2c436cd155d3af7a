//! `SequencePairs` through `Trainer::fit_batches`: an encoder–decoder transformer (causal
//! self-attention, cross-attention over the source's real length) learns to spell the words
//! of Jane Austen's novels backwards from teacher-forcing batches of uneven lengths, the
//! padding left out of the loss and the accuracy.

use kiln::data::{BatchSource, SequencePairs};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::text::read_tsv;
use kiln::train::{evaluate_batches, Trainer};
use kiln::{AdamW, BatchArray};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Padding, start and end; the letters a–z follow.
const PAD: usize = 0;
const START: usize = 1;
const END: usize = 2;

kiln::model! {
    /// One encoder block and one decoder block, pre-norm, 32 wide.
    pub struct Reverser {
        input src: [B, S] tokens 29;
        input src_len: [B] lengths S;
        input tgt: [B, T] tokens 29;
        target next: [B, T] classes 29;
        let src_emb = embedding(src, 32, padding_idx = 0);
        let src_pos = position_embedding(src, 32, max_len = 8);
        let s = src_emb + src_pos;
        let enc_ln1 = layer_norm(s);
        let enc_attn = multi_head_attention(enc_ln1, heads = 4, lengths = src_len);
        let enc = s + enc_attn;
        let enc_ln2 = layer_norm(enc);
        let enc_up = gelu(linear(enc_ln2, 64));
        let enc_down = linear(enc_up, 32);
        let memory = layer_norm(enc + enc_down);
        let tgt_emb = embedding(tgt, 32);
        let tgt_pos = position_embedding(tgt, 32, max_len = 8);
        let t = tgt_emb + tgt_pos;
        let dec_ln1 = layer_norm(t);
        let own_attn = multi_head_attention(dec_ln1, heads = 4, causal = true);
        let own = t + own_attn;
        let dec_ln2 = layer_norm(own);
        let cross_attn = multi_head_attention(dec_ln2, memory, heads = 4, lengths = src_len);
        let cross = own + cross_attn;
        let dec_ln3 = layer_norm(cross);
        let up = gelu(linear(dec_ln3, 64));
        let down = linear(up, 32);
        let h = cross + down;
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 29);
        output logits;
        loss cross_entropy(logits, next, ignore_index = 0);
    }
}

/// The distinct lowercase words of 3 to 6 letters in the first `chars` characters of the
/// bundled novels, in order of first appearance, as letter ids from 3.
fn austen_words(chars: usize) -> Vec<Vec<usize>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/data/austen.tsv.gz");
    let text = read_tsv(path)
        .expect("the bundled text reads")
        .joined("line", "\n")
        .expect("it has a line column");
    let mut seen = BTreeSet::new();
    let mut words = Vec::new();
    for word in text
        .chars()
        .take(chars)
        .collect::<String>()
        .split(|c: char| !c.is_ascii_alphabetic())
    {
        let word = word.to_ascii_lowercase();
        if (3..=6).contains(&word.len()) && seen.insert(word.clone()) {
            words.push(word.bytes().map(|b| usize::from(b - b'a') + 3).collect());
        }
    }
    words
}

fn reversed_pairs(words: &[Vec<usize>]) -> SequencePairs {
    let mut pairs = SequencePairs::default();
    for w in words {
        pairs.push(w.clone(), w.iter().rev().copied().collect());
    }
    pairs
}

#[test]
fn an_encoder_decoder_learns_to_reverse_words_from_sequence_pairs() {
    let words = austen_words(400_000);
    assert!(words.len() > 1500, "{} words", words.len());
    let held_out = words.len() / 8;
    let (validation, train) = words.split_at(held_out);
    let (train, validation) = (reversed_pairs(train), reversed_pairs(validation));

    // A batch of two words of 3 and 5 letters: sources padded to 5, the decoder's inputs and
    // targets to 6 (start or end added), padding 0 everywhere.
    let mut batch: Vec<BatchArray<f32>> = Vec::new();
    let (short, long) = (
        (0..train.len())
            .find(|&i| train.source(i).len() == 3)
            .expect("a 3-letter word"),
        (0..train.len())
            .find(|&i| train.source(i).len() == 5)
            .expect("a 5-letter word"),
    );
    train
        .batches(START, END)
        .fill(&[short, long], &mut batch)
        .expect("a batch");
    let shapes: Vec<Vec<usize>> = batch
        .iter()
        .map(|a| match a {
            BatchArray::Ids(a) => a.shape().to_vec(),
            BatchArray::Float(_) => unreachable!("ids"),
        })
        .collect();
    assert_eq!(shapes, [vec![2, 5], vec![2], vec![2, 6], vec![2, 6]]);
    if let BatchArray::Ids(next) = &batch[3] {
        let row: Vec<usize> = next
            .index_axis(kiln::ndarray::Axis(0), 0)
            .iter()
            .copied()
            .collect();
        let w = train.target(short);
        assert_eq!(row, [w[0], w[1], w[2], END, PAD, PAD]);
    }

    let mut model = Reverser::<f32>::new(&mut StdRng::seed_from_u64(3));
    let mut optimizer = AdamW::new(3e-3).weight_decay(0.01);
    let history = Trainer::new(12, 32)
        .progress(false)
        .shuffle_seed(5)
        .validation_batches(&validation.batches(START, END))
        .fit_batches(&mut model, &mut optimizer, &train.batches(START, END))
        .expect("training");
    let first = history.epochs[0].val_accuracy.expect("an accuracy");
    let last = history
        .last()
        .and_then(|r| r.val_accuracy)
        .expect("an accuracy");
    // Per letter (and end), teacher-forced, on words never seen in training; the padding
    // is not counted.
    assert!(last > 0.95, "validation accuracy {first:.3} -> {last:.3}");
    let metrics = evaluate_batches(&model, &validation.batches(START, END), 64).expect("eval");
    assert!((metrics.accuracy.expect("an accuracy") - last).abs() < 1e-9);
}
