//! Serves a trained digit classifier over HTTP, with a page to draw digits on.
//!
//! ```text
//! cargo run --release --example digits -- --mnist examples/data/mnist10k  # train LeNet-5
//! cargo run --release --example serve                 # http://127.0.0.1:8080
//! cargo run --release --example serve -- --load-test  # 10,000 requests, 32 clients
//! ```
//!
//! Options: `--model PATH` (default: `target/kiln-digits-mnist/lenet5.safetensors` when it
//! exists, else `target/kiln-digits/digits_cnn.safetensors`), `--port N` (default 8080; 0 picks a free
//! port), `--batch-wait-us N` (how long the inference thread waits for more requests once it
//! has one, default 1000), `--max-batch N` (default 64; 1 turns batching off),
//! `--load-test` with `--requests N` and `--concurrency N`.
//!
//! The server listens on 127.0.0.1 only. Endpoints:
//!
//! - `GET /`: the drawing page (`examples/serve/index.html`, compiled into the binary);
//! - `GET /health`: `{"status":"ok"}`;
//! - `GET /info`: the model's name, its input side (28 or 8) and the range of a pixel value;
//! - `POST /predict` with `{"pixels": [...]}` (side × side values, row-major, white stroke on
//!   black): `{"probabilities": [10 values], "class": k}`, or 400 with `{"error": "..."}`.
//!
//! Connections are HTTP/1.1 with keep-alive, one thread each. Handler threads queue requests
//! for one inference thread, which takes up to 64 of them at a time and runs them as one batch
//! (with the model's workspace reused from batch to batch). `tests/examples/serving.rs` tests the API and
//! the page, in headless Chromium.

use kiln::ndarray::{ArrayView1, ArrayView4};
use kiln::{Supervised, TargetView};
use serde_json::{json, Value};
use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

#[path = "models/digits.rs"]
mod models;
use models::{DigitsCnn, LeNet5};

/// The drawing page, compiled into the binary.
const INDEX_HTML: &str = include_str!("serve/index.html");

/// Where the `digits` example writes the 8x8 CNN's weights.
pub const DEFAULT_DIR: &str = "target/kiln-digits";

/// Where `digits --mnist` writes LeNet-5's weights.
pub const MNIST_DIR: &str = "target/kiln-digits-mnist";

/// The largest batch the inference thread runs, by default.
pub const MAX_BATCH: usize = 64;

/// The largest request body accepted (a 784-value JSON array is about 5 KiB).
const MAX_BODY: usize = 1 << 20;

/// The longest request line or header accepted.
const MAX_LINE: u64 = 8 << 10;

/// The most connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 256;

/// How long an idle keep-alive connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an error answer, how long the server keeps reading (and discarding) what the client
/// still sends, and how much of it at most.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * MAX_BODY;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The weights to serve; `None` picks the trained LeNet-5 in [`MNIST_DIR`], else the 8x8
    /// CNN in [`DEFAULT_DIR`].
    pub model: Option<PathBuf>,
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// How long the inference thread waits for more requests once it has one.
    pub batch_wait: Duration,
    /// The most requests run as one batch (1 turns batching off).
    pub max_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model: None,
            port: 8080,
            batch_wait: Duration::from_micros(1000),
            max_batch: MAX_BATCH,
        }
    }
}

/// Which of the two models is served, and what its input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// LeNet-5: 28x28 pixels in 0..1, as MNIST.
    LeNet5,
    /// The small CNN of the bundled digits: 8x8 pixels in 0..16.
    DigitsCnn,
}

impl ModelKind {
    /// The model's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::LeNet5 => "LeNet5",
            Self::DigitsCnn => "DigitsCnn",
        }
    }

    /// The side of the square input image.
    pub fn side(self) -> usize {
        match self {
            Self::LeNet5 => 28,
            Self::DigitsCnn => 8,
        }
    }

    /// The largest pixel value (the smallest is 0).
    pub fn max_value(self) -> f32 {
        match self {
            Self::LeNet5 => 1.0,
            Self::DigitsCnn => 16.0,
        }
    }

    /// The number of pixels of one image.
    pub fn pixels(self) -> usize {
        self.side() * self.side()
    }
}

/// A running server: its port, its model, and [`Server::shutdown`].
pub struct Server {
    port: u16,
    kind: ModelKind,
    weights: PathBuf,
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
    inference: Option<JoinHandle<()>>,
}

impl Server {
    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The model served.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The weights file served.
    pub fn weights(&self) -> &Path {
        &self.weights
    }

    /// How many batches the inference thread has run.
    pub fn batches_run(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stops accepting connections and stops the inference thread; open connections get 503
    /// for further predictions and close when idle.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        for handle in [self.acceptor.take(), self.inference.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop_threads();
        }
    }
}

/// The weights [`Config::model`] `None` stands for: LeNet-5's if trained, else the 8x8 CNN's.
fn default_weights() -> Result<PathBuf, String> {
    let lenet = Path::new(MNIST_DIR).join("lenet5.safetensors");
    let small = Path::new(DEFAULT_DIR).join("digits_cnn.safetensors");
    if lenet.exists() {
        Ok(lenet)
    } else if small.exists() {
        Ok(small)
    } else {
        Err(format!(
            "no trained weights in {MNIST_DIR} or {DEFAULT_DIR}. Train LeNet-5 on MNIST first \
             (about 15 s):\n\n    \
             cargo run --release --example digits -- --mnist examples/data/mnist10k\n\n\
             (or `cargo run --release --example digits` for the 8x8 model), or pass --model PATH."
        ))
    }
}

/// One queued prediction: the pixels, and where to send the probabilities.
struct Job {
    pixels: Vec<f32>,
    reply: Sender<[f32; 10]>,
}

/// Loads the weights, starts the inference thread and the acceptor, and returns once the
/// server listens.
///
/// # Errors
/// No weights (the message gives the command that trains them), weights that fit neither
/// model, or a port that cannot be bound.
pub fn start(config: &Config) -> Result<Server, Box<dyn Error>> {
    let weights = match &config.model {
        Some(path) => path.clone(),
        None => default_weights()?,
    };
    if !weights.exists() {
        return Err(format!("no weights at {}", weights.display()).into());
    }
    let listener = TcpListener::bind(("127.0.0.1", config.port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", config.port))?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let arriving = Arc::new(AtomicUsize::new(0));
    let (jobs, queue) = mpsc::channel::<Job>();
    let batching = (config.batch_wait, config.max_batch.max(1));

    // io::load checks names and shapes, so the file says which model it holds.
    let mut lenet = LeNet5::<f32>::zeros();
    let (kind, inference) = match kiln::io::load(&mut lenet, &weights) {
        Ok(()) => {
            let counters = Counters::new(&stop, &batches, &arriving);
            let handle = thread::Builder::new()
                .name("inference".into())
                .spawn(move || {
                    run_inference(lenet, ModelKind::LeNet5, queue, batching, &counters)
                })?;
            (ModelKind::LeNet5, handle)
        }
        Err(lenet_error) => {
            let mut small = DigitsCnn::<f32>::zeros();
            kiln::io::load(&mut small, &weights).map_err(|small_error| {
                format!(
                    "{} holds neither model's weights.\nAs LeNet5: {lenet_error}\nAs DigitsCnn: \
                     {small_error}",
                    weights.display()
                )
            })?;
            let counters = Counters::new(&stop, &batches, &arriving);
            let handle = thread::Builder::new()
                .name("inference".into())
                .spawn(move || {
                    run_inference(small, ModelKind::DigitsCnn, queue, batching, &counters)
                })?;
            (ModelKind::DigitsCnn, handle)
        }
    };

    let info = json!({
        "model": kind.name(),
        "side": kind.side(),
        "min": 0.0,
        "max": kind.max_value(),
        "weights": weights.display().to_string(),
    })
    .to_string();
    let shared = Arc::new(Shared {
        kind,
        info,
        jobs,
        stop: Arc::clone(&stop),
        connections: AtomicUsize::new(0),
        arriving: Arc::clone(&arriving),
    });
    let acceptor = thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || accept_loop(&listener, &shared))?;
    Ok(Server {
        port,
        kind,
        weights,
        stop,
        batches,
        acceptor: Some(acceptor),
        inference: Some(inference),
    })
}

/// What every connection thread shares.
struct Shared {
    kind: ModelKind,
    info: String,
    /// Cloned once per connection.
    jobs: Sender<Job>,
    stop: Arc<AtomicBool>,
    connections: AtomicUsize,
    /// Requests whose first line has arrived but which are not queued yet.
    arriving: Arc<AtomicUsize>,
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = write_response(
                &mut stream,
                503,
                "application/json",
                br#"{"error":"too many connections"}"#,
                false,
            );
            continue;
        }
        let jobs = shared.jobs.clone();
        let mine = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                let _ = serve_connection(stream, &mine, &jobs);
                mine.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The closure and its stream are dropped: the client sees the connection close.
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What the inference thread shares with the server.
struct Counters {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicUsize>,
    arriving: Arc<AtomicUsize>,
}

impl Counters {
    fn new(
        stop: &Arc<AtomicBool>,
        batches: &Arc<AtomicUsize>,
        arriving: &Arc<AtomicUsize>,
    ) -> Self {
        Self {
            stop: Arc::clone(stop),
            batches: Arc::clone(batches),
            arriving: Arc::clone(arriving),
        }
    }
}

/// The inference thread: waits for a request, takes what else is queued, and, while other
/// requests are on their way (their first line has arrived), waits for them up to `wait`, up to
/// `max_batch` in all; runs them as one batch with a reused workspace and answers each.
///
/// It never waits for requests that have not started to arrive: when every client is waiting
/// for this batch, it runs at once.
fn run_inference<M: Supervised<f32>>(
    model: M,
    kind: ModelKind,
    queue: Receiver<Job>,
    (wait, max_batch): (Duration, usize),
    counters: &Counters,
) {
    let Counters {
        stop,
        batches,
        arriving,
    } = counters;
    let size = kind.pixels();
    let side = kind.side();
    let mut ws = M::Workspace::default();
    let mut input = vec![0.0f32; max_batch * size];
    let labels = vec![0usize; max_batch];
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while !stop.load(Ordering::SeqCst) {
        let first = match queue.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        // What is already waiting, then what arrives before the deadline.
        let deadline = Instant::now() + wait;
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => {
                    let now = Instant::now();
                    if now >= deadline || arriving.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    // Look again soon: the request on its way may fail to parse.
                    let slice = (deadline - now).min(Duration::from_micros(100));
                    match queue.recv_timeout(slice) {
                        Ok(job) => batch.push(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        let n = batch.len();
        batches.fetch_add(1, Ordering::Relaxed);
        for (slot, job) in input.chunks_exact_mut(size).zip(&batch) {
            slot.copy_from_slice(&job.pixels);
        }
        let probabilities = ArrayView4::from_shape((n, 1, side, side), &input[..n * size])
            .map_err(|e| e.to_string())
            .and_then(|x| {
                model
                    .eval_batch(
                        x.into_dyn(),
                        TargetView::Labels(ArrayView1::from(&labels[..n])),
                        &mut ws,
                    )
                    .and_then(|_| M::last_output(&ws))
                    .map_err(|e| e.to_string())
            });
        match probabilities {
            Ok(logits) => {
                for (row, job) in logits.outer_iter().zip(batch.drain(..)) {
                    let mut out = [0.0f32; 10];
                    for (o, l) in out.iter_mut().zip(row.iter()) {
                        *o = *l;
                    }
                    softmax(&mut out);
                    // A client that went away has dropped its receiver: nothing to do.
                    let _ = job.reply.send(out);
                }
            }
            Err(message) => {
                eprintln!("inference failed: {message}");
                // Dropping the jobs closes their reply channels: each handler answers 500.
                batch.clear();
            }
        }
    }
}

fn softmax(v: &mut [f32; 10]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// A parsed request: method, path, body, and whether to keep the connection open.
struct Request<'a> {
    method: String,
    path: String,
    body: Vec<u8>,
    keep_alive: bool,
    /// Counts a prediction request as arriving until it is queued or answered.
    arriving: Option<Arriving<'a>>,
}

/// Counts one request in [`Shared::arriving`] while it lives.
struct Arriving<'a>(&'a AtomicUsize);

impl<'a> Arriving<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a request could not be read.
enum ReadError {
    /// The client closed the connection or went idle: close quietly.
    Closed,
    /// A malformed request: answer with this status and message, then close.
    Bad(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> Result<usize, ReadError> {
    line.clear();
    // Read bytes, not a String: `BufRead::read_line` fails on bytes that are not UTF-8 with an
    // I/O error, which would close the connection without telling the client why.
    let mut bytes = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut bytes)?;
    if n as u64 == MAX_LINE && !bytes.ends_with(b"\n") {
        return Err(ReadError::Bad(
            431,
            "a request line or header is too long".into(),
        ));
    }
    *line = String::from_utf8(bytes).map_err(|_| {
        ReadError::Bad(
            400,
            "the request line or a header is not valid UTF-8".into(),
        )
    })?;
    Ok(n)
}

fn read_request<'a>(
    reader: &mut BufReader<TcpStream>,
    arriving: &'a AtomicUsize,
) -> Result<Request<'a>, ReadError> {
    let mut line = String::new();
    // Skip blank lines between requests (RFC 9112 allows them).
    loop {
        if read_line(reader, &mut line)? == 0 {
            return Err(ReadError::Closed);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "malformed request line".into()));
    };
    let (method, version) = (method.to_string(), version.to_string());
    let path = target.split('?').next().unwrap_or("").to_string();
    let arriving = (method == "POST" && path == "/predict").then(|| Arriving::new(arriving));
    let mut keep_alive = version == "HTTP/1.1";
    let mut length: Option<usize> = None;
    for _ in 0..100 {
        if read_line(reader, &mut line)? == 0 {
            return Err(ReadError::Closed);
        }
        let header = line.trim_end();
        if header.is_empty() {
            // Without a length the body's end is unknown: reading it as empty would leave its
            // bytes on the connection, to be parsed as the next request.
            let length = match length {
                Some(length) => length,
                None if method == "POST" => {
                    return Err(ReadError::Bad(
                        411,
                        "a POST needs a Content-Length header".into(),
                    ))
                }
                None => 0,
            };
            if length > MAX_BODY {
                return Err(ReadError::Bad(
                    413,
                    format!("the body has {length} bytes; the limit is {MAX_BODY}"),
                ));
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            return Ok(Request {
                method,
                path,
                body,
                keep_alive,
                arriving,
            });
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(ReadError::Bad(400, format!("malformed header `{header}`")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let this: usize = value.parse().map_err(|_| {
                    ReadError::Bad(400, format!("Content-Length `{value}` is not a number"))
                })?;
                // Two different lengths leave the body's end unknown (RFC 9112 §6.3); a
                // repeated identical one is harmless.
                if length.is_some_and(|earlier| earlier != this) {
                    return Err(ReadError::Bad(
                        400,
                        "conflicting Content-Length headers".into(),
                    ));
                }
                length = Some(this);
            }
            "transfer-encoding" => {
                return Err(ReadError::Bad(
                    411,
                    "chunked bodies are not supported: send Content-Length".into(),
                ));
            }
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
    }
    Err(ReadError::Bad(431, "too many headers".into()))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)
}

fn error_body(message: &str) -> Vec<u8> {
    json!({ "error": message }).to_string().into_bytes()
}

fn serve_connection(stream: TcpStream, shared: &Shared, jobs: &Sender<Job>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let (reply, replies) = mpsc::channel();
    loop {
        let request = match read_request(&mut reader, &shared.arriving) {
            Ok(request) => request,
            Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Bad(status, message)) => {
                let body = error_body(&message);
                write_response(&mut writer, status, "application/json", &body, false)?;
                linger(reader, &writer);
                return Ok(());
            }
        };
        let keep_alive = request.keep_alive && !shared.stop.load(Ordering::SeqCst);
        let (status, content_type, body): (u16, &str, Vec<u8>) =
            match (request.method.as_str(), request.path.as_str()) {
                ("GET", "/") | ("GET", "/index.html") => (
                    200,
                    "text/html; charset=utf-8",
                    INDEX_HTML.as_bytes().to_vec(),
                ),
                ("GET", "/health") => (200, "application/json", br#"{"status":"ok"}"#.to_vec()),
                ("GET", "/info") => (200, "application/json", shared.info.as_bytes().to_vec()),
                ("POST", "/predict") => match parse_pixels(&request.body, shared.kind) {
                    Err(message) => (400, "application/json", error_body(&message)),
                    Ok(pixels) => {
                        // No longer arriving once queued: the batcher must not wait for it.
                        drop(request.arriving);
                        let queued = jobs.send(Job {
                            pixels,
                            reply: reply.clone(),
                        });
                        let answer = queued.ok().and_then(|()| replies.recv().ok());
                        match answer {
                            Some(probabilities) => {
                                (200, "application/json", prediction_body(&probabilities))
                            }
                            None => (
                                503,
                                "application/json",
                                error_body("the model is not running"),
                            ),
                        }
                    }
                },
                (_, "/" | "/index.html" | "/health" | "/info" | "/predict") => (
                    405,
                    "application/json",
                    error_body(&format!(
                        "{} is not allowed on {}",
                        request.method, request.path
                    )),
                ),
                _ => (
                    404,
                    "application/json",
                    error_body(&format!("no such path: {}", request.path)),
                ),
            };
        write_response(&mut writer, status, content_type, &body, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Closes a connection whose request was refused without losing the answer. The client may
/// still be sending (the body of a request answered 413 or 411): closing a socket with unread
/// bytes makes the kernel reset the connection, and a reset can discard the answer before the
/// client reads it. So the server ends its side (the client sees the answer, then the end of
/// the stream) and reads what still arrives, for at most [`LINGER`] and [`LINGER_BYTES`].
fn linger(mut reader: BufReader<TcpStream>, writer: &TcpStream) {
    if writer.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0;
    let mut sink = [0u8; 16 << 10];
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || reader.get_ref().set_read_timeout(Some(left)).is_err() {
            return;
        }
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

fn prediction_body(probabilities: &[f32; 10]) -> Vec<u8> {
    let mut class = 0;
    for (k, p) in probabilities.iter().enumerate() {
        if *p > probabilities[class] {
            class = k;
        }
    }
    json!({ "probabilities": probabilities, "class": class })
        .to_string()
        .into_bytes()
}

/// Checks a `/predict` body: a JSON object whose `pixels` holds exactly the model's number of
/// finite values in its range. The error names the problem.
fn parse_pixels(body: &[u8], kind: ModelKind) -> Result<Vec<f32>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Some(pixels) = value.get("pixels") else {
        return Err("expected a JSON object with a `pixels` array".into());
    };
    let Some(pixels) = pixels.as_array() else {
        return Err("`pixels` must be an array of numbers".into());
    };
    let (side, max) = (kind.side(), kind.max_value());
    if pixels.len() != kind.pixels() {
        return Err(format!(
            "`pixels` has {} values; {} takes {} ({side}x{side}, row-major)",
            pixels.len(),
            kind.name(),
            kind.pixels()
        ));
    }
    pixels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let Some(v) = p.as_f64() else {
                return Err(format!("pixels[{i}] is not a number: {p}"));
            };
            if !v.is_finite() {
                return Err(format!("pixels[{i}] is not finite"));
            }
            if !(0.0..=f64::from(max)).contains(&v) {
                return Err(format!("pixels[{i}] = {v} is outside 0..{max}"));
            }
            Ok(v as f32)
        })
        .collect()
}

struct Args {
    config: Config,
    load_test: bool,
    requests: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: Config::default(),
        load_test: false,
        requests: 10_000,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    let number = |name: &str, value: Option<String>| -> Result<u64, String> {
        let value = value.ok_or(format!("{name} needs a number"))?;
        value
            .parse()
            .map_err(|_| format!("{name}: `{value}` is not a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--model" => args.config.model = Some(it.next().ok_or("--model needs a path")?.into()),
            "--port" => {
                args.config.port = u16::try_from(number("--port", it.next())?)
                    .map_err(|_| "--port must be at most 65535".to_string())?;
            }
            "--batch-wait-us" => {
                args.config.batch_wait =
                    Duration::from_micros(number("--batch-wait-us", it.next())?)
            }
            "--max-batch" => args.config.max_batch = number("--max-batch", it.next())? as usize,
            "--load-test" => args.load_test = true,
            "--requests" => args.requests = number("--requests", it.next())? as usize,
            "--concurrency" => {
                args.concurrency = (number("--concurrency", it.next())? as usize).max(1)
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --model PATH, --port N, --batch-wait-us N, \
                     --max-batch N, --load-test, --requests N, --concurrency N)"
                ))
            }
        }
    }
    Ok(args)
}

const USAGE: &str = "\
usage: cargo run --release --example serve -- [OPTIONS]

Serves a trained digit classifier over HTTP on 127.0.0.1, with a page to draw digits on, or
with --load-test measures it under concurrent requests.

  --model PATH          the weights (default: target/kiln-digits-mnist/lenet5.safetensors,
                        else target/kiln-digits/digits_cnn.safetensors)
  --port N              the port (default: 8080; 0 picks a free one)
  --batch-wait-us N     how long to wait for more requests once one is queued (default: 1000)
  --max-batch N         the most requests run as one batch (default: 64; 1 turns batching off)
  --load-test           start on a free port, send predictions of test digits, report, exit
  --requests N          predictions the load test sends (default: 10000)
  --concurrency N       client connections of the load test (default: 32)
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    // The connection threads need the second core more than a batch of a small model needs a
    // kernel helper thread (measured: the helper costs throughput here). KILN_THREADS=2 overrides.
    // Set before any other thread starts.
    if std::env::var_os("KILN_THREADS").is_none() {
        std::env::set_var("KILN_THREADS", "1");
    }
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = parse_args()?;
    if args.load_test {
        args.config.port = 0;
        let server = start(&args.config)?;
        println!(
            "serving {} ({}) on {}",
            server.kind().name(),
            server.weights().display(),
            server.url()
        );
        let samples = test_samples(server.kind())?;
        let report = load_test(server.port(), &samples, args.requests, args.concurrency)?;
        println!("{report}");
        println!(
            "{} batches, {:.1} requests per batch on average",
            server.batches_run(),
            args.requests as f64 / server.batches_run().max(1) as f64
        );
        server.shutdown();
        if report.errors > 0 {
            return Err(format!("{} requests failed", report.errors).into());
        }
        return Ok(());
    }
    let server = start(&args.config)?;
    println!(
        "serving {} ({}) on {}",
        server.kind().name(),
        server.weights().display(),
        server.url()
    );
    println!("open {}/ and draw a digit; Ctrl-C stops", server.url());
    // The server runs on its threads until the process is stopped.
    loop {
        thread::park();
    }
}

/// A digit's pixels and its label.
pub type Sample = (Vec<f32>, usize);

/// Held-out digits for the model's input: MNIST's test digits (the shipped 2,000) for LeNet-5,
/// the 20% of the bundled 8x8 digits the `digits` example holds out (360) for the small CNN.
/// Pixels with their labels.
pub fn test_samples(kind: ModelKind) -> Result<Vec<Sample>, Box<dyn Error>> {
    let data = match kind {
        ModelKind::LeNet5 => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/mnist10k");
            kiln::data::mnist::<f32>(dir)?.1
        }
        ModelKind::DigitsCnn => {
            kiln::data::stratified_split(&kiln::data::digits::<f32>()?, 0.2, 0).1
        }
    };
    let labels = data.labels().ok_or("digits have labels")?;
    let size = kind.pixels();
    let features = data.features().as_slice().ok_or("features are row-major")?;
    Ok(features
        .chunks_exact(size)
        .zip(labels.iter())
        .map(|(p, &l)| (p.to_vec(), l))
        .collect())
}

/// What a load test measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: usize,
    /// Client threads, each with one keep-alive connection.
    pub concurrency: usize,
    /// Requests that failed (connection error, status other than 200, unreadable answer).
    pub errors: usize,
    /// Answers whose class was the sample's label.
    pub correct: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ok = self.requests - self.errors;
        write!(
            f,
            "{} requests, {} concurrent connections: {} errors\n\
             throughput {:.0} requests/s ({:.2} s)\n\
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             accuracy of the answers {:.4} ({} of {})",
            self.requests,
            self.concurrency,
            self.errors,
            self.requests as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.correct as f64 / ok.max(1) as f64,
            self.correct,
            ok,
        )
    }
}

/// Sends `requests` predictions of `samples` (in turn) from `concurrency` threads, each over
/// one keep-alive connection, and measures each request's latency.
///
/// # Errors
/// Only if a client thread cannot be started or panics; failed requests are counted.
pub fn load_test(
    port: u16,
    samples: &[Sample],
    requests: usize,
    concurrency: usize,
) -> Result<LoadReport, Box<dyn Error>> {
    if samples.is_empty() {
        return Err("no samples to send".into());
    }
    let bodies: Vec<(String, usize)> = samples
        .iter()
        .map(|(p, l)| (json!({ "pixels": p }).to_string(), *l))
        .collect();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<(Vec<Duration>, usize, usize)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                let (next, bodies) = (&next, &bodies);
                scope.spawn(move || {
                    let mut client = None;
                    let (mut latencies, mut errors, mut correct) = (Vec::new(), 0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break;
                        }
                        let (body, label) = &bodies[i % bodies.len()];
                        let t = Instant::now();
                        match predict(&mut client, port, body) {
                            Ok(class) => {
                                latencies.push(t.elapsed());
                                correct += usize::from(class == *label);
                            }
                            Err(_) => {
                                errors += 1;
                                client = None;
                            }
                        }
                    }
                    (latencies, errors, correct)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (Vec::new(), usize::MAX, 0)))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = Vec::with_capacity(requests);
    let (mut errors, mut correct) = (0usize, 0usize);
    for (l, e, c) in results {
        latencies.extend(l);
        errors = errors.saturating_add(e);
        correct += c;
    }
    errors = errors.min(requests);
    latencies.sort();
    let quantile = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(LoadReport {
        requests,
        concurrency,
        errors,
        correct,
        elapsed,
        p50: quantile(0.5),
        p99: quantile(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

/// One `POST /predict` over the kept connection (opened if there is none); the class answered.
fn predict(
    client: &mut Option<BufReader<TcpStream>>,
    port: u16,
    body: &str,
) -> Result<usize, Box<dyn Error>> {
    if client.is_none() {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        *client = Some(BufReader::new(stream));
    }
    let reader = client.as_mut().ok_or("no connection")?;
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(request.as_bytes())?;
    let (status, answer) = read_response(reader)?;
    if status != 200 {
        return Err(format!("status {status}").into());
    }
    let value: Value = serde_json::from_slice(&answer)?;
    let class = value["class"].as_u64().ok_or("no class in the answer")?;
    Ok(class as usize)
}

/// Reads one HTTP response with a Content-Length body: the status and the body.
pub fn read_response(reader: &mut impl BufRead) -> Result<(u16, Vec<u8>), Box<dyn Error>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err("the server closed the connection".into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed status line `{}`", line.trim_end()))?;
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("the server closed the connection".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}
