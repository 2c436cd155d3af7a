//! Encoding throughput of `kiln::text::HfTokenizer` on Jane Austen's novels
//! (`examples/data/austen.tsv.gz`, 4 MB of text) with the reference tokenizers of
//! `tests/fixtures/tokenizers/`.
//!
//! Run with `cargo bench --bench tokenize` (words after `--` keep only the tokenizers whose
//! name contains one). Each row is the best of three single-threaded passes encoding every
//! line of the novels, in MB of text and millions of tokens per second.
//! `benches/compare/tokenize_reference.py` times the `tokenizers` library on the same lines.

use kiln::text::HfTokenizer;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

const TOKENIZERS: [&str; 9] = [
    "gpt2_bpe",
    "llama3_bpe",
    "o200k_bpe",
    "deepseek_bpe",
    "llama_bpe",
    "bert_wordpiece",
    "t5_unigram",
    "xlmr_unigram",
    "wordlevel",
];

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut gz = Vec::new();
    std::fs::File::open(root.join("examples/data/austen.tsv.gz"))
        .and_then(|mut f| f.read_to_end(&mut gz))
        .expect("examples/data/austen.tsv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .expect("the novels decompress");
    // The second column of each line after the header.
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t').map(|(_, line)| line))
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    println!(
        "{} lines, {:.1} MB; best of 3 passes, one thread\n",
        lines.len(),
        bytes as f64 / 1e6
    );
    println!("| tokenizer | MB/s | M tokens/s | tokens |");
    println!("|---|---:|---:|---:|");
    for name in TOKENIZERS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let path = root
            .join("tests/fixtures/tokenizers")
            .join(name)
            .join("tokenizer.json");
        let tokenizer = HfTokenizer::from_file(&path).expect("a fixture tokenizer");
        let mut best = f64::INFINITY;
        let mut tokens = 0;
        for _ in 0..3 {
            let start = Instant::now();
            tokens = lines
                .iter()
                .map(|line| tokenizer.encode(line, false).len())
                .sum::<usize>();
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "| {name} | {:.1} | {:.2} | {tokens} |",
            bytes as f64 / 1e6 / best,
            tokens as f64 / 1e6 / best
        );
    }
}
