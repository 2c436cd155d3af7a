//! Vocabularies: building, encoding and decoding, JSON files and their errors.

use kiln_runtime::text::{Tokenizer, Vocab};
use kiln_runtime::Error;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-text-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn specials_come_first_then_frequency_then_lexicographic() {
    let vocab = Vocab::builder(Tokenizer::Words)
        .specials(&["<bos>", "<eos>"])
        .build(["b b a", "c a b", "z y"]);
    assert_eq!(
        vocab.tokens(),
        ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a", "c", "y", "z"]
    );
    assert_eq!(vocab.specials(), ["<pad>", "<unk>", "<bos>", "<eos>"]);
    assert_eq!(vocab.id("<bos>"), Some(2));
    assert_eq!(vocab.id("<eos>"), Some(3));
    assert_eq!(vocab.token(4), Some("b"));
    assert_eq!(vocab.token(9), None);
    assert_eq!(vocab.len(), 9);
}

#[test]
fn min_freq_and_max_size() {
    let texts = ["a a a b b c", "a b d"];
    let vocab = Vocab::builder(Tokenizer::Words).min_freq(2).build(texts);
    assert_eq!(vocab.tokens()[2..], ["a", "b"]);
    // max_size counts the specials: room for two tokens.
    let vocab = Vocab::builder(Tokenizer::Words).max_size(4).build(texts);
    assert_eq!(vocab.tokens()[2..], ["a", "b"]);
    // Ties at the cut are broken lexicographically: c and d both seen once.
    let vocab = Vocab::builder(Tokenizer::Words).max_size(5).build(texts);
    assert_eq!(vocab.tokens()[2..], ["a", "b", "c"]);
    // The edge cases: as Keras counts max_tokens, 2 leaves only the specials, 3 one token.
    let vocab = Vocab::builder(Tokenizer::Words).max_size(2).build(texts);
    assert_eq!(vocab.tokens(), ["<pad>", "<unk>"]);
    let vocab = Vocab::builder(Tokenizer::Words).max_size(3).build(texts);
    assert_eq!(vocab.tokens(), ["<pad>", "<unk>", "a"]);
    let vocab = Vocab::builder(Tokenizer::Words)
        .specials(&["<bos>"])
        .max_size(4)
        .build(texts);
    assert_eq!(vocab.tokens(), ["<pad>", "<unk>", "<bos>", "a"]);
}

// Fewer ids than the special tokens is a vocabulary max_size cannot promise (Keras refuses
// max_tokens below 2 likewise).
#[test]
#[should_panic(expected = "max_size 0 leaves no room for <pad> and <unk>")]
fn max_size_0_is_a_bug() {
    let _ = Vocab::builder(Tokenizer::Words).max_size(0);
}

#[test]
#[should_panic(expected = "max_size 1 leaves no room for <pad> and <unk>")]
fn max_size_1_is_a_bug() {
    let _ = Vocab::builder(Tokenizer::Words).max_size(1);
}

#[test]
#[should_panic(
    expected = "max_size 2 leaves no room for the 3 special tokens (<pad>, <unk>, <bos>): it must \
                be at least 3"
)]
fn max_size_below_the_extra_special_tokens_is_a_bug() {
    let _ = Vocab::builder(Tokenizer::Words)
        .max_size(2)
        .specials(&["<bos>"])
        .build(["a"]);
}

#[test]
fn lowercase_merges_cases_when_building_and_encoding() {
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .build(["Hello HELLO hello World"]);
    assert_eq!(vocab.tokens()[2..], ["hello", "world"]);
    assert_eq!(vocab.encode("hELLo WORLD Mars"), [2, 3, Vocab::UNK]);
    let cased = Vocab::builder(Tokenizer::Words).build(["Hello hello"]);
    assert_eq!(cased.len(), 4);
    assert_eq!(cased.encode("HELLO"), [Vocab::UNK]);
}

#[test]
fn specials_in_text_are_not_specials() {
    // `<pad>` written in a text is three word tokens, never id 0.
    let vocab = Vocab::builder(Tokenizer::Words).build(["<pad> x"]);
    let ids = vocab.encode("<pad>");
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&id| id >= 2));
}

#[test]
fn word_encode_decode_round_trip_on_tricky_text() {
    let text = "I can't believe it!!! 😀 see https://t.co/x1 #sxsw";
    let vocab = Vocab::builder(Tokenizer::Words).build([text]);
    let ids = vocab.encode(text);
    assert!(!ids.contains(&Vocab::UNK));
    assert_eq!(
        vocab.decode(&ids),
        "I can't believe it ! ! ! 😀 see https : / / t.co / x1 # sxsw"
    );
    // Re-encoding the decoded text gives the same ids.
    assert_eq!(vocab.encode(&vocab.decode(&ids)), ids);
}

#[test]
fn char_round_trip_is_exact_and_specials_are_skipped() {
    let text = "Émma's \"café\"\n\tnaïve — 😀!";
    let vocab = Vocab::builder(Tokenizer::Chars)
        .specials(&["<bos>"])
        .build([text]);
    let mut ids = vec![2];
    vocab.encode_into(text, &mut ids);
    ids.extend([0, 0, 1]);
    assert_eq!(vocab.decode(&ids), text);
    // `e` + combining acute is one grapheme; decoding gives the text's NFC form (the
    // precomposed `é`), or, in a vocabulary that keeps text as written, the text itself.
    let graphemes = Vocab::builder(Tokenizer::Graphemes).build(["e\u{301}"]);
    assert_eq!(graphemes.tokens()[2..], ["\u{e9}"]);
    assert_eq!(
        graphemes.decode(&graphemes.encode("e\u{301}\u{e9}")),
        "\u{e9}\u{e9}"
    );
    let as_written = Vocab::builder(Tokenizer::Graphemes)
        .nfc(false)
        .build(["e\u{301}"]);
    assert_eq!(as_written.len(), 3);
    assert_eq!(
        as_written.decode(&as_written.encode("e\u{301}e\u{301}")),
        "e\u{301}e\u{301}"
    );
}

#[test]
fn canonically_equivalent_texts_give_the_same_tokens() {
    // A precomposed `é` and `e` + combining acute accent.
    let (composed, decomposed) = ("caf\u{e9}", "cafe\u{301}");
    let words = Vocab::builder(Tokenizer::Words).build([composed, decomposed]);
    assert_eq!(words.tokens()[2..], [composed]);
    assert_eq!(words.encode(decomposed), [2]);
    assert_eq!(words.encode(composed), [2]);
    assert!(words.nfc());
    // Lowercasing too: `W` + ring above has no precomposed form, `w` + ring above has (ẘ).
    let lower = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .build(["CAFE\u{301} W\u{30a}"]);
    assert_eq!(lower.tokens()[2..], [composed, "\u{1e98}"]);
    assert_eq!(lower.encode("Caf\u{c9} \u{1e98} w\u{30a}"), [2, 3, 3]);
    // Characters: `e` + combining accent is the one character `é`.
    let chars = Vocab::builder(Tokenizer::Chars).build([decomposed]);
    assert_eq!(chars.tokens()[2..], ["a", "c", "f", "\u{e9}"]);
    assert_eq!(chars.encode(composed), chars.encode(decomposed));
    // Without normalization, the two stay apart.
    let as_written = Vocab::builder(Tokenizer::Words)
        .nfc(false)
        .build([composed, decomposed]);
    assert_eq!(as_written.len(), 4);
    assert!(!as_written.nfc());
}

#[test]
fn built_vocabularies_pass_the_load_checks() {
    // Hangul jamo, Bengali and Devanagari vowel signs that compose, a composition-excluded
    // letter, the Angstrom sign, `<` + combining long solidus, a dotted capital I.
    let text = "\u{1100}\u{1161}\u{11a8} \u{9c7}\u{9be} \u{915}\u{93c} \u{958} \u{212b} \
                <\u{338} \u{130}stanbul W\u{30a} Caf\u{c9}";
    for tokenizer in [Tokenizer::Chars, Tokenizer::Graphemes, Tokenizer::Words] {
        for lowercase in [false, true] {
            for nfc in [false, true] {
                let vocab = Vocab::builder(tokenizer)
                    .lowercase(lowercase)
                    .nfc(nfc)
                    .build([text]);
                let loaded = Vocab::from_json(&vocab.to_json());
                assert_eq!(loaded.unwrap(), vocab, "{tokenizer:?} {lowercase} {nfc}");
                assert!(!vocab.encode(text).contains(&Vocab::UNK));
            }
        }
    }
}

#[test]
fn encode_into_appends_without_growing_once_warm() {
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .build(["The quick brown fox"]);
    let mut ids = Vec::with_capacity(16);
    let pointer = ids.as_ptr();
    vocab.encode_into("THE Fox", &mut ids);
    vocab.encode_into("quick BROWN unknown", &mut ids);
    assert_eq!(ids, [5, 3, 4, 2, Vocab::UNK]);
    assert_eq!(ids.as_ptr(), pointer);
}

#[test]
fn json_round_trip_through_a_file() {
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .specials(&["<bos>", "<eos>"])
        .build(["Tricky \"quotes\" and \\ backslashes, ünïcödé 😀"]);
    let path = temp("round_trip.json");
    vocab.save(&path).unwrap();
    let loaded = Vocab::load(&path).unwrap();
    assert_eq!(loaded, vocab);
    assert!(loaded.lowercases());
    assert!(loaded.nfc());
    assert!(vocab.to_json().contains("\"nfc\": true"));
    assert_eq!(loaded.tokenizer(), Tokenizer::Words);
    assert!(!path.with_file_name("round_trip.json.tmp").exists());
    assert_eq!(Vocab::from_json(&vocab.to_json()).unwrap(), vocab);
}

/// Writes `json` to a file, loads it, and returns the error's message (after the path).
fn load_error(name: &str, json: &str) -> String {
    let path = temp(name);
    std::fs::write(&path, json).unwrap();
    let error = Vocab::load(&path).unwrap_err();
    assert!(matches!(error, Error::File { .. }), "{error:?}");
    let message = error.to_string();
    let prefix = format!("{}: ", path.display());
    assert!(message.starts_with(&prefix), "{message}");
    message[prefix.len()..].to_string()
}

const GOOD: &str = r#"{
  "version": 1,
  "tokenizer": "words",
  "lowercase": false,
  "specials": 2,
  "tokens": {
    "<pad>": 0,
    "<unk>": 1,
    "a": 2
  }
}"#;

#[test]
fn malformed_files_name_line_and_column() {
    assert!(Vocab::from_json(GOOD).is_ok());
    let truncated = &GOOD[..GOOD.find("\"a\"").unwrap()];
    let message = load_error("truncated.json", truncated);
    assert!(
        message.starts_with("line 9, column 4: EOF while parsing"),
        "{message}"
    );

    let wrong_type = GOOD.replace("\"a\": 2", "\"a\": \"two\"");
    let message = load_error("wrong_type.json", &wrong_type);
    assert!(
        message.starts_with("line 9, column 14: invalid type"),
        "{message}"
    );

    let message = load_error("bad_tokenizer.json", &GOOD.replace("\"words\"", "\"bpe\""));
    assert!(
        message.starts_with("line 3, column 20: unknown variant `bpe`"),
        "{message}"
    );

    let message = load_error("missing.json", &GOOD.replace("\"lowercase\": false,", ""));
    assert!(message.contains("missing field `lowercase`"), "{message}");

    let message = load_error("not_json.json", "hello");
    assert!(
        message.starts_with("line 1, column 1: expected value"),
        "{message}"
    );
}

#[test]
fn duplicate_and_missing_ids_are_errors() {
    let duplicate_id = GOOD.replace("\"a\": 2", "\"a\": 1");
    let message = load_error("duplicate_id.json", &duplicate_id);
    // Checks on the whole map report the position of its end; the message names the token.
    assert_eq!(
        message,
        "line 10, column 3: tokens `<unk>` and `a` both have id 1"
    );

    let duplicate_token = GOOD.replace("\"a\": 2", "\"<unk>\": 2");
    let message = load_error("duplicate_token.json", &duplicate_token);
    assert!(
        message.contains("token `<unk>` is listed twice"),
        "{message}"
    );
    assert!(message.starts_with("line 10, column 3:"), "{message}");

    let gap = GOOD.replace("\"a\": 2", "\"a\": 5");
    let message = load_error("gap.json", &gap);
    assert!(
        message.contains("token `a` has id 5, but 3 tokens must have the ids 0..3"),
        "{message}"
    );

    let no_pad = GOOD.replace("\"<pad>\": 0", "\"x\": 0");
    let message = load_error("no_pad.json", &no_pad);
    assert!(message.contains("id 0 must be `<pad>`"), "{message}");

    let specials = GOOD.replace("\"specials\": 2", "\"specials\": 7");
    let message = load_error("specials.json", &specials);
    assert!(message.contains("`specials` is 7"), "{message}");

    let version = GOOD.replace("\"version\": 1", "\"version\": 9");
    let message = load_error("version.json", &version);
    assert!(message.contains("version 9 is not supported"), "{message}");
}

#[test]
fn uppercase_tokens_in_a_lowercasing_vocabulary_are_errors() {
    let lowercase = GOOD.replace("\"lowercase\": false", "\"lowercase\": true");
    assert!(Vocab::from_json(&lowercase).is_ok());
    let upper = lowercase.replace("\"a\": 2", "\"Apple\": 2");
    let message = load_error("upper.json", &upper);
    assert_eq!(
        message,
        "token `Apple` (id 2) is not in lower case, but the vocabulary lowercases text \
         (`\"lowercase\": true`), so no text can be encoded to it"
    );
    // Without lowercasing it is a token like any other; special tokens may be upper case.
    assert!(Vocab::from_json(&upper.replace("true", "false")).is_ok());
    let special = lowercase
        .replace("\"specials\": 2", "\"specials\": 3")
        .replace("\"a\": 2", "\"<BOS>\": 2");
    assert_eq!(Vocab::from_json(&special).unwrap().specials()[2], "<BOS>");
}

#[test]
fn files_without_nfc_do_not_normalize_and_nfc_files_need_nfc_tokens() {
    // Saved before kiln normalized text: no `nfc` field, and a decomposed token, which must
    // keep encoding as it did.
    let old = GOOD.replace("\"a\": 2", "\"cafe\\u0301\": 2");
    let vocab = Vocab::from_json(&old).unwrap();
    assert!(!vocab.nfc());
    assert_eq!(vocab.encode("cafe\u{301} caf\u{e9}"), [2, Vocab::UNK]);

    let nfc = old.replace(
        "\"lowercase\": false,",
        "\"lowercase\": false,\n  \"nfc\": true,",
    );
    let message = load_error("not_nfc.json", &nfc);
    assert_eq!(
        message,
        "token `cafe\u{301}` (id 2) is not in Unicode normalization form C, but the vocabulary \
         normalizes text (`\"nfc\": true`), so no text can be encoded to it"
    );
    let composed = nfc.replace("cafe\\u0301", "caf\\u00e9");
    assert_eq!(
        Vocab::from_json(&composed).unwrap().encode("cafe\u{301}"),
        [2]
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let error = Vocab::load(temp("does-not-exist.json")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
}
