//! Runs the airports example binary: on the real file, on the sample, on malformed input (LF,
//! CRLF and CR line ends), and through its download path against local HTTP servers
//! (including a connection dropped mid-file, a stalled one, an HTML page and an empty body,
//! which must all leave no cache behind).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples")
        .join(format!("airports{}", std::env::consts::EXE_SUFFIX))
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The longest a run of the example may take before the test fails (and kills it).
const DEADLINE: Duration = Duration::from_secs(180);

/// Runs the example in `cwd`, whatever its exit status, killing it after [`DEADLINE`].
fn run_any(args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the airports example runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the example's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the airports example ran for more than {DEADLINE:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout read"),
        stderr: stderr.join().expect("stderr read"),
    }
}

fn run(args: &[&str], cwd: &Path) -> Output {
    let out = run_any(args, cwd);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SAMPLE_ANSWER: &str = "US 4\nBR 2\nCA 2\nDE 1\nFR 1\nJP 1\nopen airports: 11\ncountries: 6\nclosed airports: 3\nmalformed rows: 0\n";

/// A scratch directory with `data/airports-sample.csv`, like a checkout of the project.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airports-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        manifest().join("../data/airports-sample.csv"),
        dir.join("data/airports-sample.csv"),
    )
    .unwrap();
    dir
}

#[test]
fn the_real_file_gives_the_known_figures() {
    let real = manifest().join("../../shared/data/airports.csv");
    if !real.exists() {
        println!("skipped: {} is absent", real.display());
        return;
    }
    let out = run(&["--csv", real.to_str().unwrap(), "--top", "3"], manifest());
    assert_eq!(
        stdout(&out),
        "US 25116\nBR 7540\nJP 3328\nopen airports: 71964\ncountries: 247\nclosed airports: 13045\nmalformed rows: 0\n"
    );
    let out = run(
        &["--csv", real.to_str().unwrap(), "--json", "--stages", "3"],
        manifest(),
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["open_airports"], 71964);
    assert_eq!(json["countries"], 247);
    assert_eq!(json["top"].as_array().unwrap().len(), 10);
    assert_eq!(json["top"][0]["country"], "US");
}

#[test]
fn the_sample_gives_its_known_answer() {
    let sample = manifest().join("../data/airports-sample.csv");
    let out = run(&["--csv", sample.to_str().unwrap()], manifest());
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
}

#[test]
fn snapshots_print_each_partitions_running_counts() {
    let sample = manifest().join("../data/airports-sample.csv");
    let out = run(
        &[
            "--csv",
            sample.to_str().unwrap(),
            "--snapshots",
            "2",
            "--stages",
            "1",
        ],
        manifest(),
    );
    let err = stderr(&out);
    let snapshots: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("snapshot partition 0"))
        .collect();
    // 11 open airports in one counting stage: a snapshot after every 2.
    assert_eq!(snapshots.len(), 5, "{err}");
    assert!(snapshots[4].contains("US 4"), "{snapshots:?}");
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
}

/// A file with a quoted newline, doubled quotes, and two malformed rows, on lines 4 and 6.
const MALFORMED: &str = "\"id\",\"ident\",\"type\",\"name\",\"a\",\"b\",\"c\",\"d\",\"iso_country\",\"e\"\n\
        1,\"A\",\"small_airport\",\"Two\nlines, and \"\"quotes\"\"\",0,0,0,\"EU\",\"FR\",\"FR-1\"\n\
        2,\"B\",\"heliport\",\"Short row\"\n\
        3,\"C\",\"closed\",\"Gone\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n\
        x,\"D\",\"heliport\",\"Bad id\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n\
        5,\"E\",\"heliport\",\"Fine\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n";

#[test]
fn a_quoted_newline_is_one_field_and_malformed_rows_are_reported_by_line() {
    let dir = scratch("malformed");
    let csv = MALFORMED;
    let path = dir.join("input.csv");
    std::fs::write(&path, csv).unwrap();
    let out = run(&["--csv", path.to_str().unwrap()], &dir);
    assert_eq!(
        stdout(&out),
        "DE 1\nFR 1\nopen airports: 2\ncountries: 2\nclosed airports: 1\nmalformed rows: 2\n"
    );
    let err = stderr(&out);
    assert!(
        err.contains("malformed row at line 4: expected 10 fields, found 4"),
        "{err}"
    );
    assert!(
        err.contains("malformed row at line 6: id is not a number"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Serves one request: the status line, a `Content-Length` of `announce` bytes, then `body`
/// (which may be shorter: the connection is then dropped mid-file).
fn serve_once(status: &'static str, body: Vec<u8>, announce: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = conn.read(&mut request);
        let head =
            format!("HTTP/1.1 {status}\r\nContent-Length: {announce}\r\nConnection: close\r\n\r\n");
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&body);
        let _ = conn.flush();
    });
    format!("http://{addr}/airports.csv")
}

/// `dir/data`, for `--data`: the download tests keep their files out of the workspace.
fn data_dir(dir: &Path) -> String {
    dir.join("data").to_str().expect("a UTF-8 path").to_owned()
}

fn sample_bytes() -> Vec<u8> {
    std::fs::read(manifest().join("../data/airports-sample.csv")).unwrap()
}

#[test]
fn without_a_cache_it_downloads_then_reads_the_download() {
    // (Not "download": the paths printed hold the directory's name.)
    let dir = scratch("cache");
    let body = sample_bytes();
    let url = serve_once("200 OK", body.clone(), body.len());
    let data = data_dir(&dir);
    let out = run(&["--url", &url, "--data", &data], &dir);
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    assert!(stderr(&out).contains("downloaded"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("data/airports.csv")).unwrap(), body);
    assert!(!dir.join("data/airports.csv.partial").exists());
    // The second run reads the cache: no server this time.
    let out = run(
        &["--url", "http://127.0.0.1:9/unused", "--data", &data],
        &dir,
    );
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    assert!(!stderr(&out).contains("download"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_connection_dropped_mid_file_leaves_no_cache_and_falls_back_to_the_sample() {
    let dir = scratch("dropped");
    let body = sample_bytes();
    let half = body[..body.len() / 2].to_vec();
    let url = serve_once("200 OK", half, body.len());
    let out = run(&["--url", &url, "--data", &data_dir(&dir)], &dir);
    let err = stderr(&out);
    assert!(err.contains("could not download"), "{err}");
    assert!(err.contains("falling back to the offline sample"), "{err}");
    assert!(!dir.join("data/airports.csv").exists(), "no corrupt cache");
    assert!(
        !dir.join("data/airports.csv.partial").exists(),
        "no partial file"
    );
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_http_error_falls_back_to_the_sample() {
    let dir = scratch("404");
    let url = serve_once("404 Not Found", b"nope".to_vec(), 4);
    let out = run(&["--url", &url, "--data", &data_dir(&dir)], &dir);
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    assert!(!dir.join("data/airports.csv").exists());
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_rows_are_reported_on_their_line_with_crlf_and_cr_line_ends() {
    let dir = scratch("line-ends");
    for (name, end) in [("crlf", "\r\n"), ("cr", "\r")] {
        let path = dir.join(format!("{name}.csv"));
        std::fs::write(&path, MALFORMED.replace('\n', end)).unwrap();
        let out = run(&["--csv", path.to_str().unwrap()], &dir);
        assert_eq!(
            stdout(&out),
            "DE 1\nFR 1\nopen airports: 2\ncountries: 2\nclosed airports: 1\nmalformed rows: 2\n",
            "{name}"
        );
        let err = stderr(&out);
        assert!(
            err.contains("malformed row at line 4: expected 10 fields, found 4"),
            "{name}: {err}"
        );
        assert!(
            err.contains("malformed row at line 6: id is not a number"),
            "{name}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_describes_the_program() {
    let out = run(&["--help"], manifest());
    let help = stdout(&out);
    assert!(
        help.contains("Counts the open airports of each country in OurAirports' airports.csv"),
        "{help}"
    );
    assert!(
        help.contains("falls back to the small offline sample"),
        "{help}"
    );
    assert!(help.contains("--read-timeout <SECONDS>"), "{help}");
    assert!(help.contains("--data <DIR>"), "{help}");
    // Not the crate's description (`#[command(about)]` took it from Cargo.toml).
    assert!(!help.contains("Runnable example programs"), "{help}");
}

#[test]
fn zero_stages_is_an_error_like_zero_top() {
    let sample = manifest().join("../data/airports-sample.csv");
    for (flag, message) in [
        ("--stages", "error: --stages must be at least 1"),
        ("--top", "error: --top must be at least 1"),
    ] {
        let out = run_any(&["--csv", sample.to_str().unwrap(), flag, "0"], manifest());
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{flag}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{flag}");
    }
    let out = run_any(&["--read-timeout", "0"], manifest());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A URL on the loopback where nothing listens (the port was just free).
fn closed_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/airports.csv")
}

#[test]
fn the_data_directory_is_found_from_any_working_directory() {
    // An empty working directory: no data/ in it.
    let dir = std::env::temp_dir().join(format!("airports-test-cwd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["--url", &closed_url()], &dir);
    let err = stderr(&out);
    if manifest().join("../data/airports.csv").exists() {
        // Downloaded by an earlier run: read from the workspace, whatever it holds.
        assert!(!err.contains("falling back"), "{err}");
    } else {
        assert!(err.contains("falling back to the offline sample"), "{err}");
        assert_eq!(stdout(&out), SAMPLE_ANSWER);
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written in the cwd"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_download_error_names_its_cause_once() {
    let dir = scratch("cause");
    let url = closed_url();
    let out = run(&["--url", &url, "--data", &data_dir(&dir)], &dir);
    let err = stderr(&out);
    assert_eq!(err.matches(&url).count(), 1, "{err}");
    assert_eq!(err.to_lowercase().matches("refused").count(), 1, "{err}");
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_html_page_or_an_empty_body_with_200_is_not_cached() {
    let page = b"<!DOCTYPE html>\n<html><body>Too many requests</body></html>\n".to_vec();
    for (name, body, says) in [
        ("html", page, "it starts with \"<!DOCTYPE html>\""),
        ("empty", Vec::new(), "the server sent an empty body"),
    ] {
        let dir = scratch(name);
        let len = body.len();
        let url = serve_once("200 OK", body, len);
        let out = run(&["--url", &url, "--data", &data_dir(&dir)], &dir);
        let err = stderr(&out);
        assert!(err.contains("could not download"), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        assert!(!dir.join("data/airports.csv").exists(), "{name}: no cache");
        assert!(!dir.join("data/airports.csv.partial").exists(), "{name}");
        assert_eq!(stdout(&out), SAMPLE_ANSWER, "{name}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Like [`serve_once`], but keeps the connection open for `hold` after sending `body`.
fn serve_then_stall(body: Vec<u8>, announce: usize, hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = conn.read(&mut request);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {announce}\r\n\r\n");
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&body);
        let _ = conn.flush();
        std::thread::sleep(hold);
    });
    format!("http://{addr}/airports.csv")
}

#[test]
fn a_stalled_download_times_out_and_leaves_nothing() {
    let dir = scratch("stalled");
    let body = sample_bytes();
    let url = serve_then_stall(
        body[..body.len() / 2].to_vec(),
        body.len(),
        Duration::from_secs(120),
    );
    let started = Instant::now();
    let out = run(
        &[
            "--url",
            &url,
            "--data",
            &data_dir(&dir),
            "--read-timeout",
            "0.5",
        ],
        &dir,
    );
    assert!(started.elapsed() < Duration::from_secs(60), "it waited");
    let err = stderr(&out);
    assert!(err.contains("the server stalled"), "{err}");
    assert!(!dir.join("data/airports.csv").exists(), "no cache");
    assert!(
        !dir.join("data/airports.csv.partial").exists(),
        "no partial file"
    );
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    let _ = std::fs::remove_dir_all(dir);
}
