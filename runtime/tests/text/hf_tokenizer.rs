//! `HfTokenizer` against the Hugging Face `tokenizers` library: the eight tokenizers of
//! `tests/fixtures/tokenizers/` (see `gen_tokenizers.py` there) must split, encode and decode
//! every test text (and every tenth line of Austen's novels) exactly as the library did, and malformed or unsupported files must be errors
//! naming the file and the place.

use kiln_runtime::text::HfTokenizer;
use kiln_runtime::Error;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizers")
}

fn ids(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("an id list")
        .iter()
        .map(|v| v.as_u64().expect("an id") as usize)
        .collect()
}

/// The text of every line of Austen's novels (the last column of the bundled TSV).
fn austen_lines() -> &'static [String] {
    static LINES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        use std::io::Read;
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/data/austen.tsv.gz");
        let file = std::fs::File::open(&path).expect("the bundled novels");
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .expect("the novels decompress");
        text.lines()
            .skip(1)
            .map(|line| line.rsplit('\t').next().unwrap_or(line).to_string())
            .collect()
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("a string list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// Every case of `<name>/expected.json`; all mismatches are reported at once.
fn check(name: &str) {
    let dir = fixtures().join(name);
    let tokenizer = HfTokenizer::from_file(dir.join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let expected: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let mut failures = Vec::new();
    let mut compare = |what: String, actual: String, wanted: String| {
        if actual != wanted {
            failures.push(format!(
                "{what}:\n      kiln  {actual}\n      torch {wanted}"
            ));
        }
    };
    compare(
        "vocab_size".into(),
        tokenizer.vocab_size().to_string(),
        expected["vocab_size"].to_string(),
    );
    let cases = expected["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "{name}: too few cases");
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let plain = ids(&case["ids"]);
        let special = ids(&case["ids_with_special"]);
        let tokens = strings(&case["tokens"]);
        compare(
            format!("pre_tokenize({text:?})"),
            format!("{:?}", tokenizer.pre_tokenize(text)),
            format!("{:?}", strings(&case["pre_tokens"])),
        );
        compare(
            format!("encode({text:?})"),
            format!("{:?}", tokenizer.encode(text, false)),
            format!("{plain:?}"),
        );
        compare(
            format!("tokenize({text:?})"),
            format!("{:?}", tokenizer.tokenize(text)),
            format!("{tokens:?}"),
        );
        compare(
            format!("encode({text:?}, special tokens)"),
            format!("{:?}", tokenizer.encode(text, true)),
            format!("{special:?}"),
        );
        for (key, ids, skip) in [
            ("decode", &plain, false),
            ("decode_skip_special", &special, true),
            ("decode_with_special", &special, false),
        ] {
            compare(
                format!("{key} of {text:?}"),
                format!("{:?}", tokenizer.decode(ids, skip)),
                format!("{:?}", case[key].as_str().expect("a decoded text")),
            );
        }
    }
    for case in expected["partial"].as_array().expect("partial") {
        let ids = ids(&case["ids"]);
        compare(
            format!("decode({ids:?})"),
            format!("{:?}", tokenizer.decode(&ids, false)),
            format!("{:?}", case["decode"].as_str().expect("a decoded text")),
        );
    }
    let corpus = &expected["corpus"];
    let every = corpus["every"].as_u64().expect("every") as usize;
    let sample: Vec<&str> = austen_lines()
        .iter()
        .step_by(every)
        .map(String::as_str)
        .collect();
    let mut tokens = 0;
    let mut hash = 0xCBF2_9CE4_8422_2325u64;
    for line in &sample {
        let ids = tokenizer.encode(line, false);
        tokens += ids.len();
        for v in ids.into_iter().chain([0xFFFF_FFFF]) {
            hash = (hash ^ v as u64).wrapping_mul(0x0100_0000_01B3);
        }
    }
    compare(
        format!("every {every}th line of the novels"),
        format!("{} lines, {tokens} tokens, hash {hash:016x}", sample.len()),
        format!(
            "{} lines, {} tokens, hash {}",
            corpus["lines"],
            corpus["tokens"],
            corpus["fnv1a"].as_str().expect("a hash")
        ),
    );
    for pair in expected["pairs"].as_array().expect("pairs") {
        let (a, b) = (
            pair["a"].as_str().expect("a"),
            pair["b"].as_str().expect("b"),
        );
        let encoded = tokenizer.encode_pair(a, b, true);
        compare(
            format!("encode_pair({a:?}, {b:?})"),
            format!("{:?} types {:?}", encoded.ids, encoded.type_ids),
            format!("{:?} types {:?}", ids(&pair["ids"]), ids(&pair["type_ids"])),
        );
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatch(es) with the tokenizers library:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

#[test]
fn gpt2_byte_level_bpe_matches_the_reference() {
    check("gpt2_bpe");
}

#[test]
fn roberta_byte_level_bpe_matches_the_reference() {
    check("roberta_bpe");
}

#[test]
fn bert_wordpiece_matches_the_reference() {
    check("bert_wordpiece");
}

#[test]
fn word_level_matches_the_reference() {
    check("wordlevel");
}

#[test]
fn sentencepiece_style_bpe_with_byte_fallback_matches_the_reference() {
    check("llama_bpe");
}

#[test]
fn metaspace_bpe_matches_the_reference() {
    check("metaspace_bpe");
}

#[test]
fn llama3_split_pattern_bpe_matches_the_reference() {
    check("llama3_bpe");
}

#[test]
fn qwen2_split_pattern_bpe_matches_the_reference() {
    check("qwen2_bpe");
}

#[test]
fn o200k_split_pattern_bpe_matches_the_reference() {
    check("o200k_bpe");
}

#[test]
fn deepseek_v3_splits_bpe_matches_the_reference() {
    check("deepseek_bpe");
}

#[test]
fn t5_unigram_with_a_precompiled_charsmap_matches_the_reference() {
    check("t5_unigram");
}

#[test]
fn albert_unigram_matches_the_reference() {
    check("albert_unigram");
}

#[test]
fn xlm_roberta_unigram_matches_the_reference() {
    check("xlmr_unigram");
}

#[test]
fn unigram_with_byte_fallback_matches_the_reference() {
    check("bytes_unigram");
}

/// The error of `HfTokenizer::from_json(json)`, which must be `Error::File` on `<string>`.
/// The files' `truncation` and `padding` (`lengths.json`): twelve settings on four of the
/// tokenizers, each over single texts, pairs (with and without special tokens) and a batch,
/// must give the library's ids, type ids and attention masks, and fail where it failed.
#[test]
fn truncation_and_padding_match_the_reference() {
    let text = std::fs::read_to_string(fixtures().join("lengths.json")).expect("lengths.json");
    let expected: Value = serde_json::from_str(&text).expect("lengths.json is JSON");
    let texts: Vec<String> = strings(&expected["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    let (mut checked, mut refused) = (0, 0);
    let cases = expected["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = case["tokenizer"].as_str().expect("tokenizer");
        let file = std::fs::read_to_string(fixtures().join(name).join("tokenizer.json"))
            .expect("tokenizer.json");
        let mut json: Value = serde_json::from_str(&file).expect("tokenizer.json is JSON");
        json["truncation"] = case["truncation"].clone();
        json["padding"] = case["padding"].clone();
        let tokenizer = HfTokenizer::from_json(&json.to_string())
            .unwrap_or_else(|e| panic!("{name} with {}: {e}", case["truncation"]));
        let settings = format!(
            "{name}, truncation {}, padding {}",
            case["truncation"], case["padding"]
        );
        let mut compare = |what: String,
                           got: kiln_runtime::Result<kiln_runtime::text::Encoding>,
                           wanted: &Value| {
            checked += 1;
            let got = match got {
                Ok(e) => format!("{:?} {:?} {:?}", e.ids, e.type_ids, e.attention_mask),
                Err(e) => {
                    assert!(matches!(e, Error::Encoding { .. }), "{e}");
                    "error".to_string()
                }
            };
            let want = if wanted.get("error").is_some() {
                refused += 1;
                "error".to_string()
            } else {
                format!(
                    "{:?} {:?} {:?}",
                    ids(&wanted["ids"]),
                    ids(&wanted["type_ids"]),
                    ids(&wanted["attention_mask"])
                )
            };
            if got != want {
                failures.push(format!(
                    "{settings}: {what}\n      kiln    {got}\n      library {want}"
                ));
            }
        };
        for single in case["single"].as_array().expect("single") {
            let text = single["text"].as_str().expect("text");
            let add = single["add_special_tokens"].as_bool().expect("add");
            compare(
                format!("encoding({text:?}, {add})"),
                tokenizer.encoding(text, add),
                single,
            );
        }
        for pair in case["pairs"].as_array().expect("pairs") {
            let (a, b) = (
                pair["a"].as_str().expect("a"),
                pair["b"].as_str().expect("b"),
            );
            let add = pair["add_special_tokens"].as_bool().expect("add");
            compare(
                format!("encoding_pair({a:?}, {b:?}, {add})"),
                tokenizer.encoding_pair(a, b, add),
                pair,
            );
        }
        match (
            tokenizer.encode_batch(&texts, true),
            case["batch"].as_array(),
        ) {
            (Ok(got), Some(wanted)) => {
                assert_eq!(got.len(), wanted.len());
                for (i, (got, wanted)) in got.into_iter().zip(wanted).enumerate() {
                    compare(format!("encode_batch(..)[{i}]"), Ok(got), wanted);
                }
            }
            (Err(Error::Encoding { .. }), None) if case["batch"].get("error").is_some() => {
                refused += 1;
            }
            (got, wanted) => failures.push(format!(
                "{settings}: encode_batch: kiln {:?}, library {wanted:?}",
                got.map(|_| ())
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The fixture covers the library's refusals (`OnlyFirst`, `OnlySecond`).
    assert!(
        refused >= 40 && checked > 500,
        "{refused} refusals of {checked}"
    );

    // A stride not below the cut length: the library panics (an assertion); kiln refuses.
    let words = format!(
        r#"{{"truncation": {{"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
            "stride": 4}}, "pre_tokenizer": {{"type": "Whitespace"}},
            "model": {{"type": "WordLevel", "unk_token": "[UNK]", {WORDS}}}}}"#
    );
    let tokenizer = HfTokenizer::from_json(&words).expect("a valid file");
    assert_eq!(
        tokenizer.encoding("a b ab a", false).expect("fits").ids,
        [1, 2, 3, 1]
    );
    match tokenizer.encoding("a b ab a b", false) {
        Err(Error::Encoding { message }) => assert!(message.contains("stride"), "{message}"),
        other => panic!("expected a truncation error, got {other:?}"),
    }
    // Malformed settings name their place.
    let message = file_error(&words.replace("LongestFirst", "Longest"));
    assert!(
        message.starts_with("at `truncation`: unknown truncation strategy \"Longest\""),
        "{message}"
    );
    let message = file_error(&words.replace(
        r#""truncation""#,
        r#""padding": {"strategy": "Longest"}, "truncation""#,
    ));
    assert!(
        message.starts_with("at `padding.strategy`: should be \"BatchLongest\""),
        "{message}"
    );
}

fn file_error(json: &str) -> String {
    match HfTokenizer::from_json(json) {
        Err(Error::File { path, message }) => {
            assert_eq!(path, PathBuf::from("<string>"));
            message
        }
        Err(other) => panic!("expected Error::File, got {other}"),
        Ok(_) => panic!("{json} was accepted"),
    }
}

const WORDS: &str = r#""vocab": {"[UNK]": 0, "a": 1, "b": 2, "ab": 3}"#;

#[test]
fn malformed_and_unsupported_files_name_the_place() {
    let message = file_error("{\n  \"model\": {\"type\": \"BPE\",\n  }\n}");
    assert!(message.starts_with("line 3 column 3:"), "{message}");

    let message = file_error(&format!(
        r#"{{"model": {{"type": "WordPieces", {WORDS}}}}}"#
    ));
    assert!(
        message.starts_with("at `model`: model `WordPieces` is not supported"),
        "{message}"
    );

    // Unigram's vocabulary is a list of [piece, score], not a map.
    let message = file_error(&format!(r#"{{"model": {{"type": "Unigram", {WORDS}}}}}"#));
    assert!(
        message.starts_with("at `model.vocab`: expected an array"),
        "{message}"
    );
    let unigram =
        r#""model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["a", -1.5]]}"#;
    let message = file_error(
        r#"{"model": {"type": "Unigram", "unk_id": 2, "vocab": [["<unk>", 0], ["a", -1.5]]}}"#,
    );
    assert!(
        message.starts_with("at `model`: `unk_id` should be the id of a vocabulary entry (0 to 1)"),
        "{message}"
    );
    let message = file_error(
        r#"{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["a", "x"]]}}"#,
    );
    assert!(
        message.starts_with(
            "at `model.vocab[1]`: a Unigram vocabulary entry should be [piece, score]"
        ),
        "{message}"
    );
    let message = file_error(&format!(
        r#"{{"normalizer": {{"type": "Precompiled", "precompiled_charsmap": "!!"}}, {unigram}}}"#
    ));
    assert!(
        message.starts_with("at `normalizer`: `precompiled_charsmap` is not base64"),
        "{message}"
    );
    let message = file_error(&format!(
        r#"{{"normalizer": {{"type": "Precompiled", "precompiled_charsmap": "ZAAAAA=="}}, {unigram}}}"#
    ));
    assert!(
        message.starts_with(
            "at `normalizer`: `precompiled_charsmap` is not a compiled character map: 4 bytes"
        ),
        "{message}"
    );
    let message = file_error(&format!(
        r#"{{"normalizer": {{"type": "Replace", "pattern": {{"Regex": "\\s+"}}, "content": " "}}, {unigram}}}"#
    ));
    assert!(
        message.starts_with(
            r"at `normalizer.pattern`: the regular expression `\s+` is not supported in a Replace"
        ),
        "{message}"
    );

    let message = file_error(&format!(
        r#"{{"model": {{"type": "BPE", {WORDS}, "merges": ["a b", "b c"]}}}}"#
    ));
    assert!(
        message.starts_with("at `model.merges[1]`: the merge's token `c` is not in the vocabulary"),
        "{message}"
    );

    let message = file_error(&format!(
        r#"{{"pre_tokenizer": {{"type": "Sequence", "pretokenizers": [
            {{"type": "Split", "pattern": {{"Regex": "\\s+"}}, "behavior": "Removed"}}]}},
          "model": {{"type": "WordLevel", "unk_token": "[UNK]", {WORDS}}}}}"#
    ));
    assert!(
        message.starts_with(
            r#"at `pre_tokenizer.pretokenizers[0].pattern`: the Split pattern "\\s+" is not one of the recognised ones"#
        ),
        "{message}"
    );

    let message = file_error(&format!(
        r#"{{"model": {{"type": "WordPiece", "unk_token": "<unk>", {WORDS}}}}}"#
    ));
    assert!(
        message.contains("the unknown token `<unk>` is not in the vocabulary"),
        "{message}"
    );

    let message = file_error(r#"{"model": {"type": "WordLevel", "vocab": {"a": -1}}}"#);
    assert!(message.starts_with("at `model.vocab`:"), "{message}");

    let message = file_error(r#"{"added_tokens": [{"id": 1}], "model": {}}"#);
    assert!(
        message.starts_with("at `added_tokens[0]`: missing `content`"),
        "{message}"
    );

    let missing = fixtures().join("no_such_dir/tokenizer.json");
    match HfTokenizer::from_file(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn unknown_words_bytes_and_special_tokens() {
    let json = r###"{"added_tokens": [{"id": 4, "content": "<eos>", "special": true}],
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "max_input_chars_per_word": 4,
                      "vocab": {"[UNK]": 0, "a": 1, "b": 2, "ab": 3, "##b": 5}},
            "decoder": {"type": "WordPiece"}}"###;
    let tokenizer = HfTokenizer::from_json(json).expect("a valid file");
    // `abb` = ab ##b; `abc` has an unknown part, so the whole word is unknown; `aaaaa` is
    // longer than max_input_chars_per_word.
    assert_eq!(
        tokenizer.encode("abb abc<eos> aaaaa", true),
        [3, 5, 0, 4, 0]
    );
    assert_eq!(tokenizer.decode(&[3, 5, 1, 4], false), "abb a <eos>");
    assert_eq!(tokenizer.decode(&[3, 5, 1, 4, 99], true), "abb a");
    assert_eq!(tokenizer.vocab_size(), 6);
    assert_eq!(tokenizer.token_to_id("<eos>"), Some(4));
    assert_eq!(tokenizer.id_to_token(5), Some("##b"));
    assert_eq!(tokenizer.special_tokens(), [("<eos>", 4)]);

    // A Unigram model without an unknown token: the library refuses text it has no piece for
    // ("Encountered an unknown token but `unk_id` is missing"); `encoding` does too, `encode`
    // leaves that text out.
    let json =
        r#"{"model": {"type": "Unigram", "unk_id": null, "vocab": [["a", -1.5], ["b", -1.0]]}}"#;
    let tokenizer = HfTokenizer::from_json(json).expect("a valid file");
    assert_eq!(tokenizer.encoding("ab", false).expect("known").ids, [0, 1]);
    assert_eq!(tokenizer.encode("abxa", false), [0, 1, 0]);
    match tokenizer.encoding("abxa", false) {
        Err(Error::Encoding { message }) => assert!(message.contains("\"x\""), "{message}"),
        other => panic!("expected an encoding error, got {other:?}"),
    }
    assert!(tokenizer.encode_batch(&["ab", "x"], false).is_err());
    assert!(tokenizer.encoding_pair("ab", "bx", false).is_err());
}

#[test]
fn data_sets_encode_with_a_pretrained_tokenizer() {
    use kiln_runtime::text::{LabelledText, TokenStream};

    let tokenizer = HfTokenizer::from_file(fixtures().join("bert_wordpiece/tokenizer.json"))
        .expect("the fixture loads");
    let texts = [
        "Emma Woodhouse, handsome, clever, and rich",
        "She was the youngest",
    ];
    let data = LabelledText::new(
        texts.iter().map(|t| t.to_string()).collect(),
        vec![1, 0],
        vec!["no".into(), "yes".into()],
    );
    let encoded = data.encode(&tokenizer);
    for (i, text) in texts.iter().enumerate() {
        let ids = tokenizer.encode(text, true);
        assert_eq!(encoded.sequence(i), ids.as_slice());
        // [CLS] first, [SEP] last, as the tokenizer called on a text gives them.
        assert_eq!(ids.first(), tokenizer.token_to_id("[CLS]").as_ref());
        assert_eq!(ids.last(), tokenizer.token_to_id("[SEP]").as_ref());
    }
    let stream = TokenStream::encode(&tokenizer, texts[0]);
    assert_eq!(stream.tokens(), tokenizer.encode(texts[0], true).as_slice());
}

/// A random text over letters, digits, spaces, line breaks, punctuation, accents (composed and
/// combining), CJK, emoji and control characters (no `<`, so no special token by chance).
fn random_text(state: &mut u64, len: usize) -> String {
    const CHARS: &[char] = &[
        'a', 'b', 'e', 'z', 'A', 'Q', '0', '7', ' ', ' ', ' ', '\n', '\r', '\t', '.', ',', '\'',
        '!', '-', '_', 'é', 'ß', '\u{301}', '\u{a0}', '\u{2003}', '数', '字', '😀', '\u{200d}',
        '\u{7}', '\u{0}', 'ǅ', 'Ⅻ', '½', '>',
    ];
    (0..len)
        .map(|_| {
            *state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            CHARS[(*state >> 33) as usize % CHARS.len()]
        })
        .collect()
}

/// Byte-level and byte-fallback tokenizers lose nothing: decoding an encoding gives the text
/// back, whatever the text.
#[test]
fn byte_level_encodings_decode_to_the_same_text() {
    let mut state = 7;
    for name in ["gpt2_bpe", "llama3_bpe", "qwen2_bpe", "llama_bpe"] {
        let tokenizer = HfTokenizer::from_file(fixtures().join(name).join("tokenizer.json"))
            .expect("the fixture loads");
        for len in 0..300 {
            let text = random_text(&mut state, len % 60);
            let ids = tokenizer.encode(&text, false);
            assert_eq!(
                tokenizer.decode(&ids, false),
                text,
                "{name}: {text:?} → {ids:?}"
            );
        }
    }
}

/// Every reference tokenizer takes any text: random strings of awkward characters (marks
/// after digits, modifier letters, CJK before capitals, zero-width and full-width forms, `▁`)
/// encode, tokenize and decode without a panic, and every id is in the vocabulary.
#[test]
fn every_tokenizer_takes_random_text() {
    let mut state = 5;
    let names = [
        "gpt2_bpe",
        "roberta_bpe",
        "bert_wordpiece",
        "wordlevel",
        "llama_bpe",
        "metaspace_bpe",
        "llama3_bpe",
        "qwen2_bpe",
        "o200k_bpe",
        "deepseek_bpe",
        "t5_unigram",
        "albert_unigram",
        "xlmr_unigram",
        "bytes_unigram",
    ];
    for name in names {
        let tokenizer = HfTokenizer::from_file(fixtures().join(name).join("tokenizer.json"))
            .expect("the fixture loads");
        for len in 0..200 {
            // Two random texts' characters interleaved with more of the awkward ones.
            let more = [
                'ʰ', '\u{6f22}', 'カ', '/', '\u{94d}', 'न', '\u{ff21}', '\u{2581}', '<', 'S',
            ];
            let text: String = random_text(&mut state, len % 40)
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 3 == 1 {
                        more[(i + len) % more.len()]
                    } else {
                        c
                    }
                })
                .collect();
            let ids = tokenizer.encode(&text, true);
            assert!(
                ids.iter().all(|&id| id < tokenizer.vocab_size()),
                "{name}: {text:?} → {ids:?}"
            );
            assert_eq!(
                tokenizer.tokenize(&text).len(),
                tokenizer.encode(&text, false).len()
            );
            tokenizer.decode(&ids, false);
            tokenizer.encode_pair(&text, "b", true);
        }
    }
}

/// The unigram tokenizers without an unknown piece in the way (byte fallback) lose nothing
/// either; the others give back the text as their normalizer left it.
#[test]
fn unigram_encodings_decode_to_the_normalized_text() {
    let mut state = 11;
    let tokenizer = HfTokenizer::from_file(fixtures().join("bytes_unigram/tokenizer.json"))
        .expect("the fixture loads");
    for len in 0..300 {
        // Lowercase letters, digits and single spaces inside: what the case-folding,
        // space-squeezing normalizer keeps as it is.
        let text: String = random_text(&mut state, len % 60)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == ' ' || !c.is_ascii())
            .collect();
        let normalized = tokenizer
            .pre_tokenize(&text)
            .concat()
            .replace('\u{2581}', " ");
        let ids = tokenizer.encode(&text, false);
        assert_eq!(
            tokenizer.decode(&ids, false),
            normalized.trim_start(),
            "{text:?} → {ids:?}"
        );
    }
}

/// SentencePiece's compiled character map (`charsmap.json`: a map compiled from a few rules,
/// and what the library's Precompiled normalizer makes of texts), including the reference's
/// rule that a short grapheme is replaced whole by the mapping of its shortest mapped prefix.
#[test]
fn precompiled_charsmap_matches_the_reference() {
    let text = std::fs::read_to_string(fixtures().join("charsmap.json")).expect("charsmap.json");
    let expected: Value = serde_json::from_str(&text).expect("JSON");
    let json = serde_json::json!({
        "normalizer": {
            "type": "Precompiled",
            "precompiled_charsmap": expected["precompiled_charsmap"],
        },
        "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {"[UNK]": 0}},
    });
    let tokenizer = HfTokenizer::from_json(&json.to_string()).expect("loads");
    let cases = expected["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let (text, want) = (
            case[0].as_str().expect("text"),
            case[1].as_str().expect("normalized"),
        );
        assert_eq!(tokenizer.pre_tokenize(text).concat(), want, "{text:?}");
    }
}

/// Every split behaviour on literal patterns and punctuation, inverted and not, against the
/// pieces the library cut (`pre_tokenizers.json`).
#[test]
fn pre_tokenizers_match_the_reference() {
    let text = std::fs::read_to_string(fixtures().join("pre_tokenizers.json"))
        .expect("pre_tokenizers.json");
    let expected: Value = serde_json::from_str(&text).expect("JSON");
    let texts = strings(&expected["texts"]);
    let cases = expected["cases"].as_object().expect("cases");
    assert!(cases.len() >= 20, "{} pre-tokenizers", cases.len());
    let mut failures = Vec::new();
    for (name, case) in cases {
        let json = serde_json::json!({
            "pre_tokenizer": case["pre_tokenizer"],
            "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {"[UNK]": 0}},
        });
        let tokenizer =
            HfTokenizer::from_json(&json.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (text, pieces) in texts.iter().zip(case["pieces"].as_array().expect("pieces")) {
            let actual = tokenizer.pre_tokenize(text);
            let wanted = strings(pieces);
            if actual != wanted {
                failures.push(format!(
                    "{name} on {text:?}:\n      kiln  {actual:?}\n      torch {wanted:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}
