//! Runs the airports example binary: on the real file, on the sample, on malformed input, and
//! through its download path against a local HTTP server (including a connection dropped
//! mid-file, which must leave no cache behind).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn run(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the airports example runs");
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

#[test]
fn a_quoted_newline_is_one_field_and_malformed_rows_are_reported_by_line() {
    let dir = scratch("malformed");
    let csv = "\"id\",\"ident\",\"type\",\"name\",\"a\",\"b\",\"c\",\"d\",\"iso_country\",\"e\"\n\
        1,\"A\",\"small_airport\",\"Two\nlines, and \"\"quotes\"\"\",0,0,0,\"EU\",\"FR\",\"FR-1\"\n\
        2,\"B\",\"heliport\",\"Short row\"\n\
        3,\"C\",\"closed\",\"Gone\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n\
        x,\"D\",\"heliport\",\"Bad id\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n\
        5,\"E\",\"heliport\",\"Fine\",0,0,0,\"EU\",\"DE\",\"DE-1\"\n";
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

fn sample_bytes() -> Vec<u8> {
    std::fs::read(manifest().join("../data/airports-sample.csv")).unwrap()
}

#[test]
fn without_a_cache_it_downloads_then_reads_the_download() {
    let dir = scratch("download");
    let body = sample_bytes();
    let url = serve_once("200 OK", body.clone(), body.len());
    let out = run(&["--url", &url], &dir);
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    assert!(stderr(&out).contains("downloaded"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("data/airports.csv")).unwrap(), body);
    assert!(!dir.join("data/airports.csv.partial").exists());
    // The second run reads the cache: no server this time.
    let out = run(&["--url", "http://127.0.0.1:9/unused"], &dir);
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
    let out = run(&["--url", &url], &dir);
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
    let out = run(&["--url", &url], &dir);
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    assert!(!dir.join("data/airports.csv").exists());
    assert_eq!(stdout(&out), SAMPLE_ANSWER);
    let _ = std::fs::remove_dir_all(dir);
}
