//! Downloading a file without ever leaving a corrupt copy behind.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

/// Downloads `url` to `dest`, showing a progress bar on stderr.
///
/// The bytes go to `dest` with a `.partial` suffix first and are renamed into place only once
/// the whole body has arrived (and matches the announced length, when there is one): a failed
/// or cut download leaves nothing at `dest`.
///
/// # Errors
///
/// Any network or file error, an HTTP status other than success, or a body shorter than its
/// `Content-Length`.
pub async fn download(url: &str, dest: &Path, progress: bool) -> Result<u64, String> {
    let partial = dest.with_extension("csv.partial");
    let result = fetch(url, &partial, progress).await;
    match result {
        Ok(n) => {
            tokio::fs::rename(&partial, dest)
                .await
                .map_err(|e| format!("cannot move the download into place: {e}"))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

async fn fetch(url: &str, partial: &Path, progress: bool) -> Result<u64, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("cannot fetch {url}: HTTP {}", response.status()));
    }
    let expected = response.content_length();
    let bar = if progress {
        ProgressBar::new(expected.unwrap_or(0))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("downloading airports.csv");
    if let Some(parent) = partial.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut received = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("download interrupted: {e}"))?
    {
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    file.flush().await.map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if let Some(expected) = expected {
        if received != expected {
            return Err(format!(
                "download interrupted: {received} of {expected} bytes"
            ));
        }
    }
    Ok(received)
}
