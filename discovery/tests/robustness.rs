//! Robustness: no input makes `strait-discovery` panic or hang, and every input gets clean
//! findings.
//!
//! A deterministic, dependency-free fuzz test of the loader and the validator
//! (`resources::load_text`, then `validation::validate`). It feeds them:
//!
//! - truncations of a seed corpus (realistic Istio documents written below, plus Istio's own
//!   corpus at `../shared/corpus/istio` when it is present): every char boundary of a short seed,
//!   and for a long one ~200 evenly spread boundaries plus every boundary in its first 300 bytes;
//! - mutations of the seeds: byte edits; line edits (delete, duplicate, swap, move, re-indent);
//!   token edits; YAML indicators; scalars replaced by numbers, booleans, null, huge numbers, very
//!   long strings, unicode and control characters; odd and duplicate keys; maps turned into lists
//!   and back; anchors and aliases (undefined, self-referential, chained, merge keys); tags;
//!   directives and document markers; nesting a few hundred levels deep;
//! - random input: structured random documents made of Istio field names and values, a token
//!   soup of YAML syntax and Istio words, and random bytes read lossily as UTF-8;
//! - targeted cases: an alias bomb, 10,000 nested `[`, a 10 MB scalar, NUL bytes, a BOM, CRLF
//!   line endings, tabs as indentation, bare scalar and list documents, `---` storms, maps with
//!   integer keys, unknown keys holding control characters, and nesting at and past the
//!   reader's depth limit on a thread with a 2 MiB stack (in a child process, as a stack
//!   overflow aborts).
//!
//! Every input must load and validate without panicking and within [`HANG_LIMIT`], and its
//! findings must be clean: a code and a non-empty message, a known line within the input (its
//! line count + 1), the input's own file name, and a field path free of control characters and
//! line breaks.
//!
//! The random streams are seeded. `STRAIT_FUZZ_SEED` (decimal or `0x` hex) sets the seed and
//! `STRAIT_FUZZ_ITERATIONS` the number of mutated inputs (the random streams run half as many);
//! `STRAIT_FUZZ_VERBOSE=1` names every input before it runs (to find the input behind a crash
//! that cannot be caught, such as a stack overflow). The seed is printed; a failure names the
//! stream and the case, prints where a panic happened, minimises the input and saves both under
//! `CARGO_TARGET_TMPDIR/robustness/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use strait_discovery::findings::{Finding, Level};
use strait_discovery::resources::{LoadOptions, Loaded, load_text};
use strait_discovery::validation::{ValidateOptions, validate};

/// One input taking longer than this (load + validate, debug build) fails the test. A hang
/// guard, not a performance assertion.
const HANG_LIMIT: Duration = Duration::from_secs(5);
/// How long to wait for one input before calling it a hang and abandoning the worker thread.
const GIVE_UP: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x5713_a17f_0220_c0de;
const DEFAULT_ITERATIONS: usize = 15_000;
/// Seeds longer than this are cut at spread boundaries rather than at every one.
const LONG_SEED: usize = 1200;
/// The worker's stack: a main thread's, where `strait validate` reads configuration. How much
/// stack deep nesting needs is tested on its own, with the default 2 MiB
/// (`yaml_nested_to_the_depth_limit_fits_a_two_megabyte_thread_stack`), because a stack
/// overflow aborts the whole test process rather than failing one input.
const WORKER_STACK: usize = 8 << 20;

// ------------------------------------------------------------------------------------------
// Deterministic randomness

/// SplitMix64: small, fast and good enough to drive a fuzzer.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    /// The generator for case `case` of stream `stream`: a case reads the same whatever the
    /// iteration count, so a failing case reproduces from the seed and its number alone.
    fn for_case(seed: u64, stream: &str, case: usize) -> Rng {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in stream.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = Rng(seed ^ hash ^ (case as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn word(&mut self, words: &[&'static str]) -> &'static str {
        words[self.below(words.len())]
    }
}

struct Config {
    seed: u64,
    iterations: usize,
    verbose: bool,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let seed = match std::env::var("STRAIT_FUZZ_SEED") {
            Ok(text) => parse_number(&text)
                .unwrap_or_else(|| panic!("STRAIT_FUZZ_SEED={text:?} is not a number")),
            Err(_) => DEFAULT_SEED,
        };
        let iterations = match std::env::var("STRAIT_FUZZ_ITERATIONS") {
            Ok(text) => parse_number(&text)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or_else(|| panic!("STRAIT_FUZZ_ITERATIONS={text:?} is not a number")),
            Err(_) => DEFAULT_ITERATIONS,
        };
        let verbose = std::env::var_os("STRAIT_FUZZ_VERBOSE").is_some_and(|v| v != "0");
        eprintln!(
            "robustness: seed {seed:#x} (STRAIT_FUZZ_SEED), {iterations} mutated inputs \
             (STRAIT_FUZZ_ITERATIONS)"
        );
        Config {
            seed,
            iterations,
            verbose,
        }
    })
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// ------------------------------------------------------------------------------------------
// Running one input: on a worker thread, under catch_unwind, timed

struct Job {
    file: Arc<str>,
    text: Arc<str>,
}

struct Caught {
    message: String,
    location: String,
    backtrace: String,
}

struct Done {
    result: Result<Vec<Finding>, Caught>,
    elapsed: Duration,
}

enum Outcome {
    Finished {
        findings: Vec<Finding>,
        elapsed: Duration,
    },
    Panicked(Caught),
    Hung,
}

thread_local! {
    /// Set on worker threads: their panics are recorded instead of printed.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Backtraces are costly; only the first few panics get one.
static BACKTRACES: AtomicUsize = AtomicUsize::new(0);

fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAPTURING.with(Cell::get) {
                previous(info);
                return;
            }
            let location = info
                .location()
                .map_or_else(|| "an unknown location".to_owned(), ToString::to_string);
            let backtrace = if BACKTRACES.fetch_add(1, Ordering::Relaxed) < 6 {
                relevant_frames(&Backtrace::force_capture().to_string())
            } else {
                String::new()
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some((location, backtrace)));
        }));
    });
}

/// The frames of a backtrace that are in this workspace or in the YAML reader.
fn relevant_frames(backtrace: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in backtrace.lines() {
        let trimmed = line.trim_start();
        let is_frame = trimmed
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_frame {
            keep = ["strait", "saphyr", "serde"]
                .iter()
                .any(|needle| trimmed.contains(needle))
                && !trimmed.contains("robustness::");
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

/// What the test drives: read the text as the file `file`, then validate what was read.
fn load_and_validate(file: &Arc<str>, text: &str) -> Vec<Finding> {
    let mut loaded = Loaded::default();
    load_text(file, text, &LoadOptions::default(), &mut loaded);
    let mut findings = loaded.findings;
    findings.extend(validate(&loaded.objects, &ValidateOptions::default()));
    findings
}

fn worker(jobs: Receiver<Job>, done: Sender<Done>) {
    CAPTURING.with(|capturing| capturing.set(true));
    for job in jobs {
        let start = Instant::now();
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| load_and_validate(&job.file, &job.text)));
        let elapsed = start.elapsed();
        let result = result.map_err(|payload| {
            let (location, backtrace) = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_default();
            Caught {
                message: payload_text(&*payload),
                location,
                backtrace,
            }
        });
        if done.send(Done { result, elapsed }).is_err() {
            return;
        }
    }
}

/// A worker thread that runs one input at a time, so that a hang can be noticed from outside.
struct Runner {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

impl Runner {
    fn new() -> Runner {
        install_panic_hook();
        let (jobs, job_queue) = mpsc::channel();
        let (done_sender, done) = mpsc::channel();
        thread::Builder::new()
            .name("robustness-worker".to_owned())
            .stack_size(WORKER_STACK)
            .spawn(move || worker(job_queue, done_sender))
            .expect("cannot start the worker thread");
        Runner { jobs, done }
    }

    fn run(&self, file: &str, text: &Arc<str>) -> Outcome {
        let job = Job {
            file: Arc::from(file),
            text: text.clone(),
        };
        if self.jobs.send(job).is_err() {
            return Outcome::Hung;
        }
        match self.done.recv_timeout(GIVE_UP) {
            Ok(Done {
                result: Ok(findings),
                elapsed,
            }) => Outcome::Finished { findings, elapsed },
            Ok(Done {
                result: Err(caught),
                ..
            }) => Outcome::Panicked(caught),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Outcome::Hung,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Invariants

/// What is wrong with the outcome of one input: `(signature, detail)` pairs, where the
/// signature groups failures of one kind (one panic location, one broken invariant and code).
fn problems(file: &str, text: &str, outcome: &Outcome) -> Vec<(String, String)> {
    match outcome {
        Outcome::Hung => vec![(
            "hang".to_owned(),
            format!("did not finish within {GIVE_UP:?}"),
        )],
        Outcome::Panicked(caught) => vec![(
            format!("panic at {}", caught.location),
            format!(
                "panicked at {}: {}\n{}",
                caught.location,
                caught.message,
                indent(&caught.backtrace, "      ")
            ),
        )],
        Outcome::Finished { findings, elapsed } => {
            let mut out = Vec::new();
            if *elapsed > HANG_LIMIT {
                out.push((
                    "slow".to_owned(),
                    format!("took {elapsed:?}, more than {HANG_LIMIT:?}"),
                ));
            }
            let lines = line_count(text);
            for finding in findings {
                for broken in finding_problems(file, lines, finding) {
                    out.push((
                        format!("{broken} ({})", finding.code),
                        format!("{broken}: {}", shown_finding(finding)),
                    ));
                }
            }
            out
        }
    }
}

fn finding_problems(file: &str, lines: usize, finding: &Finding) -> Vec<&'static str> {
    let mut out = Vec::new();
    if finding.code.is_empty() {
        out.push("a finding without a code");
    }
    if finding.message.trim().is_empty() {
        out.push("a finding without a message");
    }
    if finding.position.line != 0 && finding.position.line as usize > lines + 1 {
        out.push("a finding on a line past the end of the input");
    }
    if finding.file.as_deref().is_some_and(|f| f != file) {
        out.push("a finding naming another file");
    }
    if !finding.field.is_empty() && !plausible_field(&finding.field) {
        out.push("a field path with control characters or line breaks");
    }
    out
}

/// A field path is shown on one line after `file:line:col: level: object:`; quoted keys are
/// escaped. Control characters and line breaks have no place in it.
fn plausible_field(field: &str) -> bool {
    !field
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Lines in the input, counting every break a YAML reader might count (`\n`, `\r\n`, a lone
/// `\r`, and the YAML 1.1 breaks NEL, LS and PS), so that the bound is generous.
fn line_count(text: &str) -> usize {
    let mut lines = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines += 1,
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines += 1;
            }
            _ => {}
        }
    }
    lines
}

fn shown_finding(finding: &Finding) -> String {
    format!(
        "{} [code {:?}, line {}, column {}, field {:?}]",
        preview(&finding.to_string(), 300),
        finding.code,
        finding.position.line,
        finding.position.column,
        preview(&finding.field, 120),
    )
}

/// The start of `text`, escaped, for a one-line report.
fn preview(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(max_chars).collect();
        format!("{head:?}... ({count} chars in all)")
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

// ------------------------------------------------------------------------------------------
// A session: one stream of inputs, its failures, and the report

struct Failure {
    signature: String,
    detail: String,
    case: String,
    file: String,
    input: Arc<str>,
}

struct Session {
    stream: &'static str,
    runner: Runner,
    failures: Vec<Failure>,
    by_signature: BTreeMap<String, usize>,
    cases: usize,
    /// Inputs that were read as YAML (no `yaml-syntax` finding), so reached the typed reading.
    read_as_yaml: usize,
    slowest: (Duration, String),
    started: Instant,
    stopped: bool,
}

impl Session {
    fn new(stream: &'static str) -> Session {
        let config = config();
        eprintln!(
            "robustness[{stream}]: seed {:#x}, {} mutated inputs",
            config.seed, config.iterations
        );
        Session {
            stream,
            runner: Runner::new(),
            failures: Vec::new(),
            by_signature: BTreeMap::new(),
            cases: 0,
            read_as_yaml: 0,
            slowest: (Duration::ZERO, String::new()),
            started: Instant::now(),
            stopped: false,
        }
    }

    /// Runs one input and checks the invariants. Returns the findings when it finished.
    fn check(&mut self, case: impl fmt::Display, file: &str, text: &str) -> Option<Vec<Finding>> {
        if self.stopped {
            return None;
        }
        let case = case.to_string();
        if config().verbose {
            eprintln!(
                "robustness[{}]: {case} ({file}, {} bytes)",
                self.stream,
                text.len()
            );
        }
        self.cases += 1;
        let input: Arc<str> = Arc::from(text);
        let outcome = self.runner.run(file, &input);
        if let Outcome::Finished { elapsed, .. } = &outcome
            && *elapsed > self.slowest.0
        {
            self.slowest = (*elapsed, case.clone());
        }
        for (signature, detail) in problems(file, text, &outcome) {
            let seen = self.by_signature.entry(signature.clone()).or_default();
            *seen += 1;
            if *seen <= 3 {
                self.failures.push(Failure {
                    signature,
                    detail,
                    case: case.clone(),
                    file: file.to_owned(),
                    input: input.clone(),
                });
            }
        }
        match outcome {
            Outcome::Finished { findings, .. } => {
                if !findings.iter().any(|f| f.code == "yaml-syntax") {
                    self.read_as_yaml += 1;
                }
                Some(findings)
            }
            Outcome::Hung => {
                // The worker is stuck; a new one would compete with it for the CPU.
                self.stopped = true;
                None
            }
            Outcome::Panicked(_) => None,
        }
    }

    fn finish(self, test: &str) {
        let config = config();
        eprintln!(
            "robustness[{}]: {} inputs ({} read as YAML) in {:.1?}; slowest {:.1?} ({})",
            self.stream,
            self.cases,
            self.read_as_yaml,
            self.started.elapsed(),
            self.slowest.0,
            self.slowest.1
        );
        if self.failures.is_empty() {
            return;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness");
        let _ = std::fs::create_dir_all(&dir);
        let mut report = String::new();
        let mut reported = BTreeSet::new();
        for (n, failure) in self.failures.iter().enumerate() {
            if !reported.insert(failure.signature.clone()) {
                continue;
            }
            let saved = dir.join(format!("{}-{n}.yaml", self.stream));
            let _ = std::fs::write(&saved, failure.input.as_bytes());
            let minimal = match failure.signature.as_str() {
                "hang" | "slow" => None,
                signature => Some(minimise(
                    &self.runner,
                    &failure.file,
                    &failure.input,
                    signature,
                )),
            };
            let _ = writeln!(
                report,
                "\nFAILURE [{}] x{} in stream {}, case {} (file name {:?})\n  {}\n  input \
                 ({} bytes, saved as {}): {}",
                failure.signature,
                self.by_signature[&failure.signature],
                self.stream,
                failure.case,
                failure.file,
                failure.detail.trim_end(),
                failure.input.len(),
                saved.display(),
                preview(&failure.input, 400),
            );
            if let Some(minimal) = minimal {
                let saved = dir.join(format!("{}-{n}.min.yaml", self.stream));
                let _ = std::fs::write(&saved, minimal.as_bytes());
                let _ = writeln!(
                    report,
                    "  minimised ({} bytes, saved as {}): {}",
                    minimal.len(),
                    saved.display(),
                    preview(&minimal, 400)
                );
            }
        }
        eprintln!("{report}");
        panic!(
            "{} robustness failure(s) of {} kind(s) in stream {} (see above); reproduce with \
             STRAIT_FUZZ_SEED={:#x} STRAIT_FUZZ_ITERATIONS={} cargo test -p strait-discovery \
             --test robustness {test} -- --nocapture",
            self.by_signature.values().sum::<usize>(),
            self.by_signature.len(),
            self.stream,
            config.seed,
            config.iterations,
        );
    }
}

/// A smaller input with the same problem: whole lines removed first, then characters.
fn minimise(runner: &Runner, file: &str, input: &str, signature: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut still_fails = |candidate: &str| {
        let text: Arc<str> = Arc::from(candidate);
        let outcome = runner.run(file, &text);
        problems(file, candidate, &outcome)
            .iter()
            .any(|(s, _)| s == signature)
    };
    let lines: Vec<&str> = input.split_inclusive('\n').collect();
    let lines = reduce(lines, |units| units.concat(), &mut still_fails, deadline);
    let text = lines.concat();
    if text.len() > 20_000 {
        return text;
    }
    let chars: Vec<char> = text.chars().collect();
    reduce(
        chars,
        |units| units.iter().collect(),
        &mut still_fails,
        deadline,
    )
    .into_iter()
    .collect()
}

/// Removes chunks of units, halving the chunk size, while the rendered rest still fails.
fn reduce<T: Clone>(
    mut units: Vec<T>,
    render: impl Fn(&[T]) -> String,
    still_fails: &mut impl FnMut(&str) -> bool,
    deadline: Instant,
) -> Vec<T> {
    let mut chunk = (units.len() / 2).max(1);
    loop {
        let mut removed = false;
        let mut at = 0;
        while at < units.len() {
            if Instant::now() > deadline {
                return units;
            }
            let end = (at + chunk).min(units.len());
            let mut candidate = units[..at].to_vec();
            candidate.extend_from_slice(&units[end..]);
            if still_fails(&render(&candidate)) {
                units = candidate;
                removed = true;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            if !removed {
                return units;
            }
        } else {
            chunk /= 2;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The seed corpus

struct Seed {
    name: String,
    file: String,
    text: String,
}

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: istio-system
  labels:
    app: bookinfo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "bookinfo.example.com"
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - "bookinfo.example.com"
    - "default/*.example.org"
    tls:
      mode: SIMPLE
      credentialName: bookinfo-cert
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites:
      - ECDHE-RSA-AES256-GCM-SHA384
      - ECDHE-ECDSA-AES128-GCM-SHA256
  - port:
      number: 8443
      name: https-mtls
      protocol: HTTPS
    hosts:
    - "secure.example.com"
    tls:
      mode: MUTUAL
      serverCertificate: /etc/istio/certs/server.pem
      privateKey: /etc/istio/certs/key.pem
      caCertificates: /etc/istio/certs/ca.pem
      subjectAltNames:
      - spiffe://cluster.local/ns/default/sa/client
  - port:
      number: 15443
      name: tls-passthrough
      protocol: TLS
    hosts:
    - "*.global"
    tls:
      mode: AUTO_PASSTHROUGH
"#;

const VIRTUAL_SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
  annotations:
    owner: bookinfo-team
spec:
  hosts:
  - reviews
  - reviews.example.com
  gateways:
  - istio-system/bookinfo-gateway
  - mesh
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
      uri:
        prefix: /reviews
      method:
        regex: "GET|HEAD"
      queryParams:
        debug:
          exact: "1"
      ignoreUriCase: true
    - uri:
        exact: /healthz
      port: 9080
      sourceLabels:
        app: productpage
    rewrite:
      uri: /
    route:
    - destination:
        host: reviews
        subset: v2
        port:
          number: 9080
      weight: 90
      headers:
        response:
          set:
            x-served-by: v2
    - destination:
        host: reviews
        subset: v3
      weight: 10
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream
    fault:
      delay:
        fixedDelay: 5s
        percentage:
          value: 10.5
      abort:
        httpStatus: 503
        percentage:
          value: 0.1
    mirror:
      host: reviews-shadow
      subset: v1
    mirrorPercentage:
      value: 25.0
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: "https://.*\\.example\\.org"
      allowMethods:
      - GET
      - POST
      allowHeaders:
      - x-custom-header
      exposeHeaders:
      - x-trace-id
      maxAge: 24h
      allowCredentials: true
    headers:
      request:
        add:
          x-request-source: mesh
        remove:
        - x-debug
  - name: legacy
    match:
    - uri:
        prefix: /v1/
    redirect:
      uri: /v2/
      authority: reviews.example.com
      redirectCode: 301
  - name: teapot
    match:
    - uri:
        exact: /teapot
    directResponse:
      status: 418
      body:
        string: "I'm a teapot"
  - route:
    - destination:
        host: reviews
        subset: v1
  tls:
  - match:
    - port: 443
      sniHosts:
      - reviews.example.com
    route:
    - destination:
        host: reviews
        port:
          number: 443
  tcp:
  - match:
    - port: 3306
      sourceLabels:
        app: ratings
    route:
    - destination:
        host: mysqldb.default.svc.cluster.local
        port:
          number: 3306
"#;

const DESTINATION_RULE: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  exportTo:
  - "."
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to:
            "us-west/zone1/*": 80
            "us-west/zone2/*": 20
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          time: 7200s
          interval: 75s
      http:
        http1MaxPendingRequests: 1024
        http2MaxRequests: 1024
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 60s
        h2UpgradePolicy: UPGRADE
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 5
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
    tls:
      mode: ISTIO_MUTUAL
    portLevelSettings:
    - port:
        number: 9080
      loadBalancer:
        consistentHash:
          httpCookie:
            name: user
            ttl: 0s
      connectionPool:
        tcp:
          maxConnections: 50
    - port:
        number: 9443
      tls:
        mode: SIMPLE
        sni: reviews.example.com
        caCertificates: /etc/certs/ca.pem
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
  - name: v3
    labels:
      version: v3
      track: canary
    trafficPolicy:
      loadBalancer:
        localityLbSetting:
          enabled: true
          failover:
          - from: us-east
            to: us-west
      outlierDetection:
        consecutive5xxErrors: 3
        interval: 10s
        baseEjectionTime: 30s
"#;

const SERVICE_ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-mongocluster
  namespace: default
spec:
  hosts:
  - mymongodb.somedomain
  addresses:
  - 192.192.192.192/24
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  - number: 443
    name: https
    protocol: TLS
    targetPort: 8443
  location: MESH_INTERNAL
  resolution: STATIC
  exportTo:
  - "*"
  endpoints:
  - address: 2.2.2.2
    labels:
      version: v1
  - address: 3.3.3.3
    ports:
      mongodb: 27019
    network: network-2
    locality: us-east1/zone-b
    weight: 5
    serviceAccount: mongo
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: external-api
spec:
  hosts:
  - api.example.com
  - "*.wikipedia.org"
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  location: MESH_EXTERNAL
  resolution: NONE
"#;

const WORKLOAD_ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
  namespace: bookinfo
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
  ports:
    http: 9080
  network: vm-network
  locality: us-central1/us-central1-a
  weight: 10
"#;

const SIDECAR: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  - port:
      number: 9443
      protocol: HTTPS
      name: https
    defaultEndpoint: 127.0.0.1:8080
    captureMode: IPTABLES
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - "prod-us1/*"
  - hosts:
    - "istio-system/*"
    - "./*"
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"#;

const PEER_AUTHENTICATION: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
    "9090":
      mode: PERMISSIVE
"#;

const AUTHORIZATION_POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
        ipBlocks: ["10.0.0.0/8", "2001:db8::/32"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
        ports: ["8080"]
        hosts: ["httpbin.foo.svc.cluster.local"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
    - key: source.ip
      notValues: ["10.1.2.3"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: foo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        notPaths: ["/public/*"]
        notMethods: ["OPTIONS"]
"#;

const REQUEST_AUTHENTICATION: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "issuer-foo"
    jwksUri: https://example.com/.well-known/jwks.json
    audiences:
    - bookstore_android.apps.example.com
    - bookstore_web.apps.example.com
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams:
    - my_token
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-jwt-claim-foo
      claim: foo
  - issuer: "issuer-bar"
    jwks: '{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX"}]}'
    timeout: 5s
"#;

const MESH_CONFIG: &str = r#"# MeshConfig, as in the istio ConfigMap's `mesh` key.
accessLogFile: /dev/stdout
accessLogEncoding: JSON
enableTracing: true
enableAutoMtls: true
trustDomain: cluster.local
trustDomainAliases:
- old.example.com
rootNamespace: istio-system
connectTimeout: 10s
protocolDetectionTimeout: 100ms
outboundTrafficPolicy:
  mode: ALLOW_ANY
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  proxyMetadata:
    ISTIO_META_DNS_CAPTURE: "true"
  holdApplicationUntilProxyStarts: true
  concurrency: 2
  terminationDrainDuration: 5s
  tracing:
    sampling: 1.0
    zipkin:
      address: zipkin.istio-system:9411
extensionProviders:
- name: otel
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
- name: ext-authz
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 1s
    includeRequestHeadersInCheck:
    - x-ext-authz
- name: log
  envoyFileAccessLog:
    path: /dev/stdout
    logFormat:
      labels:
        status: "%RESPONSE_CODE%"
defaultProviders:
  tracing:
  - otel
  accessLogging:
  - log
localityLbSetting:
  enabled: true
  failover:
  - from: us-east1
    to: us-west1
"#;

const MESH_NETWORKS: &str = r#"networks:
  network1:
    endpoints:
    - fromRegistry: Kubernetes
    gateways:
    - address: 192.0.2.10
      port: 15443
  network2:
    endpoints:
    - fromCidr: 10.0.0.0/16
    - fromRegistry: cluster2
    gateways:
    - registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local
      port: 15443
      locality: us-east1
"#;

const LIST: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: ratings
  spec:
    hosts:
    - ratings
    http:
    - route:
      - destination:
          host: ratings
          subset: v1
- apiVersion: networking.istio.io/v1alpha3
  kind: DestinationRule
  metadata:
    name: ratings
  spec:
    host: ratings
    subsets:
    - name: v1
      labels:
        version: v1
- apiVersion: v1
  kind: Service
  metadata:
    name: ratings
  spec:
    ports:
    - port: 9080
- apiVersion: multicluster.x-k8s.io/v1alpha1
  kind: ServiceExport
  metadata:
    name: ratings
"#;

/// Several related objects in one file, so that the cross-object analysis has work to do.
const BOOKINFO: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts: ["*"]
  gateways: [bookinfo]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    route:
    - destination: {host: productpage, port: {number: 9080}, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: productpage
spec:
  host: productpage
  subsets:
  - {name: v1, labels: {version: v1}}
---
# A comment between documents.
...
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
"#;

/// JSON is YAML: a flow-style document.
const JSON_VIRTUAL_SERVICE: &str = r#"{
  "apiVersion": "networking.istio.io/v1",
  "kind": "VirtualService",
  "metadata": {"name": "details", "namespace": "default", "labels": {"app": "details"}},
  "spec": {
    "hosts": ["details"],
    "http": [
      {"match": [{"uri": {"prefix": "/details"}, "headers": {"x-canary": {"exact": "true"}}}],
       "route": [{"destination": {"host": "details", "subset": "v2"}, "weight": 100}],
       "retries": {"attempts": 2, "perTryTimeout": "500ms"}},
      {"route": [{"destination": {"host": "details", "subset": "v1"}}]}
    ]
  }
}
"#;

const BUILT_IN_SEEDS: &[(&str, &str, &str)] = &[
    ("gateway", "gateway.yaml", GATEWAY),
    ("virtual-service", "virtual-service.yaml", VIRTUAL_SERVICE),
    (
        "destination-rule",
        "destination-rule.yaml",
        DESTINATION_RULE,
    ),
    ("service-entry", "service-entry.yaml", SERVICE_ENTRY),
    ("workload-entry", "workload-entry.yaml", WORKLOAD_ENTRY),
    ("sidecar", "sidecar.yaml", SIDECAR),
    (
        "peer-authentication",
        "peer-authentication.yaml",
        PEER_AUTHENTICATION,
    ),
    (
        "authorization-policy",
        "authorization-policy.yaml",
        AUTHORIZATION_POLICY,
    ),
    (
        "request-authentication",
        "request-authentication.yaml",
        REQUEST_AUTHENTICATION,
    ),
    ("mesh-config", "mesh.yaml", MESH_CONFIG),
    ("mesh-networks", "mesh-networks.yaml", MESH_NETWORKS),
    ("list", "list.yaml", LIST),
    ("bookinfo", "bookinfo.yaml", BOOKINFO),
    ("json", "details.json", JSON_VIRTUAL_SERVICE),
];

/// The built-in seeds, then the `.yaml` files of Istio's corpus when it is present.
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Seed> = BUILT_IN_SEEDS
            .iter()
            .map(|(name, file, text)| Seed {
                name: (*name).to_owned(),
                file: (*file).to_owned(),
                text: (*text).to_owned(),
            })
            .collect();
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/istio");
        if corpus.is_dir() {
            let mut files = Vec::new();
            yaml_files(&corpus, &mut files);
            files.sort();
            let before = seeds.len();
            for path in files {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let name = path
                    .strip_prefix(&corpus)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let file = path
                    .file_name()
                    .map_or_else(|| "corpus.yaml".to_owned(), |n| n.to_string_lossy().into());
                seeds.push(Seed { name, file, text });
            }
            eprintln!(
                "robustness: Istio corpus found at {}: {} files added to the {} built-in seeds",
                corpus.display(),
                seeds.len() - before,
                before
            );
        } else {
            eprintln!(
                "robustness: Istio corpus not found at {}: using the {} built-in seeds only",
                corpus.display(),
                seeds.len()
            );
        }
        seeds
    })
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Vocabulary

const ISTIO_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "spec",
    "status",
    "items",
    "selector",
    "servers",
    "port",
    "number",
    "protocol",
    "targetPort",
    "hosts",
    "host",
    "bind",
    "defaultEndpoint",
    "tls",
    "mode",
    "httpsRedirect",
    "credentialName",
    "credentialNames",
    "serverCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "subjectAltNames",
    "minProtocolVersion",
    "maxProtocolVersion",
    "cipherSuites",
    "tlsCertificates",
    "gateways",
    "http",
    "tcp",
    "match",
    "route",
    "destination",
    "subset",
    "weight",
    "headers",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "uri",
    "exact",
    "prefix",
    "regex",
    "method",
    "authority",
    "scheme",
    "queryParams",
    "ignoreUriCase",
    "withoutHeaders",
    "sourceLabels",
    "sourceNamespace",
    "sniHosts",
    "destinationSubnets",
    "rewrite",
    "uriRegexRewrite",
    "redirect",
    "redirectCode",
    "derivePort",
    "directResponse",
    "status",
    "body",
    "string",
    "bytes",
    "delegate",
    "timeout",
    "retries",
    "attempts",
    "perTryTimeout",
    "retryOn",
    "fault",
    "delay",
    "fixedDelay",
    "percentage",
    "value",
    "percent",
    "abort",
    "httpStatus",
    "grpcStatus",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirror_percent",
    "corsPolicy",
    "allowOrigins",
    "allowOrigin",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
    "exportTo",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "consistentHash",
    "httpHeaderName",
    "httpCookie",
    "ttl",
    "useSourceIp",
    "ringHash",
    "minimumRingSize",
    "maglev",
    "tableSize",
    "localityLbSetting",
    "distribute",
    "failover",
    "failoverPriority",
    "from",
    "to",
    "enabled",
    "connectionPool",
    "maxConnections",
    "connectTimeout",
    "tcpKeepalive",
    "time",
    "interval",
    "http1MaxPendingRequests",
    "http2MaxRequests",
    "maxRequestsPerConnection",
    "maxRetries",
    "idleTimeout",
    "h2UpgradePolicy",
    "outlierDetection",
    "consecutive5xxErrors",
    "consecutiveGatewayErrors",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
    "portLevelSettings",
    "subsets",
    "sni",
    "insecureSkipVerify",
    "clientCertificate",
    "workloadSelector",
    "addresses",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "address",
    "network",
    "locality",
    "serviceAccount",
    "ingress",
    "egress",
    "captureMode",
    "outboundTrafficPolicy",
    "egressProxy",
    "mtls",
    "portLevelMtls",
    "matchLabels",
    "action",
    "rules",
    "source",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "operation",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
    "notPorts",
    "notHosts",
    "when",
    "key",
    "values",
    "notValues",
    "provider",
    "targetRef",
    "targetRefs",
    "group",
    "jwtRules",
    "issuer",
    "audiences",
    "jwksUri",
    "jwks_uri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "forwardOriginalToken",
    "outputClaimToHeaders",
    "header",
    "claim",
    "accessLogFile",
    "accessLogEncoding",
    "enableTracing",
    "enableAutoMtls",
    "trustDomain",
    "trustDomainAliases",
    "rootNamespace",
    "defaultConfig",
    "discoveryAddress",
    "proxyMetadata",
    "concurrency",
    "tracing",
    "sampling",
    "zipkin",
    "extensionProviders",
    "envoyExtAuthzHttp",
    "envoyExtAuthzGrpc",
    "opentelemetry",
    "envoyFileAccessLog",
    "logFormat",
    "text",
    "defaultProviders",
    "accessLogging",
    "metrics",
    "networks",
    "fromCidr",
    "fromRegistry",
    "registryServiceName",
    "meshMTLS",
    "tlsDefaults",
    "defaultHttpRetryPolicy",
    "serviceSettings",
    "settings",
    "clusterLocal",
    "ca",
    "discoverySelectors",
    "matchExpressions",
    "operator",
    "proxyListenPort",
    "proxyHttpPort",
    "ingressService",
    "ingressClass",
    "ingressControllerMode",
    "holdApplicationUntilProxyStarts",
    "terminationDrainDuration",
    "statusPort",
    "proxyStatsMatcher",
    "inclusionPrefixes",
    "<<",
];

const KINDS: &[(&str, &str)] = &[
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1beta1", "DestinationRule"),
    ("networking.istio.io/v1alpha3", "ServiceEntry"),
    ("networking.istio.io/v1", "WorkloadEntry"),
    ("networking.istio.io/v1", "Sidecar"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1beta1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "RequestAuthentication"),
    ("multicluster.x-k8s.io/v1alpha1", "ServiceExport"),
    ("v1", "List"),
    ("networking.istio.io/v1", "EnvoyFilter"),
    ("security.istio.io/v1alpha3", "AuthorizationPolicy"),
    ("networking.istio.io", "VirtualService"),
    ("/", "Gateway"),
    ("networking.istio.io/v1/", "Sidecar"),
    ("v1", "ConfigMapList"),
];

const ISTIO_VALUES: &[&str] = &[
    "reviews",
    "reviews.default.svc.cluster.local",
    "\"*.example.com\"",
    "\"*\"",
    "mesh",
    "istio-system/bookinfo-gateway",
    "istio-system/*",
    "./*",
    "~/*",
    "\"*/*\"",
    "v1",
    "v2",
    "HTTP",
    "HTTPS",
    "HTTP2",
    "GRPC",
    "TCP",
    "TLS",
    "MONGO",
    "UDP",
    "http",
    "https-443",
    "ISTIO_MUTUAL",
    "SIMPLE",
    "MUTUAL",
    "PASSTHROUGH",
    "AUTO_PASSTHROUGH",
    "OPTIONAL_MUTUAL",
    "DISABLE",
    "PERMISSIVE",
    "STRICT",
    "UNSET",
    "ALLOW",
    "DENY",
    "AUDIT",
    "CUSTOM",
    "MESH_EXTERNAL",
    "MESH_INTERNAL",
    "DNS",
    "STATIC",
    "NONE",
    "DNS_ROUND_ROBIN",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
    "RANDOM",
    "REGISTRY_ONLY",
    "ALLOW_ANY",
    "IPTABLES",
    "DEFAULT",
    "UPGRADE",
    "DO_NOT_UPGRADE",
    "TLSV1_2",
    "TLSV1_3",
    "TLS_AUTO",
    "JSON",
    "TEXT",
    "spiffe://cluster.local/ns/default/sa/sleep",
    "https://example.com/.well-known/jwks.json",
    "request.auth.claims[iss]",
    "source.ip",
    "10.0.0.0/8",
    "192.168.1.1",
    "2001:db8::1",
    "::/0",
    "unix:///var/run/app.sock",
    "127.0.0.1:8080",
    "us-east1/zone1/*",
    "5s",
    "100ms",
    "1h30m",
    "0s",
    "/api/v1",
    "/",
    "GET",
    "POST",
    "x-user",
    "Bearer ",
    "cluster.local",
    "Kubernetes",
    "gateway-error",
    "80",
    "443",
    "9080",
    "15443",
    "65535",
    "true",
    "false",
    "10.5",
    "100",
];

const ODD_SCALARS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "170141183460469231731687303715884105727",
    "170141183460469231731687303715884105728",
    "-170141183460469231731687303715884105729",
    "340282366920938463463374607431768211456",
    "99999999999999999999999999999999999999999999999999999999999999999999999999999",
    "1e309",
    "-1e309",
    "1e-400",
    "4.9e-324",
    "1.7976931348623157e308",
    ".inf",
    "-.inf",
    ".nan",
    ".NaN",
    "NaN",
    "0x7fffffff",
    "0xffffffffffffffffffff",
    "0o17",
    "0b101",
    "1_000",
    "1.5",
    "-1.5",
    "10.",
    ".5",
    "1e3",
    "+1",
    "00080",
    "0.0",
    "true",
    "false",
    "True",
    "FALSE",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "null",
    "Null",
    "NULL",
    "~",
    "''",
    "\"\"",
    "' '",
    "\"\\t\"",
    "\"\\0\"",
    "\"\\x00\\x01\\x1b\\x7f\"",
    "\"\\u0000\"",
    "\"\\u2028\\u2029\"",
    "\"\\e[31mred\\e[0m\"",
    "\"\\N\\L\\P\\_\"",
    "\"\\uD800\"",
    "\"\\uDFFF\"",
    "\"\\U0010FFFF\"",
    "\"\\U00110000\"",
    "\"\\UFFFFFFFF\"",
    "\"\\x\"",
    "\"\\\"",
    "\"\\q\"",
    "\"a\\\nb\"",
    "'it''s'",
    "\"\\\"quoted\\\"\"",
    "!!binary aGVsbG8=",
    "!!binary ===",
    "!!float 1",
    "!!float x",
    "!!int \"x\"",
    "!!int 99999999999999999999999999999999999999999",
    "!!str 80",
    "!!null \"\"",
    "!!bool maybe",
    "!!timestamp 2001-12-14t21:59:43.10-05:00",
    "!!set {a, b}",
    "!!omap [a: 1, b: 2]",
    "!!map []",
    "!!seq {}",
    "!custom x",
    "!<tag:yaml.org,2002:str> x",
    "!<> x",
    "!! x",
    "[]",
    "{}",
    "[a, b]",
    "{a: 1}",
    "[[[]]]",
    "{? a}",
    "[a: b]",
    "[1.2.3.4, 2001:db8::]",
    "{a, b: }",
    "(",
    "[a-",
    "a{1000}{1000}",
    "(?i)x",
    "\\p{Foo}",
    ".*",
    "^$",
    "(((((((((((a)))))))))))",
    "x{2147483647}",
    "10.0.0.0/33",
    "::1/129",
    "1.2.3.4/-1",
    "999.1.1.1",
    "fe80::1%eth0",
    "[::1]:80",
    "0.0.0.0/0",
    "1.2.3",
    "::ffff:1.2.3.4",
    "1h",
    "-1s",
    "1.5s",
    "99999999999999999999h",
    "1.2.3s",
    "1µs",
    "10",
    "1e3s",
    "5 s",
    "1d",
    ".",
    "..",
    "*.",
    "a..b",
    "*.*.com",
    "-a.com",
    "a-.com",
    "ns/host",
    "/",
    "a/b/c",
    "*/",
    "./",
    "~/",
    "http://",
    "spiffe://",
    "%",
    "%%",
    "%RESPONSE_CODE%",
    "@",
    "`",
    "ünïcødé",
    "日本語のホスト",
    "🦀.example.com",
    "\u{202e}evil",
    "zero\u{200b}width",
    "e\u{301}",
    "\u{feff}bom",
    "ﬁ",
    "İstanbul",
    "ß",
    "\u{10ffff}",
    "\u{fffd}",
    "a\u{0}b",
    "\u{1}",
    "\u{7}",
    "\u{8}",
    "\u{b}",
    "\u{c}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{2029}",
    "\u{fffe}",
    "\u{ffff}",
    "a\tb",
    "a\rb",
    "- x",
    ": x",
    "a: b",
    "# x",
    "a #b",
    "&x",
    "*x",
    "|",
    ">",
    "|-",
    ">+2",
    "?",
    "'unterminated",
    "\"unterminated",
    "---",
    "...",
    "<<",
];

/// Scalars of every YAML type that are well-formed wherever a value goes.
const TYPED_SCALARS: &[&str] = &[
    "0",
    "-1",
    "65536",
    "4294967296",
    "99999999999999999999999999999999999999999",
    "1.5",
    "1e309",
    ".inf",
    ".nan",
    "0x10",
    "true",
    "no",
    "null",
    "~",
    "''",
    "\"\"",
    "\"80\"",
    "\"\\t\\u0000\"",
    "\"ünï\"",
    "'日本'",
    "[]",
    "{}",
    "[1, [2]]",
    "{a: 1}",
    "!!str 1",
    "!!binary aGk=",
];

const ODD_KEYS: &[&str] = &[
    "80",
    "0",
    "-1",
    "1.5",
    "1e3",
    "true",
    "false",
    "null",
    "~",
    "\"\"",
    "''",
    "\"a\\nb\"",
    "\"a\\rb\"",
    "\"\\t\"",
    "\"a\\u0000b\"",
    "\"\\u2028\"",
    "\"\\x1b[2J\"",
    "\"spec.http[0]\"",
    "\"[\\\"x\\\"]\"",
    "\"a.b\"",
    "\"a b\"",
    "\" spec\"",
    "日本",
    "🦀",
    "\u{202e}kind",
    "? [a, b]",
    "? {a: b}",
    "[a, b]",
    "{a: b}",
    "*a",
    "&k key",
    "!!int 5",
    "!!str spec",
    "!!binary aGk=",
    "<<",
    "\"<<\"",
    "\"*\"",
    "-",
    "- x",
    "?",
    "'''",
    "\"\\\"\"",
    "a:b",
    "HOSTS",
    "Hosts",
    "host_name",
    "hots",
    "spce",
    "metdata",
    "apiversion",
    "Kind",
];

const INDICATORS: &[&str] = &[
    ": ", ":", "- ", "-", "[", "]", "{", "}", ",", "&", "*", "!", "|", ">", "'", "\"", "#", "%",
    "@", "`", "?", "? ", "---", "...", "\t", "\n", "\r", "\r\n", "\\", "&a ", "*a", "!!", "|-",
    ">+", "<<: ", "\u{feff}", "\u{0}", "\u{85}", "\u{2028}",
];

const SOUP_SYNTAX: &[&str] = &[
    "\n",
    "\n",
    "\n",
    "  ",
    "  ",
    "    ",
    " ",
    ": ",
    ": ",
    "- ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "!!str ",
    "!!int ",
    "!!map ",
    "!!seq ",
    "!custom ",
    "|\n",
    "|-\n",
    ">\n",
    "# comment\n",
    "---\n",
    "...\n",
    "? ",
    "'",
    "\"",
    "%YAML 1.2\n",
    "%TAG ! tag:example.com,2000:\n",
    "<<: ",
    "@",
    "`",
    "\t",
    "\r\n",
    "\\",
    "\u{feff}",
];

// ------------------------------------------------------------------------------------------
// Mutation

fn odd_scalar(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 | 1 => (*rng.pick(ISTIO_VALUES)).to_owned(),
        2 => {
            // A very long string, plain, quoted, or a very long host name.
            let n = *rng.pick(&[1_000, 5_000, 20_000, 70_000]);
            match rng.below(4) {
                0 => "x".repeat(n),
                1 => format!("\"{}\"", "y".repeat(n)),
                2 => "a.".repeat(n / 2) + "com",
                _ => "word ".repeat(n / 5),
            }
        }
        3 => {
            // A number with many digits.
            let digits = rng.range(20, 400);
            let mut s = String::from(if rng.one_in(2) { "-" } else { "" });
            for i in 0..digits {
                s.push(char::from(
                    b'0' + (rng.below(10) as u8 + u8::from(i == 0)).min(9),
                ));
            }
            s
        }
        _ => (*rng.pick(ODD_SCALARS)).to_owned(),
    }
}

fn odd_key(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 | 1 => (*rng.pick(ISTIO_FIELDS)).to_owned(),
        2 => {
            // A misspelt field.
            let mut chars: Vec<char> = rng.pick(ISTIO_FIELDS).chars().collect();
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(at, char::from(b'a' + rng.below(26) as u8)),
                _ => chars[at] = '_',
            }
            chars.into_iter().collect()
        }
        3 if rng.one_in(4) => "k".repeat(rng.range(1_000, 10_000)),
        _ => (*rng.pick(ODD_KEYS)).to_owned(),
    }
}

fn split_lines(text: &str) -> Vec<String> {
    text.split('\n').map(str::to_owned).collect()
}

fn leading_spaces(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Where the key of a `key: value` line (after any `- `) starts and ends.
fn key_range(line: &str) -> Option<(usize, usize)> {
    let mut start = leading_spaces(line);
    while line[start..].starts_with("- ") {
        start += 2;
    }
    let rest = &line[start..];
    let end = rest
        .find(": ")
        .or_else(|| rest.trim_end().strip_suffix(':').map(str::len))?;
    (end > 0).then_some((start, start + end))
}

/// Where the value of a `key: value` or `- value` line starts and ends.
fn value_range(line: &str) -> Option<(usize, usize)> {
    let mut start = leading_spaces(line);
    while line[start..].starts_with("- ") {
        start += 2;
    }
    if let Some(colon) = line[start..].find(": ") {
        start += colon + 2;
    }
    let end = line.trim_end().len();
    (start < end && line.is_char_boundary(start)).then_some((start, end))
}

fn lines_with(lines: &[String], has: impl Fn(&str) -> bool) -> Vec<usize> {
    (0..lines.len()).filter(|&i| has(&lines[i])).collect()
}

fn char_boundary_at(text: &str, rng: &mut Rng) -> usize {
    let mut at = rng.below(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The text split into tokens: runs of word characters, runs of spaces, and single others.
fn tokens(text: &str) -> Vec<&str> {
    fn class(c: char) -> u8 {
        if c.is_alphanumeric() || "_-./".contains(c) {
            0
        } else if c == ' ' {
            1
        } else {
            2
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut previous: Option<u8> = None;
    for (i, c) in text.char_indices() {
        let current = class(c);
        if previous.is_some_and(|p| p != current || p == 2) {
            out.push(&text[start..i]);
            start = i;
        }
        previous = Some(current);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Applies one random edit to `text`; returns its name.
fn mutate(rng: &mut Rng, text: &mut String, seeds: &[Seed]) -> &'static str {
    let mut lines = split_lines(text);
    let n = lines.len();
    let name = match rng.below(30) {
        0 => {
            lines.remove(rng.below(n));
            "delete line"
        }
        1 => {
            let i = rng.below(n);
            let line = lines[i].clone();
            lines.insert(i, line);
            "duplicate line"
        }
        2 => {
            let (a, b) = (rng.below(n), rng.below(n));
            lines.swap(a, b);
            "swap lines"
        }
        3 => {
            let line = lines.remove(rng.below(n));
            lines.insert(rng.below(n), line);
            "move line"
        }
        4 => {
            let i = rng.below(n);
            let body = lines[i].trim_start().to_owned();
            let spaces = leading_spaces(&lines[i]);
            let indentation = match rng.below(5) {
                0 => String::new(),
                1 => " ".repeat(spaces + rng.range(1, 4)),
                2 => " ".repeat(spaces.saturating_sub(rng.range(1, 4))),
                3 => "\t".repeat(rng.range(1, 2)) + &" ".repeat(spaces),
                _ => " ".repeat(spaces + 1),
            };
            lines[i] = indentation + &body;
            "change indentation"
        }
        5 | 6 => {
            let at = char_boundary_at(text, rng);
            text.insert_str(at, rng.word(INDICATORS));
            return "insert indicator";
        }
        7..=9 => {
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = value_range(&lines[i]).unwrap_or_default();
                lines[i].replace_range(start..end, &odd_scalar(rng));
            }
            "replace scalar"
        }
        10 | 11 => {
            let candidates = lines_with(&lines, |l| key_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = key_range(&lines[i]).unwrap_or_default();
                lines[i].replace_range(start..end, &odd_key(rng));
            }
            "replace key"
        }
        12 => {
            // The same key again at the same indentation, with another value.
            let candidates = lines_with(&lines, |l| key_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = key_range(&lines[i]).unwrap_or_default();
                let key = lines[i][start..end].to_owned();
                let copy = format!("{}{key}: {}", " ".repeat(start), odd_scalar(rng));
                lines.insert(i + 1, copy);
            }
            "duplicate key"
        }
        13 => {
            // A map entry, or a whole block of them, becomes a list item.
            let candidates = lines_with(&lines, |l| {
                key_range(l).is_some() && !l.trim_start().starts_with("- ")
            });
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let spaces = leading_spaces(&lines[i]);
                let last = if rng.one_in(2) {
                    (i..n)
                        .take_while(|&j| leading_spaces(&lines[j]) >= spaces)
                        .last()
                        .unwrap_or(i)
                } else {
                    i
                };
                for line in &mut lines[i..=last] {
                    if leading_spaces(line) == spaces {
                        line.insert_str(spaces, "- ");
                    }
                }
            }
            "map to list"
        }
        14 => {
            let candidates = lines_with(&lines, |l| l.trim_start().starts_with("- "));
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let spaces = leading_spaces(&lines[i]);
                let replacement = *rng.pick(&["", "  ", "item: ", "? "]);
                lines[i].replace_range(spaces..spaces + 2, replacement);
            }
            "list to map"
        }
        15 => {
            // A block parent gets an inline value too, or an empty flow collection.
            let candidates = lines_with(&lines, |l| l.trim_end().ends_with(':'));
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let value = *rng.pick(&[" []", " {}", " x", " ~", " |", " &p", " *p", " !!map"]);
                lines[i].push_str(value);
            }
            "collapse block"
        }
        16 => {
            let swapped: String = text
                .chars()
                .map(|c| match c {
                    '[' if rng.one_in(3) => '{',
                    '{' if rng.one_in(3) => '[',
                    ']' if rng.one_in(3) => '}',
                    '}' if rng.one_in(3) => ']',
                    c => c,
                })
                .collect();
            *text = swapped;
            return "swap brackets";
        }
        17 | 18 => {
            // An anchor on one value, an alias to it at another (maybe before it).
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if candidates.len() >= 2 {
                let a = candidates[rng.below(candidates.len())];
                let b = candidates[rng.below(candidates.len())];
                let (start, _) = value_range(&lines[a]).unwrap_or_default();
                lines[a].insert_str(start, "&anchor ");
                if let Some((start, end)) = value_range(&lines[b]) {
                    lines[b].replace_range(start..end, "*anchor");
                }
            }
            "anchor and alias"
        }
        19 => {
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = value_range(&lines[i]).unwrap_or_default();
                let value = *rng.pick(&[
                    "&s [*s]",
                    "&s {a: *s}",
                    "&s *s",
                    "*undefined",
                    "&s [[[*s]]]",
                    "&s\n  child: *s",
                    "&s [&t [*s, *t]]",
                    "*s",
                ]);
                lines[i].replace_range(start..end, value);
            }
            "self-referential alias"
        }
        20 => {
            // A chain of anchors, each a list of aliases to the one before. It expands to at
            // most 4096 nodes: bombs that exhaust the reader's budget take a second each in a
            // debug build, and `alias_bombs_are_refused_cleanly` has them.
            let width = rng.range(2, 4);
            let depth = rng.range(2, if width == 2 { 12 } else { 6 });
            let mut chain = String::from("chain0: &c0 [x, x]\n");
            for level in 1..depth {
                let aliases = vec![format!("*c{}", level - 1); width].join(", ");
                let _ = writeln!(chain, "chain{level}: &c{level} [{aliases}]");
            }
            // Before a top-level line, where it is one more mapping entry.
            let top_level = lines_with(&lines, |l| !l.is_empty() && leading_spaces(l) == 0);
            let at = top_level
                .get(rng.below(top_level.len()))
                .copied()
                .unwrap_or(0);
            lines.insert(at, chain.trim_end().to_owned());
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = value_range(&lines[i]).unwrap_or_default();
                lines[i].replace_range(start..end, &format!("*c{}", depth - 1));
            }
            "alias chain"
        }
        21 => {
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, _) = value_range(&lines[i]).unwrap_or_default();
                lines[i].insert_str(start, "&merge ");
                let at = rng.below(n);
                let spaces = leading_spaces(&lines[at.min(lines.len() - 1)]);
                lines.insert(at, format!("{}<<: *merge", " ".repeat(spaces)));
            }
            "merge key"
        }
        22 => {
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, _) = value_range(&lines[i]).unwrap_or_default();
                let tag = *rng.pick(&[
                    "!!str ",
                    "!!int ",
                    "!!float ",
                    "!!bool ",
                    "!!null ",
                    "!!binary ",
                    "!!map ",
                    "!!seq ",
                    "!!timestamp ",
                    "!!set ",
                    "!custom ",
                    "!<x> ",
                    "!e!tag ",
                ]);
                lines[i].insert_str(start, tag);
            }
            "tag"
        }
        23 => {
            // Deep nesting, flow or block, closed or not; mostly within what the reader
            // accepts, sometimes far beyond.
            let depth = if rng.one_in(3) {
                rng.range(120, 400)
            } else {
                rng.range(10, 120)
            };
            let i = rng.below(n);
            let nested = match rng.below(5) {
                0 => format!("{}x{}", "[".repeat(depth), "]".repeat(depth)),
                1 => format!("{}x{}", "{a: ".repeat(depth), "}".repeat(depth)),
                2 => "[".repeat(depth),
                3 => format!("{}x", "- ".repeat(depth.min(200))),
                _ => {
                    let mut block = String::new();
                    for level in 0..depth.min(250) {
                        let _ = writeln!(block, "{}k{level}:", " ".repeat(level * 2));
                    }
                    block.push_str(&" ".repeat(depth.min(250) * 2));
                    block.push_str("leaf: x");
                    lines.insert(i, block);
                    *text = lines.join("\n");
                    return "deep nesting";
                }
            };
            match value_range(&lines[i]) {
                Some((start, end)) => lines[i].replace_range(start..end, &nested),
                None => lines[i].push_str(&format!(" {nested}")),
            }
            "deep nesting"
        }
        24 => {
            let mut bytes = std::mem::take(text).into_bytes();
            for _ in 0..rng.range(1, 8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = rng.below(256) as u8,
                    2 => bytes.insert(at, rng.below(256) as u8),
                    _ => {
                        let end = (at + rng.range(1, 64)).min(bytes.len());
                        if rng.one_in(2) {
                            bytes.drain(at..end);
                        } else {
                            let copy = bytes[at..end].to_vec();
                            bytes.splice(at..at, copy);
                        }
                    }
                }
            }
            *text = String::from_utf8_lossy(&bytes).into_owned();
            return "byte edits";
        }
        25 | 26 => {
            let mut toks: Vec<String> = tokens(text).into_iter().map(str::to_owned).collect();
            if toks.is_empty() {
                return "token edit";
            }
            let i = rng.below(toks.len());
            let name = match rng.below(4) {
                0 => {
                    toks.remove(i);
                    "delete token"
                }
                1 => {
                    let t = toks[i].clone();
                    toks.insert(i, t);
                    "duplicate token"
                }
                2 => {
                    let j = rng.below(toks.len());
                    toks.swap(i, j);
                    "swap tokens"
                }
                _ => {
                    toks[i] = match rng.below(3) {
                        0 => (*rng.pick(ISTIO_FIELDS)).to_owned(),
                        1 => (*rng.pick(SOUP_SYNTAX)).to_owned(),
                        _ => odd_scalar(rng),
                    };
                    "replace token"
                }
            };
            *text = toks.concat();
            return name;
        }
        27 => {
            // Lines spliced in from another seed.
            let other = split_lines(&rng.pick(seeds).text);
            let start = rng.below(other.len());
            let end = (start + rng.range(1, 12)).min(other.len());
            let at = rng.below(n + 1);
            lines.splice(at..at, other[start..end].iter().cloned());
            "splice"
        }
        28 => {
            let marker = *rng.pick(&[
                "---",
                "...",
                "--- |",
                "--- >",
                "--- x",
                "--- !!map",
                "%YAML 1.2",
                "%YAML 1.1",
                "%YAML 2.0",
                "%YAML 1.2\n%YAML 1.2",
                "%TAG ! tag:example.com,2000:",
                "%FOO bar",
                "---\n---\n---",
                "... # end",
                "# just a comment",
            ]);
            lines.insert(rng.below(n + 1), marker.to_owned());
            "document marker"
        }
        _ => {
            let candidates = lines_with(&lines, |l| value_range(l).is_some());
            if let Some(&i) = candidates.get(rng.below(candidates.len())) {
                let (start, end) = value_range(&lines[i]).unwrap_or_default();
                let spaces = leading_spaces(&lines[i]) + 2;
                let header = *rng.pick(&["|", ">", "|-", ">+", "|2", "|9", "|0", ">-1", "|+-"]);
                let body = format!(
                    "{header}\n{pad}line one\n{pad}  more\n\n{pad}end",
                    pad = " ".repeat(spaces)
                );
                lines[i].replace_range(start..end, &body);
            }
            "block scalar"
        }
    };
    *text = lines.join("\n");
    name
}

// ------------------------------------------------------------------------------------------
// Random input

enum Tree {
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

fn random_tree(rng: &mut Rng, depth: usize) -> Tree {
    let leaf = depth >= 6 || rng.one_in(3);
    if leaf {
        // Mostly values that are YAML as written, so that most documents reach validation.
        let value = match rng.below(10) {
            0 => odd_scalar(rng),
            1 => (*rng.pick(TYPED_SCALARS)).to_owned(),
            _ => (*rng.pick(ISTIO_VALUES)).to_owned(),
        };
        return Tree::Scalar(value);
    }
    if rng.one_in(3) {
        let items = (0..rng.range(0, 4))
            .map(|_| random_tree(rng, depth + 1))
            .collect();
        Tree::Seq(items)
    } else {
        let entries = (0..rng.range(0, 5))
            .map(|_| {
                let key = if rng.one_in(25) {
                    odd_key(rng)
                } else {
                    (*rng.pick(ISTIO_FIELDS)).to_owned()
                };
                (key, random_tree(rng, depth + 1))
            })
            .collect();
        Tree::Map(entries)
    }
}

fn render_flow(tree: &Tree, out: &mut String) {
    match tree {
        Tree::Scalar(s) => out.push_str(s),
        Tree::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_flow(item, out);
            }
            out.push(']');
        }
        Tree::Map(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push_str(": ");
                render_flow(value, out);
            }
            out.push('}');
        }
    }
}

/// Renders `tree` in block style at `indent`; a nested collection is sometimes in flow style.
fn render_block(rng: &mut Rng, tree: &Tree, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match tree {
        // Not at the top: after the `apiVersion` and `kind` lines, a flow collection would be
        // a second root node.
        _ if indent > 0 && (rng.one_in(8) || is_empty(tree)) => {
            out.push_str(&pad);
            render_flow(tree, out);
            out.push('\n');
        }
        Tree::Scalar(s) => {
            out.push_str(&pad);
            out.push_str(s);
            out.push('\n');
        }
        Tree::Seq(items) => {
            for item in items {
                let mut nested = String::new();
                render_block(rng, item, indent + 2, &mut nested);
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(nested.get(indent + 2..).unwrap_or_default());
            }
        }
        Tree::Map(entries) => {
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(key);
                out.push(':');
                match value {
                    Tree::Scalar(s) => {
                        out.push(' ');
                        out.push_str(s);
                        out.push('\n');
                    }
                    _ if is_empty(value) || rng.one_in(6) => {
                        out.push(' ');
                        render_flow(value, out);
                        out.push('\n');
                    }
                    Tree::Seq(_) => {
                        out.push('\n');
                        let at = if rng.one_in(2) { indent } else { indent + 2 };
                        render_block(rng, value, at, out);
                    }
                    Tree::Map(_) => {
                        out.push('\n');
                        render_block(rng, value, indent + 2, out);
                    }
                }
            }
        }
    }
}

fn is_empty(tree: &Tree) -> bool {
    match tree {
        Tree::Scalar(_) => false,
        Tree::Seq(items) => items.is_empty(),
        Tree::Map(entries) => entries.is_empty(),
    }
}

/// A document shaped like an Istio object, with random fields and values under `spec`.
fn random_document(rng: &mut Rng) -> String {
    let mut out = String::new();
    for document in 0..rng.range(1, 3) {
        if document > 0 {
            out.push_str("---\n");
        }
        let (api_version, kind) = *rng.pick(KINDS);
        let mesh = rng.one_in(6);
        if !mesh {
            let _ = writeln!(out, "apiVersion: {api_version}\nkind: {kind}");
            let _ = writeln!(
                out,
                "metadata:\n  name: {}\n  namespace: {}",
                rng.pick(&["reviews", "a", "Bad_Name", "x.y", "", "\"80\"", "-a"]),
                rng.pick(&["default", "istio-system", "Foo", "a.b", "\"\""]),
            );
        }
        let body = random_tree(rng, 1);
        let body = if mesh {
            body
        } else {
            let key = if kind == "List" { "items" } else { "spec" };
            Tree::Map(vec![(key.to_owned(), body)])
        };
        let mut rendered = String::new();
        render_block(rng, &body, 0, &mut rendered);
        out.push_str(&rendered);
    }
    out
}

fn token_soup(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.range(1, 120) {
        match rng.below(6) {
            0 | 1 => out.push_str(rng.word(SOUP_SYNTAX)),
            2 => out.push_str(rng.word(ISTIO_FIELDS)),
            3 => out.push_str(rng.word(ISTIO_VALUES)),
            4 => {
                let (api_version, kind) = *rng.pick(KINDS);
                let _ = write!(out, "apiVersion: {api_version}\nkind: {kind}\n");
            }
            _ => out.push_str(&odd_scalar(rng)),
        }
    }
    out
}

fn random_bytes(rng: &mut Rng) -> String {
    const YAMLISH: &[u8] = b"ab: -[]{},&*!|>'\"#%@`?\n\n  \t\r0123456789.~\\/";
    let len = rng.range(0, 1500);
    let yamlish = rng.one_in(2);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            if yamlish && !rng.one_in(16) {
                *rng.pick(YAMLISH)
            } else {
                rng.below(256) as u8
            }
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn random_file(rng: &mut Rng) -> &'static str {
    rng.word(&["fuzz.yaml", "fuzz.yaml", "fuzz.yaml", "mesh.yaml"])
}

// ------------------------------------------------------------------------------------------
// The fuzz streams

/// Every char boundary of a short text; for a long one, every boundary in its first 300 bytes
/// and ~200 spread evenly over the rest.
fn cut_points(text: &str) -> Vec<usize> {
    let boundaries = (0..=text.len()).filter(|&i| text.is_char_boundary(i));
    if text.len() <= LONG_SEED {
        return boundaries.collect();
    }
    let mut cuts: BTreeSet<usize> = boundaries.take_while(|&i| i <= 300).collect();
    for k in 0..=200 {
        let mut at = text.len() * k / 200;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        cuts.insert(at);
    }
    cuts.into_iter().collect()
}

#[test]
fn truncated_seeds_load_cleanly() {
    let mut session = Session::new("truncation");
    for seed in seeds() {
        for cut in cut_points(&seed.text) {
            let case = format!("{} cut at byte {cut}", seed.name);
            session.check(case, &seed.file, &seed.text[..cut]);
        }
    }
    session.finish("truncated_seeds_load_cleanly");
}

#[test]
fn mutated_seeds_load_cleanly() {
    let config = config();
    let seeds = seeds();
    let built_in = BUILT_IN_SEEDS.len().min(seeds.len());
    let mut session = Session::new("mutation");
    for case in 0..config.iterations {
        let mut rng = Rng::for_case(config.seed, "mutation", case);
        // Half the time a built-in seed, which covers every kind; else any seed.
        let seed = if rng.one_in(2) {
            &seeds[rng.below(built_in)]
        } else {
            rng.pick(seeds)
        };
        let mut text = seed.text.clone();
        let mut applied = Vec::new();
        // Mostly one or two edits, so that many inputs are still YAML and reach validation.
        let edits = if rng.one_in(2) { 1 } else { rng.range(2, 4) };
        for _ in 0..edits {
            applied.push(mutate(&mut rng, &mut text, seeds));
        }
        let file = if rng.one_in(8) {
            "mesh.yaml"
        } else {
            seed.file.as_str()
        };
        let case = format!("#{case} of {} by {}", seed.name, applied.join(", "));
        session.check(case, file, &text);
    }
    session.finish("mutated_seeds_load_cleanly");
}

#[test]
fn random_documents_load_cleanly() {
    let config = config();
    let mut session = Session::new("random-documents");
    for case in 0..config.iterations / 2 {
        let mut rng = Rng::for_case(config.seed, "random documents", case);
        let text = random_document(&mut rng);
        let file = random_file(&mut rng);
        session.check(format!("random document #{case}"), file, &text);
    }
    session.finish("random_documents_load_cleanly");
}

#[test]
fn token_soup_loads_cleanly() {
    let config = config();
    let mut session = Session::new("token-soup");
    for case in 0..config.iterations / 2 {
        let mut rng = Rng::for_case(config.seed, "token soup", case);
        let text = token_soup(&mut rng);
        let file = random_file(&mut rng);
        session.check(format!("token soup #{case}"), file, &text);
    }
    session.finish("token_soup_loads_cleanly");
}

#[test]
fn random_bytes_load_cleanly() {
    let config = config();
    let mut session = Session::new("random-bytes");
    for case in 0..config.iterations / 2 {
        let mut rng = Rng::for_case(config.seed, "random bytes", case);
        let text = random_bytes(&mut rng);
        let file = random_file(&mut rng);
        session.check(format!("random bytes #{case}"), file, &text);
    }
    session.finish("random_bytes_load_cleanly");
}

/// The built-in seeds are realistic: valid Istio that loads into objects without an error, so
/// that mutations start from documents that reach deep into validation.
#[test]
fn built_in_seeds_are_valid_istio() {
    for (name, file, text) in BUILT_IN_SEEDS {
        let mut loaded = Loaded::default();
        load_text(
            &Arc::from(*file),
            text,
            &LoadOptions::default(),
            &mut loaded,
        );
        assert!(!loaded.objects.is_empty(), "{name}: no objects read");
        let mut findings = loaded.findings;
        findings.extend(validate(&loaded.objects, &ValidateOptions::default()));
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
    }
}

/// A key that is not a known field is data from the file: a quoted key with a control character
/// or a line break must not break the one-line `file:line:col: level: object: field: message`
/// form of its finding (`unknown-field` from the typed reading, `not-implemented` for MeshConfig
/// fields Strait ignores). Such a key is quoted and escaped in the path, as data keys are
/// (`labels["a\nb"]`).
#[test]
fn unknown_keys_with_control_characters_give_one_line_field_paths() {
    let cases = [
        (
            "fuzz.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\"\\t\":\n",
        ),
        (
            "fuzz.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n\
             spec:\n  \"a\\nb\": 1\n",
        ),
        ("mesh.yaml", "\"a\\nb\": 1\n"),
        ("mesh.yaml", "defaultConfig:\n  \"a\\u2028b\": 1\n"),
    ];
    let mut bad = Vec::new();
    for (file, text) in cases {
        for finding in load_and_validate(&Arc::from(file), text) {
            if !plausible_field(&finding.field) {
                bad.push(format!(
                    "{file} {text:?}: {} finding with field {:?}",
                    finding.code, finding.field
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "field paths with control characters or line breaks:\n{}",
        bad.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// Targeted cases

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  \
                       name: bomb\nspec:\n";

/// Runs named inputs through the invariants; returns the findings of each that finished.
fn targeted(
    stream: &'static str,
    test: &str,
    inputs: &[(&str, &str, String)],
) -> Vec<Vec<Finding>> {
    let mut session = Session::new(stream);
    let mut all = Vec::new();
    for (name, file, text) in inputs {
        all.push(session.check(name, file, text).unwrap_or_default());
    }
    session.finish(test);
    all
}

#[test]
fn alias_bombs_are_refused_cleanly() {
    // Billion laughs: nine levels of ten aliases each.
    let mut laughs =
        String::from("lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let aliases = vec![format!("*lol{}", level - 1); 10].join(", ");
        let _ = writeln!(laughs, "lol{level}: &lol{level} [{aliases}]");
    }
    let mut in_spec = String::from(VS_HEAD);
    in_spec.push_str("  hosts: &h0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..10 {
        let aliases = vec![format!("*h{}", level - 1); 10].join(", ");
        let _ = writeln!(in_spec, "  gateways{level}: &h{level} [{aliases}]");
    }
    in_spec.push_str("  http: *h9\n");
    // Wide rather than deep: one anchor aliased a hundred thousand times.
    let mut wide = String::from("a: &a [x, y, z]\nb: [");
    wide.push_str(&vec!["*a"; 100_000].join(", "));
    wide.push_str("]\n");
    let findings = targeted(
        "alias-bomb",
        "alias_bombs_are_refused_cleanly",
        &[
            ("billion laughs", "fuzz.yaml", laughs.clone()),
            ("billion laughs in mesh.yaml", "mesh.yaml", laughs),
            ("billion laughs in a VirtualService", "fuzz.yaml", in_spec),
            ("a hundred thousand aliases", "fuzz.yaml", wide),
        ],
    );
    for (i, findings) in findings.iter().take(3).enumerate() {
        assert!(
            findings.iter().any(|f| f.level == Level::Error),
            "bomb {i} was read without an error: {findings:?}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_cleanly() {
    let deep_flow_seq = "[".repeat(10_000);
    let closed = format!("{}x{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_flow_map = format!("{}x{}", "{a: ".repeat(5_000), "}".repeat(5_000));
    let mut deep_block = String::new();
    for level in 0..1_000 {
        let _ = writeln!(deep_block, "{}k:", " ".repeat(level));
    }
    let deep_dashes = format!("{}x\n", "- ".repeat(5_000));
    let in_spec = format!("{VS_HEAD}  hosts: {}\n", "[".repeat(10_000));
    targeted(
        "deep-nesting",
        "deep_nesting_is_refused_cleanly",
        &[
            ("10,000 [", "fuzz.yaml", deep_flow_seq),
            ("10,000 [ closed", "fuzz.yaml", closed),
            ("5,000 {a:", "mesh.yaml", deep_flow_map),
            ("1,000 block levels", "mesh.yaml", deep_block),
            ("5,000 dashes", "fuzz.yaml", deep_dashes),
            ("10,000 [ in spec.hosts", "fuzz.yaml", in_spec),
        ],
    );
}

#[test]
fn a_ten_megabyte_scalar_is_read_cleanly() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let name = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {}\n\
         spec:\n  hosts: [reviews]\n",
        "a".repeat(TEN_MB)
    );
    let host = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: big\n\
         spec:\n  hosts:\n  - \"{}.com\"\n  ports:\n  - number: 80\n    name: http\n",
        "h".repeat(TEN_MB)
    );
    targeted(
        "ten-megabytes",
        "a_ten_megabyte_scalar_is_read_cleanly",
        &[
            ("a 10 MB metadata.name", "fuzz.yaml", name),
            ("a 10 MB quoted host", "fuzz.yaml", host),
        ],
    );
}

#[test]
fn nul_bytes_boms_crlf_and_tabs_are_read_cleanly() {
    let mut inputs: Vec<(&str, &str, String)> = vec![
        ("NUL alone", "fuzz.yaml", "\0".to_owned()),
        ("NULs", "fuzz.yaml", "\0\0\0\n\0: \0\n".to_owned()),
        (
            "NUL in a plain scalar",
            "fuzz.yaml",
            VIRTUAL_SERVICE.replacen("reviews", "rev\0iews", 3),
        ),
        (
            "NUL in a quoted scalar",
            "fuzz.yaml",
            GATEWAY.replacen("bookinfo.example.com", "book\0info", 2),
        ),
        (
            "escaped NUL in a key",
            "fuzz.yaml",
            format!("{VS_HEAD}  \"ho\\0sts\": [a]\n"),
        ),
        (
            "NUL after the kind",
            "fuzz.yaml",
            SIDECAR.replacen("Sidecar", "Sidecar\0", 1),
        ),
        ("BOM alone", "fuzz.yaml", "\u{feff}".to_owned()),
        ("BOM first", "fuzz.yaml", format!("\u{feff}{GATEWAY}")),
        (
            "two BOMs",
            "fuzz.yaml",
            format!("\u{feff}\u{feff}{GATEWAY}"),
        ),
        (
            "BOM after ---",
            "fuzz.yaml",
            BOOKINFO.replace("---\n", "---\n\u{feff}"),
        ),
        (
            "BOM mid-document",
            "fuzz.yaml",
            DESTINATION_RULE.replacen("  subsets:", "\u{feff}  subsets:", 1),
        ),
        (
            "BOM in mesh.yaml",
            "mesh.yaml",
            format!("\u{feff}{MESH_CONFIG}"),
        ),
        ("tab alone", "fuzz.yaml", "\t".to_owned()),
        (
            "tab after a colon",
            "fuzz.yaml",
            "a:\tb\nc:\t\t[1,\t2]\n".to_owned(),
        ),
    ];
    for &(_, file, text) in BUILT_IN_SEEDS {
        inputs.push(("CRLF", file, text.replace('\n', "\r\n")));
        inputs.push(("lone CR", file, text.replace('\n', "\r")));
        inputs.push(("NEL breaks", file, text.replace('\n', "\u{85}")));
        inputs.push(("LS breaks", file, text.replace('\n', "\u{2028}")));
        let mixed: String = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| format!("{l}{}", ["\n", "\r\n", "\r"][i % 3]))
            .collect();
        inputs.push(("mixed line endings", file, mixed));
        let tabs: String = text
            .split('\n')
            .map(|l| {
                let spaces = leading_spaces(l);
                format!("{}{}\n", "\t".repeat(spaces / 2), &l[spaces..])
            })
            .collect();
        inputs.push(("tabs as indentation", file, tabs));
        let half: String = text
            .split('\n')
            .map(|l| l.replacen("  ", "\t", 1) + "\n")
            .collect();
        inputs.push(("a tab in place of two spaces", file, half));
        inputs.push((
            "BOM and CRLF",
            file,
            format!("\u{feff}{}", text.replace('\n', "\r\n")),
        ));
    }
    targeted(
        "bytes-and-breaks",
        "nul_bytes_boms_crlf_and_tabs_are_read_cleanly",
        &inputs,
    );
}

#[test]
fn documents_that_are_not_objects_are_reported_cleanly() {
    let mut inputs: Vec<(&str, &str, String)> = Vec::new();
    for text in [
        "",
        " ",
        "\n",
        "hello",
        "42",
        "-1",
        "1e400",
        "true",
        "~",
        "null",
        "''",
        "\"\"",
        "[]",
        "{}",
        "- a\n- b\n",
        "[1, 2, {a: b}]",
        "- apiVersion: v1\n  kind: List\n",
        "!!binary aGk=",
        "|\n  text\n",
        ">\n  folded\n",
        "--- scalar",
        "--- [a]\n--- {}\n--- 3\n",
        "&a x",
        "*a",
        "? a",
        ": b",
        "-",
        "---",
        "...",
        "%YAML 1.2\n---\n",
        "# only a comment\n",
        "apiVersion: v1",
        "kind: List\nitems: 3\n",
        "kind: List\nitems: [1, [2], {}]\n",
        "apiVersion: v1\nkind: List\nitems:\n- 1\n- - nested\n- {kind: List, items: []}\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: 3\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: [a]\nmetadata: x\n",
        "apiVersion: [networking.istio.io/v1]\nkind: {VirtualService: 1}\n",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n",
        "networks: 3\n",
        "networks: {a: 3, b: [1], c: ~}\n",
        "networks:\n",
    ] {
        inputs.push(("not an object", "fuzz.yaml", text.to_owned()));
        inputs.push(("not an object, in mesh.yaml", "mesh.yaml", text.to_owned()));
    }
    targeted(
        "not-objects",
        "documents_that_are_not_objects_are_reported_cleanly",
        &inputs,
    );
}

#[test]
fn document_separator_storms_are_read_cleanly() {
    let storm = "---\n".repeat(5_000);
    let with_ends = "---\n...\n".repeat(3_000);
    let scalars = "--- a\n".repeat(3_000);
    let objects = format!("---\n{WORKLOAD_ENTRY}").repeat(1_500);
    let comments = "# c\n---\n".repeat(3_000);
    let bare = "---".repeat(3_000);
    targeted(
        "separator-storm",
        "document_separator_storms_are_read_cleanly",
        &[
            ("5,000 ---", "fuzz.yaml", storm.clone()),
            ("5,000 --- then an object", "fuzz.yaml", storm + GATEWAY),
            ("3,000 --- and ...", "fuzz.yaml", with_ends),
            ("3,000 scalar documents", "fuzz.yaml", scalars),
            ("1,500 WorkloadEntries", "fuzz.yaml", objects),
            ("3,000 commented documents", "mesh.yaml", comments),
            ("--- with no line breaks", "fuzz.yaml", bare),
        ],
    );
}

#[test]
fn maps_with_integer_and_other_non_string_keys_are_read_cleanly() {
    let head = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n";
    targeted(
        "odd-keys",
        "maps_with_integer_and_other_non_string_keys_are_read_cleanly",
        &[
            (
                "integer keys",
                "fuzz.yaml",
                "1: a\n2: b\n-3: c\n".to_owned(),
            ),
            (
                "integer keys in mesh.yaml",
                "mesh.yaml",
                "1: a\n2: {3: c}\n".to_owned(),
            ),
            (
                "integer portLevelMtls keys",
                "fuzz.yaml",
                format!(
                    "{head}spec:\n  portLevelMtls:\n    80: {{mode: STRICT}}\n    0: {{}}\n    \
                     -1: {{mode: DISABLE}}\n    99999999999999999999999999999: {{}}\n    1.5: \
                     {{}}\n    true: {{}}\n    ~: {{}}\n"
                ),
            ),
            (
                "non-string spec keys",
                "fuzz.yaml",
                format!(
                    "{head}spec:\n  1: a\n  2.5: b\n  false: c\n  null: d\n  [x, y]: e\n  {{a: b}}: f\n  ? - complex\n  : g\n"
                ),
            ),
            (
                "integer keys in labels",
                "fuzz.yaml",
                format!(
                    "{head}  labels:\n    1: a\n    2: 3\nspec:\n  selector:\n    matchLabels:\n      80: http\n      true: yes\n"
                ),
            ),
            (
                "integer network names",
                "fuzz.yaml",
                "networks:\n  1:\n    endpoints:\n    - fromRegistry: 2\n  2.5: {}\n".to_owned(),
            ),
            (
                "integer WorkloadEntry port names",
                "fuzz.yaml",
                WORKLOAD_ENTRY.replace("http: 9080", "80: 9080\n    1.5: 1\n    x: -1"),
            ),
            (
                "a sequence as a key",
                "mesh.yaml",
                "? [a, b]\n: c\n? {d: e}\n: f\n".to_owned(),
            ),
        ],
    );
}

/// YAML nested as deep as the reader accepts, and deeper, must not overflow a thread with the
/// default 2 MiB stack (a spawned thread, a `cargo test` thread, an async runtime's worker) even
/// in a debug build. A stack overflow is not a panic: it aborts the process, so this test runs
/// the inputs in a child process (this test binary, run again for this test alone).
#[test]
fn yaml_nested_to_the_depth_limit_fits_a_two_megabyte_thread_stack() {
    const CHILD: &str = "STRAIT_ROBUSTNESS_STACK_CHILD";
    const TEST: &str = "yaml_nested_to_the_depth_limit_fits_a_two_megabyte_thread_stack";
    if std::env::var_os(CHILD).is_some() {
        for depth in [32, 64, 100, 127, 128, 129, 200, 1_000] {
            let mut block = String::new();
            for level in 0..depth {
                let _ = writeln!(block, "{}k:", " ".repeat(level));
            }
            let lists = format!("{}x{}", "[".repeat(depth), "]".repeat(depth));
            let maps = format!("{}x{}", "{a: ".repeat(depth), "}".repeat(depth));
            let in_object = format!(
                "{VS_HEAD}  hosts: {lists}\n  http: {maps}\nstatus: {lists}\nmetadata:\n  \
                 name: deep\n  labels: {maps}\n"
            );
            let inputs = [
                ("flow lists", lists),
                ("flow maps", maps),
                ("block maps", block),
                ("block lists", format!("{}x\n", "- ".repeat(depth))),
                ("VirtualService fields", in_object),
            ];
            for (what, text) in inputs {
                for file in ["fuzz.yaml", "mesh.yaml"] {
                    eprintln!("reading {what} nested {depth} deep as {file} on a 2 MiB stack");
                    let text = text.clone();
                    thread::Builder::new()
                        .stack_size(2 << 20)
                        .spawn(move || load_and_validate(&Arc::from(file), &text).len())
                        .expect("cannot start a thread")
                        .join()
                        .expect("reading deep nesting panicked");
                }
            }
        }
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("no test binary"))
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("cannot run the test binary again");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
    assert!(
        output.status.success(),
        "reading deeply nested YAML on a thread with a 2 MiB stack failed ({}); the last \
         lines of its output:\n{}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}
