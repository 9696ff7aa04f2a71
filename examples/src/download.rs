//! Downloading a file without ever leaving a corrupt copy behind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

/// How many bytes of the body [`Options::check_start`] sees (fewer if the body is shorter):
/// enough for any header line, and an HTML page sent instead of the file is refused after
/// this much rather than after all of it.
pub const START: usize = 64 * 1024;

/// How to download: see [`download`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Shows a progress bar on stderr.
    pub progress: bool,
    /// The longest wait for the connection.
    pub connect_timeout: Duration,
    /// The longest wait for the response once connected, then for each next piece of the
    /// body: a server that stalls mid-body fails the download instead of hanging it.
    pub read_timeout: Duration,
    /// Checks the first [`START`] bytes of the body (or all of it, if shorter) before
    /// anything is kept, and says why they are not the start of the file expected: a server
    /// can answer "200 OK" with an error page.
    pub check_start: fn(&[u8]) -> Result<(), String>,
}

impl Default for Options {
    /// No progress bar, 10 s to connect, 30 s for each read, any body accepted.
    fn default() -> Self {
        Options {
            progress: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            check_start: |_| Ok(()),
        }
    }
}

/// Why a download failed. Each message says what was wrong once: the causes of a network
/// error are in the message, so [`std::error::Error::source`] is `None` (a reporter that
/// also printed the sources would repeat them); the URL is not, as the caller knows it.
#[derive(Debug)]
#[non_exhaustive]
pub enum DownloadError {
    /// The request could not be sent or got no answer (name lookup, connection, TLS, HTTP).
    Request(String),
    /// No response came in time.
    NoResponse {
        /// How long the wait was.
        after: Duration,
    },
    /// The server answered with a status other than success.
    Status(reqwest::StatusCode),
    /// Nothing more of the body came for [`Options::read_timeout`]: the server stalled.
    Stalled {
        /// How long the wait was.
        after: Duration,
        /// The bytes received before.
        received: u64,
    },
    /// The connection failed mid-body.
    Interrupted {
        /// The bytes received before.
        received: u64,
        /// What failed.
        cause: String,
    },
    /// The body ended before the length its `Content-Length` announced.
    Short {
        /// The bytes received.
        received: u64,
        /// The bytes announced.
        expected: u64,
    },
    /// The body was empty.
    Empty,
    /// [`Options::check_start`] refused the start of the body.
    Unexpected {
        /// Why.
        reason: String,
        /// The start of the body's first line, for the message.
        start: String,
    },
    /// A local file could not be written or moved into place.
    File {
        /// What was being done: "create", "write", "move into place"...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Request(cause) => write!(f, "the request failed: {cause}"),
            DownloadError::NoResponse { after } => write!(f, "no response within {after:?}"),
            DownloadError::Status(status) => write!(f, "HTTP {status}"),
            DownloadError::Stalled { after, received } => write!(
                f,
                "the server stalled: nothing for {after:?} after {received} bytes"
            ),
            DownloadError::Interrupted { received, cause } => {
                write!(f, "the download broke off after {received} bytes: {cause}")
            }
            DownloadError::Short { received, expected } => write!(
                f,
                "the download is incomplete: {received} of {expected} bytes"
            ),
            DownloadError::Empty => f.write_str("the server sent an empty body"),
            DownloadError::Unexpected { reason, start } => write!(
                f,
                "the body is not the file expected ({reason}); it starts with {start:?}"
            ),
            DownloadError::File {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for DownloadError {}

/// The messages of `error`'s causes, each once, joined by ": ". Network errors come wrapped
/// several times, and a wrapper's message often repeats its cause's, so a message that an
/// earlier one already holds is left out; `error`'s own message is only used when it has no
/// cause (reqwest's names the URL, which the caller says anyway).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !messages.iter().any(|m| m.contains(&message)) {
            messages.push(message);
        }
        next = cause.source();
    }
    if messages.is_empty() {
        error.to_string()
    } else {
        messages.join(": ")
    }
}

/// The first line of `bytes`, at most 60 bytes of it, as text for a message.
fn first_line(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&b| b == b'\n' || b == b'\r')
        .next()
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
    if line.len() > 60 {
        text.push('…');
    }
    text
}

/// The `.partial` file a download is written to, removed when dropped unless [`kept`]: so
/// it is gone on every way out of [`download`], an error, a timeout, a panic, or the future
/// being dropped before it completes.
///
/// [`kept`]: Partial::kept
#[derive(Debug)]
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    /// Creates (or truncates) the partial file for `dest`, with its directory. The file is
    /// created synchronously (one quick system call): a creation left running on tokio's
    /// blocking pool could complete after the future was dropped and the guard had run,
    /// leaving an empty file behind.
    fn create(dest: &Path) -> Result<(Partial, std::fs::File), DownloadError> {
        let mut name = dest.file_name().unwrap_or_default().to_owned();
        name.push(".partial");
        let partial = Partial {
            path: dest.with_file_name(name),
            kept: false,
        };
        let file_error = |action, error| DownloadError::File {
            action,
            path: partial.path.clone(),
            error,
        };
        if let Some(parent) = partial.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| file_error("create the directory of", e))?;
        }
        let file = std::fs::File::create(&partial.path).map_err(|e| file_error("create", e))?;
        Ok((partial, file))
    }

    /// Moves the file to `dest`; from then on it is no longer removed.
    async fn keep(mut self, dest: &Path) -> Result<(), DownloadError> {
        tokio::fs::rename(&self.path, dest)
            .await
            .map_err(|error| DownloadError::File {
                action: "move into place",
                path: dest.to_owned(),
                error,
            })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads `url` to `dest`.
///
/// The bytes go to `dest` with a `.partial` suffix first, and are renamed into place only
/// once the whole body has arrived and passed the checks: its length is the announced
/// `Content-Length` (when there is one), it is not empty, and its start passes
/// [`Options::check_start`]. A failed, stalled, cut, refused or cancelled download leaves
/// nothing behind, neither at `dest` nor the `.partial` file. Returns the bytes received.
///
/// # Errors
///
/// A [`DownloadError`] saying what was wrong.
pub async fn download(url: &str, dest: &Path, options: &Options) -> Result<u64, DownloadError> {
    let bar = if options.progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    let result = fetch(url, dest, options, &bar).await;
    bar.finish_and_clear();
    result
}

async fn fetch(
    url: &str,
    dest: &Path,
    options: &Options,
    bar: &ProgressBar,
) -> Result<u64, DownloadError> {
    let client = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .build()
        .map_err(|e| DownloadError::Request(causes(&e)))?;
    let wait = options.connect_timeout + options.read_timeout;
    let mut response = tokio::time::timeout(wait, client.get(url).send())
        .await
        .map_err(|_| DownloadError::NoResponse { after: wait })?
        .map_err(|e| DownloadError::Request(causes(&e)))?;
    if !response.status().is_success() {
        return Err(DownloadError::Status(response.status()));
    }
    let expected = response.content_length();
    bar.set_length(expected.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "downloading {}",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let (partial, file) = Partial::create(dest)?;
    let write_error = |error| DownloadError::File {
        action: "write",
        path: partial.path.clone(),
        error,
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut received = 0u64;
    let mut start = Vec::new();
    let mut checked = false;
    let check = |start: &[u8]| {
        (options.check_start)(start).map_err(|reason| DownloadError::Unexpected {
            reason,
            start: first_line(start),
        })
    };
    loop {
        let chunk = match tokio::time::timeout(options.read_timeout, response.chunk()).await {
            Err(_) => {
                return Err(DownloadError::Stalled {
                    after: options.read_timeout,
                    received,
                });
            }
            Ok(Err(e)) => {
                return Err(DownloadError::Interrupted {
                    received,
                    cause: causes(&e),
                });
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if !checked {
            let room = START - start.len();
            start.extend_from_slice(&chunk[..room.min(chunk.len())]);
            if start.len() == START {
                check(&start)?;
                checked = true;
            }
        }
        file.write_all(&chunk).await.map_err(write_error)?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    if let Some(expected) = expected.filter(|&n| n != received) {
        return Err(DownloadError::Short { received, expected });
    }
    if received == 0 {
        return Err(DownloadError::Empty);
    }
    if !checked {
        check(&start)?;
    }
    file.flush().await.map_err(write_error)?;
    // On disk before the rename, so that a crash cannot leave a short file at `dest`.
    file.sync_all().await.map_err(write_error)?;
    drop(file);
    partial.keep(dest).await?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server does after writing its response.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Then {
        /// Closes the connection.
        Close,
        /// Keeps it open, sending nothing more.
        Stall,
    }

    /// Serves one request on the loopback: `head` (status line and headers, without the
    /// blank line), then `body`, then [`Then`]; nothing at all if `head` is empty.
    async fn serve(head: &str, body: Vec<u8>, then: Then) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let silent = head.is_empty();
        let head = format!("{head}\r\nConnection: close\r\n\r\n");
        tokio::spawn(async move {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request).await;
            if !silent {
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.flush().await;
            }
            if then == Then::Stall {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        });
        format!("http://{addr}/file.csv")
    }

    fn ok(body: &[u8]) -> String {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}", body.len())
    }

    const CSV: &[u8] = b"id,name\n1,one\n2,two\n";

    /// Accepts a body that starts with `id,`.
    fn starts_with_id(start: &[u8]) -> Result<(), String> {
        if start.starts_with(b"id,") {
            Ok(())
        } else {
            Err("no `id` column first".to_owned())
        }
    }

    fn options() -> Options {
        Options {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_millis(300),
            check_start: starts_with_id,
            ..Options::default()
        }
    }

    /// A fresh directory for one test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("examples-download-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// Downloads `url` into a fresh directory, at most 20 s: the result, and the names of
    /// the files left in the directory.
    async fn fetch_into(
        name: &str,
        url: &str,
        options: &Options,
    ) -> (Result<u64, DownloadError>, Vec<String>) {
        let dir = scratch(name);
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            download(url, &dir.join("data/file.csv"), options),
        )
        .await
        .expect("the download ends");
        let mut left: Vec<String> = std::fs::read_dir(dir.join("data"))
            .map(|entries| {
                entries
                    .map(|e| {
                        e.expect("an entry")
                            .file_name()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        let _ = std::fs::remove_dir_all(dir);
        (result, left)
    }

    #[tokio::test]
    async fn a_whole_body_is_moved_into_place() {
        let url = serve(&ok(CSV), CSV.to_vec(), Then::Close).await;
        let dir = scratch("whole");
        let dest = dir.join("data/file.csv");
        let n = tokio::time::timeout(Duration::from_secs(20), download(&url, &dest, &options()))
            .await
            .expect("the download ends")
            .expect("downloaded");
        assert_eq!(n, CSV.len() as u64);
        assert_eq!(std::fs::read(&dest).expect("the file"), CSV);
        assert!(!dir.join("data/file.csv.partial").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_server_stalling_mid_body_times_out_and_leaves_nothing() {
        let url = serve(&ok(CSV), CSV[..10].to_vec(), Then::Stall).await;
        let (result, left) = fetch_into("stall", &url, &options()).await;
        match result {
            Err(DownloadError::Stalled { received: 10, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let url = serve("", Vec::new(), Then::Stall).await;
        let (result, left) = fetch_into("silent", &url, &options()).await;
        assert!(
            matches!(result, Err(DownloadError::NoResponse { .. })),
            "{result:?}"
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_dropped_download_removes_its_partial_file() {
        let url = serve(&ok(CSV), CSV[..10].to_vec(), Then::Stall).await;
        let dir = scratch("dropped");
        let dest = dir.join("data/file.csv");
        let partial = dir.join("data/file.csv.partial");
        let patient = Options {
            read_timeout: Duration::from_secs(600),
            ..options()
        };
        let mut download = Box::pin(download(&url, &dest, &patient));
        let appeared = async {
            while !partial.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            result = &mut download => panic!("the download ended: {result:?}"),
            () = appeared => {}
            () = tokio::time::sleep(Duration::from_secs(20)) => panic!("no partial file"),
        }
        drop(download);
        assert!(!partial.exists(), "the partial file is left");
        assert!(!dest.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_is_refused() {
        let url = serve(&ok(CSV), CSV[..10].to_vec(), Then::Close).await;
        let (result, left) = fetch_into("short", &url, &options()).await;
        let error = result.expect_err("refused");
        // hyper notices the early end itself; either way, nothing is kept.
        assert!(
            matches!(
                error,
                DownloadError::Interrupted { received: 10, .. }
                    | DownloadError::Short { received: 10, .. }
            ),
            "{error:?}"
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn an_empty_body_is_refused() {
        let url = serve(&ok(b""), Vec::new(), Then::Close).await;
        let (result, left) = fetch_into("empty", &url, &options()).await;
        assert!(matches!(result, Err(DownloadError::Empty)), "{result:?}");
        assert!(left.is_empty(), "{left:?}");
        // Without a Content-Length, the body ends when the connection closes.
        let url = serve("HTTP/1.1 200 OK", Vec::new(), Then::Close).await;
        let (result, left) = fetch_into("empty-unsized", &url, &options()).await;
        assert!(matches!(result, Err(DownloadError::Empty)), "{result:?}");
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn an_html_page_with_200_is_refused_with_its_first_line() {
        let page = b"<!DOCTYPE html>\n<html><body>Rate limited</body></html>\n".to_vec();
        let url = serve(&ok(&page), page, Then::Close).await;
        let (result, left) = fetch_into("html", &url, &options()).await;
        let error = result.expect_err("refused");
        assert_eq!(
            error.to_string(),
            "the body is not the file expected (no `id` column first); it starts with \
             \"<!DOCTYPE html>\""
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_large_wrong_body_is_refused_before_its_end() {
        // More than `START` bytes, then a stall: refused on its start, not by the timeout.
        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 10000000",
            vec![b'x'; 2 * START],
            Then::Stall,
        )
        .await;
        let (result, left) = fetch_into("large", &url, &options()).await;
        assert!(
            matches!(result, Err(DownloadError::Unexpected { .. })),
            "{result:?}"
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn an_http_error_is_refused() {
        let url = serve(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 4",
            b"nope".to_vec(),
            Then::Close,
        )
        .await;
        let (result, left) = fetch_into("404", &url, &options()).await;
        assert_eq!(
            result.expect_err("refused").to_string(),
            "HTTP 404 Not Found"
        );
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_names_its_cause_once() {
        // A port nothing listens on any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port")
            .local_addr()
            .expect("an address")
            .port();
        let url = format!("http://127.0.0.1:{port}/file.csv");
        let (result, left) = fetch_into("refused", &url, &options()).await;
        let message = result.expect_err("refused").to_string();
        assert!(message.starts_with("the request failed: "), "{message}");
        assert_eq!(message.matches("refused").count(), 1, "{message}");
        assert!(!message.contains(&url), "{message}");
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn causes_are_named_once() {
        #[derive(Debug)]
        struct Wrapper(&'static str, Option<Box<Wrapper>>);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let io = Wrapper("connection reset", None);
        let hyper = Wrapper("error reading body: connection reset", Some(Box::new(io)));
        let top = Wrapper(
            "error decoding body for url (http://x/)",
            Some(Box::new(hyper)),
        );
        assert_eq!(causes(&top), "error reading body: connection reset");
        assert_eq!(causes(&Wrapper("alone", None)), "alone");
    }
}
