//! Labelled-text CSV files, splits and batches; TSV tables; the real data files.

mod counting;
#[path = "text/hf_tokenizer.rs"]
mod hf_tokenizer;

use flate2::write::GzEncoder;
use kiln_runtime::text::{
    read_tsv, ClassOrder, Column, LabelKind, LabelledText, SkippedRow, TextBatch, TextCsvOptions,
    TokenStream, Tokenizer, Vocab,
};
use kiln_runtime::Error;
use std::io::Write;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-text-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const TWEETS: &str = "sentiment,confidence,text\n\
negative,0.75,I just don't trust it_\u{fffd}_.no thank you\n\
positive,0.9,\"Great, \"\"really\"\" great!\nSecond line\"\n\
neutral,0.5,\n\
negative,0.6,\"hate it, hate it!!!\"\n";

fn tweets_options() -> TextCsvOptions {
    TextCsvOptions {
        label: "sentiment".into(),
        text: "text".into(),
        ..TextCsvOptions::default()
    }
}

#[test]
fn quoted_fields_with_commas_quotes_and_newlines() {
    for (name, bytes) in [
        ("tweets.csv", TWEETS.as_bytes().to_vec()),
        ("tweets.csv.gz", gzip(TWEETS.as_bytes())),
    ] {
        let path = temp(name, &bytes);
        let data = LabelledText::read_csv(&path, &tweets_options()).unwrap();
        assert_eq!(data.len(), 4);
        assert_eq!(data.classes(), ["negative", "positive", "neutral"]);
        assert_eq!(data.labels(), [0, 1, 2, 0]);
        assert_eq!(data.texts()[1], "Great, \"really\" great!\nSecond line");
        assert_eq!(data.texts()[2], "");
        assert_eq!(data.skipped().count, 0);
    }
}

#[test]
fn class_orders_integers_and_fixed_classes() {
    let sorted = TextCsvOptions {
        labels: LabelKind::Names(ClassOrder::Sorted),
        ..tweets_options()
    };
    let data = LabelledText::from_csv_str(TWEETS, &sorted).unwrap();
    assert_eq!(data.classes(), ["negative", "neutral", "positive"]);
    assert_eq!(data.labels(), [0, 2, 1, 0]);

    let fixed = TextCsvOptions {
        labels: LabelKind::Classes(vec!["positive".into(), "negative".into()]),
        ..tweets_options()
    };
    let error = LabelledText::from_csv_str(TWEETS, &fixed).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 5, column 0: unknown label `neutral` (the classes are positive, negative)"
    );

    let integers = TextCsvOptions {
        header: false,
        labels: LabelKind::Integers { classes: None },
        ..TextCsvOptions::default()
    };
    let data = LabelledText::from_csv_str(" 3 ,a\n0,b\n", &integers).unwrap();
    assert_eq!(data.classes(), ["0", "1", "2", "3"]);
    assert_eq!(data.labels(), [3, 0]);
    let error = LabelledText::from_csv_str("1,a\nx,b\n", &integers).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2, column 0: label `x` is not a class number (0, 1, ...)"
    );
}

#[test]
fn malformed_rows_are_errors_naming_the_line() {
    // The quoted field spans lines 2-3: the bad row starts on line 4.
    let missing = "label,text\npos,\"two\nlines\"\nneg\npos,fine\n";
    let error = LabelledText::from_csv_str(missing, &TextCsvOptions::default()).unwrap_err();
    assert!(matches!(error, Error::File { .. }));
    assert_eq!(
        error.to_string(),
        "<string>: line 4: 1 field where the header has 2 (a line break in a text that is not \
         quoted?)"
    );

    let mut bad_utf8 = b"label,text\npos,good\nneg,bad \xff\xfe bytes\n".to_vec();
    bad_utf8.extend_from_slice(b"pos,fine\n");
    let path = temp("bad_utf8.csv", &bad_utf8);
    let error = LabelledText::read_csv(&path, &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 3, column 1: the text is not valid UTF-8 (at byte 4 of the cell)",
            path.display()
        )
    );

    let empty_label = "label,text\n,text\n";
    let error = LabelledText::from_csv_str(empty_label, &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2, column 0: the label is empty"
    );

    let error = LabelledText::from_csv_str(
        "label,body\npos,x\n",
        &TextCsvOptions {
            text: "text".into(),
            ..TextCsvOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 1: the header has no text column `text` (its columns: label, body)"
    );

    let error = LabelledText::from_csv_str("label,text\n", &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 1: no data rows after the header line"
    );
}

#[test]
fn skip_mode_counts_and_reports_malformed_rows() {
    let mut text = b"label,text\npos,good\nneg\nneg,bad \xff\npos,\"multi\nline\"\n".to_vec();
    text.extend_from_slice(b",no label\nneg,ok\n");
    let path = temp("skip.csv.gz", &gzip(&text));
    let options = TextCsvOptions {
        skip_malformed: true,
        ..TextCsvOptions::default()
    };
    let data = LabelledText::read_csv(&path, &options).unwrap();
    assert_eq!(data.texts(), ["good", "multi\nline", "ok"]);
    assert_eq!(data.labels(), [0, 0, 1]);
    let skipped = data.skipped();
    assert_eq!(skipped.count, 3);
    let lines: Vec<u64> = skipped.first.iter().map(|row| row.line).collect();
    assert_eq!(lines, [3, 4, 7]);
    assert!(skipped.first[1].reason.contains("not valid UTF-8"));

    let all_bad = LabelledText::from_csv_str("label,text\nx\ny\n", &options).unwrap_err();
    assert_eq!(
        all_bad.to_string(),
        "<string>: every one of the 2 rows is malformed (line 2: 1 field where the header has 2 \
         (a line break in a text that is not quoted?))"
    );
}

#[test]
fn lines_are_the_file_lines_after_blank_lines_crlf_multi_line_cells_and_a_bom() {
    let error = |text: &str| {
        LabelledText::from_csv_str(text, &TextCsvOptions::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("stars,review\npositive,a\n\n\n\nnegative\n"),
        "<string>: line 6: 1 field where the header has 2 (a line break in a text that is not \
         quoted?)"
    );
    assert_eq!(
        error("stars,review\r\npositive,a\r\n\r\nnegative\r\n"),
        "<string>: line 4: 1 field where the header has 2 (a line break in a text that is not \
         quoted?)"
    );
    // The quoted cell spans lines 3-5, and a blank line follows it.
    assert_eq!(
        error("\u{feff}label,text\n\npos,\"one\n\ntwo\"\n\nneg,x,y\n"),
        "<string>: line 7: 3 fields where the header has 2 (quote a text that contains commas)"
    );

    // Every kind of malformed row, and skip_malformed's report, after a blank line: a file
    // of 600 rows whose line 2 is blank.
    let mut text = b"\xef\xbb\xbflabel,text\n\n".to_vec();
    for i in 0..600 {
        text.extend_from_slice(format!("{},row {i}\n", ["pos", "neg"][i % 2]).as_bytes());
    }
    let with_row = |row: &[u8]| {
        let mut bytes = text.clone();
        bytes.extend_from_slice(row);
        bytes.extend_from_slice(b"\r\npos,last\r\n");
        bytes
    };
    let fixed = TextCsvOptions {
        labels: LabelKind::Classes(vec!["pos".into(), "neg".into()]),
        ..TextCsvOptions::default()
    };
    for (row, message) in [
        (&b"neg"[..], "line 603: 1 field where the header has 2"),
        (
            &b"neg,bad \xff"[..],
            "line 603, column 1: the text is not valid UTF-8",
        ),
        (&b"meh,so-so"[..], "line 603, column 0: unknown label `meh`"),
    ] {
        let path = temp("600.csv.gz", &gzip(&with_row(row)));
        let error = LabelledText::read_csv(&path, &fixed).unwrap_err();
        let expected = format!("{}: {message}", path.display());
        assert!(error.to_string().starts_with(&expected), "{error}");
        let skipping = TextCsvOptions {
            skip_malformed: true,
            ..fixed.clone()
        };
        let data = LabelledText::read_csv(&path, &skipping).unwrap();
        assert_eq!(data.len(), 601);
        assert_eq!(data.skipped().first[0].line, 603);
    }

    // Without a header, the byte-order mark is not part of the first label.
    let no_header = TextCsvOptions {
        header: false,
        ..TextCsvOptions::default()
    };
    let data = LabelledText::from_csv_str("\u{feff}pos,a\npos,b\n", &no_header).unwrap();
    assert_eq!(data.classes(), ["pos"]);
}

#[test]
fn rows_with_more_or_fewer_fields_than_the_header_are_malformed() {
    let text = "label,text\npositive,great\npositive,great,extra cell\nnegative,bad\n";
    let error = LabelledText::from_csv_str(text, &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 3: 3 fields where the header has 2 (quote a text that contains commas)"
    );
    let skipping = TextCsvOptions {
        skip_malformed: true,
        ..TextCsvOptions::default()
    };
    let data = LabelledText::from_csv_str(text, &skipping).unwrap();
    assert_eq!(data.texts(), ["great", "bad"]);
    assert_eq!(
        data.skipped().first,
        [SkippedRow {
            line: 3,
            reason: "3 fields where the header has 2 (quote a text that contains commas)".into()
        }]
    );

    // Without a header, the first row sets the number.
    let no_header = TextCsvOptions {
        header: false,
        ..TextCsvOptions::default()
    };
    let error = LabelledText::from_csv_str("a,b,c\nd,e\n", &no_header).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2: 2 fields where the first row has 3 (a line break in a text that is \
         not quoted?)"
    );
    // Tab-separated, without quoting.
    let tsv = TextCsvOptions {
        delimiter: b'\t',
        quoting: false,
        ..TextCsvOptions::default()
    };
    let error = LabelledText::from_csv_str("y\tx\na\tb\tc\n", &tsv).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2: 3 fields where the header has 2 (a text that contains tabs?)"
    );
    // A trailing delimiter on every line is one more (empty) field on every line: fine.
    let data = LabelledText::from_csv_str("label,text,\npos,a,\n", &TextCsvOptions::default());
    assert_eq!(data.unwrap().texts(), ["a"]);
}

#[test]
fn a_quote_that_is_never_closed_is_malformed() {
    let text = "label,text\npos,fine\nneg,\"oops\npos,swallowed\nneg,too\n";
    let error = LabelledText::from_csv_str(text, &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 3: the quoted cell is never closed, so the rest of the file is one cell \
         (a stray `\"`?)"
    );
    // The row starts on line 2, the second cell's quote on line 3.
    let later = "label,text\n\"pos\n\",\"oops\npos,swallowed\n";
    let error = LabelledText::from_csv_str(later, &TextCsvOptions::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2: the quoted cell opened on line 3 is never closed, so the rest of the \
         file is one cell (a stray `\"`?)"
    );
    let skipping = TextCsvOptions {
        skip_malformed: true,
        ..TextCsvOptions::default()
    };
    let data = LabelledText::from_csv_str(text, &skipping).unwrap();
    assert_eq!(data.texts(), ["fine"]);
    assert_eq!(data.skipped().count, 1);
    // Closed at the very end, without a final line break: fine.
    let data = LabelledText::from_csv_str("label,text\npos,\"a\nb\"", &TextCsvOptions::default());
    assert_eq!(data.unwrap().texts(), ["a\nb"]);
}

#[test]
fn columns_are_numbered_from_0_in_messages_and_label_and_text_differ() {
    let read = |label: Column, text: Column| {
        let options = TextCsvOptions {
            label,
            text,
            ..TextCsvOptions::default()
        };
        LabelledText::from_csv_str("stars,review\n5,good\n", &options)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        read(Column::Index(5), Column::Index(1)),
        "<string>: line 1: no label column 5: the header has columns 0 and 1"
    );
    assert_eq!(
        read(Column::Index(1), Column::Index(1)),
        "<string>: line 1: the label and the text are the same column, 1 (`review`)"
    );
    assert_eq!(
        read("review".into(), Column::Index(1)),
        "<string>: line 1: the label and the text are the same column, 1 (`review`)"
    );
    let no_header = TextCsvOptions {
        header: false,
        label: Column::Index(0),
        text: Column::Index(2),
        ..TextCsvOptions::default()
    };
    let error = LabelledText::from_csv_str("\n5,good\n", &no_header).unwrap_err();
    assert_eq!(
        error.to_string(),
        "<string>: line 2: no text column 2: the first row has columns 0 and 1"
    );
}

#[test]
fn corrupt_gzip_is_an_error() {
    let mut bytes = gzip(TWEETS.as_bytes());
    bytes.truncate(bytes.len() / 2);
    let path = temp("corrupt.csv.gz", &bytes);
    let error = LabelledText::read_csv(&path, &tweets_options()).unwrap_err();
    assert!(matches!(error, Error::File { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot read"), "{error}");
}

fn numbered(n: usize) -> LabelledText {
    LabelledText::new(
        (0..n).map(|i| "x ".repeat(i % 7)).collect(),
        (0..n).map(|i| i % 3).collect(),
        vec!["a".into(), "b".into(), "c".into()],
    )
}

#[test]
fn split_is_deterministic_and_partitions() {
    let data = numbered(100);
    let a = data.split(0.8, 0.1, 5);
    let b = data.split(0.8, 0.1, 5);
    let c = data.split(0.8, 0.1, 6);
    assert_eq!(a, b);
    assert_ne!(a.train, c.train);
    assert_eq!(
        (a.train.len(), a.validation.len(), a.test.len()),
        (80, 10, 10)
    );
    assert_eq!(a.test.classes(), data.classes());
    let rounding = numbered(7).split(0.5, 0.25, 1);
    assert_eq!(
        (
            rounding.train.len(),
            rounding.validation.len(),
            rounding.test.len()
        ),
        (4, 2, 1)
    );
}

#[test]
fn loader_batches_pad_to_each_batch_and_shuffle_by_seed() {
    let data = LabelledText::new(
        vec![
            "a".into(),
            "a b c".into(),
            "".into(),
            "b b".into(),
            "c".into(),
        ],
        vec![0, 1, 0, 1, 0],
        vec!["x".into(), "y".into()],
    );
    let vocab = Vocab::builder(Tokenizer::Words).build(data.texts());
    let encoded = data.encode(&vocab);
    assert_eq!(encoded.sequence(2), [] as [usize; 0]);
    let batches: Vec<TextBatch> = encoded.loader(2).epoch(0).collect();
    assert_eq!(batches.len(), 3);
    // "b" is the most frequent (3), then "a" and "c" (2 each).
    assert_eq!(batches[0].tokens, ndarray::array![[3, 0, 0], [3, 2, 4]]);
    assert_eq!(batches[0].lengths.to_vec(), [1, 3]);
    assert_eq!(batches[1].tokens, ndarray::array![[0, 0], [2, 2]]);
    assert_eq!(batches[1].lengths.to_vec(), [1, 2]);
    assert_eq!(batches[2].labels.to_vec(), [0]);

    let loader = encoded.loader(2).shuffle(3).drop_last(true).max_len(2);
    assert_eq!(loader.batches_per_epoch(), 2);
    let first: Vec<TextBatch> = loader.epoch(0).collect();
    assert_eq!(first, loader.epoch(0).collect::<Vec<_>>());
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|b| b.tokens.ncols() <= 2));
    let epochs_differ = (1..10).any(|e| loader.epoch(e).collect::<Vec<_>>() != first);
    assert!(epochs_differ);

    // next_into reuses its buffers once they are large enough.
    let mut batch = TextBatch::default();
    let mut epoch = encoded.loader(2).epoch(0);
    assert!(epoch.next_into(&mut batch));
    let pointer = batch.tokens.as_ptr();
    assert!(epoch.next_into(&mut batch));
    assert_eq!(batch.tokens.as_ptr(), pointer);
    assert_eq!(batch, batches[1]);
    assert!(epoch.next_into(&mut batch));
    assert!(!epoch.next_into(&mut batch));
}

#[test]
fn tsv_tables_and_errors() {
    let text = "novel\tline\nemma\tEMMA\nemma\t\npersuasion\t\"Oh!\" said she, \"no\r\n";
    let path = temp("books.tsv.gz", &gzip(text.as_bytes()));
    let table = read_tsv(&path).unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(
        table
            .joined_where("line", "novel", "persuasion", "\n")
            .unwrap(),
        "\"Oh!\" said she, \"no"
    );
    assert!(table.joined("text", "\n").is_err());

    // The same file as a labelled data set: which novel is a line from?
    let options = TextCsvOptions {
        delimiter: b'\t',
        quoting: false,
        label: "novel".into(),
        text: Column::from("line"),
        ..TextCsvOptions::default()
    };
    let data = LabelledText::read_csv(&path, &options).unwrap();
    assert_eq!(data.classes(), ["emma", "persuasion"]);
    assert_eq!(data.texts()[2], "\"Oh!\" said she, \"no");

    let bad = temp("bad.tsv", b"novel\tline\nemma\tone\ttwo\n");
    let error = read_tsv(&bad).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 2: 3 cells, but the header has 2 columns",
            bad.display()
        )
    );
}

/// The real files in `../shared/data` (relative to the workspace), when they are there.
#[test]
#[ignore = "needs the shared data files"]
fn real_files_load() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let tweets = LabelledText::read_csv(
        dir.join("tweets_sentiment.csv.gz"),
        &TextCsvOptions {
            labels: LabelKind::Names(ClassOrder::Sorted),
            skip_malformed: true,
            ..tweets_options()
        },
    )
    .unwrap();
    let mut counts = vec![0; tweets.classes().len()];
    for &label in tweets.labels() {
        counts[label] += 1;
    }
    println!(
        "tweets: {} texts, classes {:?}, counts {counts:?}, skipped {:?}",
        tweets.len(),
        tweets.classes(),
        tweets.skipped()
    );
    assert_eq!(tweets.len(), 38_158);
    let start = std::time::Instant::now();
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .min_freq(2)
        .build(tweets.texts());
    let encoded = tweets.encode(&vocab);
    println!(
        "tweets vocabulary: {} tokens (min_freq 2), built and encoded in {:?}",
        vocab.len(),
        start.elapsed()
    );
    assert_eq!(encoded.len(), tweets.len());

    let austen = read_tsv(dir.join("austen.tsv.gz")).unwrap();
    let text = austen.joined("line", "\n").unwrap();
    let emma = austen.joined_where("line", "novel", "emma", "\n").unwrap();
    let vocab = Vocab::builder(Tokenizer::Chars).build([&text]);
    let start = std::time::Instant::now();
    let stream = TokenStream::encode(&vocab, &text);
    println!(
        "austen: {} lines, {} chars ({} in emma), {} character ids, encoded in {:?}",
        austen.len(),
        stream.len(),
        emma.chars().count(),
        vocab.len(),
        start.elapsed()
    );
    let (train, validation) = stream.split(0.9);
    let (x, y) = train.sampler(32, 256, 0).unwrap().next_batch();
    assert_eq!((x.dim(), y.dim()), ((32, 256), (32, 256)));
    println!(
        "austen windows of 256: {} validation batches of 32",
        validation.windows(32, 256).len()
    );
}

#[test]
fn warm_encoding_and_batching_allocate_nothing() {
    let _exclusive = counting::exclusive();
    let data = numbered(20);
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .build(["The Quick brown fox!!! ÉTÉ 😀"]);
    let mut ids = Vec::with_capacity(64);
    let allocations = counting::allocations_in(|| {
        vocab.encode_into("THE quick Fox!!! été ÉTÉ 😀 unknown", &mut ids);
    });
    assert_eq!(allocations, 0);
    assert_eq!(ids.len(), 10);

    let encoded = data.encode(&vocab);
    let loader = encoded.loader(4).shuffle(1);
    let mut batch = TextBatch::default();
    let mut epoch = loader.epoch(0);
    // Warm the buffers with the epoch's largest batch.
    while epoch.next_into(&mut batch) {}
    let mut epoch = loader.epoch(1);
    let allocations = counting::allocations_in(|| while epoch.next_into(&mut batch) {});
    assert_eq!(allocations, 0);

    let stream = TokenStream::new((0..100).collect());
    let mut sampler = stream.sampler(4, 8, 0).unwrap();
    let (mut x, mut y) = sampler.next_batch();
    let allocations = counting::allocations_in(|| sampler.next_into(&mut x, &mut y));
    assert_eq!(allocations, 0);
}
