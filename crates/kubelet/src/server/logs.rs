//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's CRI-format log file turned
//! back into the text the container wrote, with upstream's options (`follow`, `previous`,
//! `tailLines`, `limitBytes`, `sinceSeconds`, `sinceTime`, `timestamps`).
//!
//! The file holds one entry per line: `<RFC3339Nano> <stdout|stderr> <F|P> <message>`. `F`
//! entries end a line (a newline is added back), `P` entries are pieces of a long line and
//! are written as they are, so consecutive partials join. Like upstream, `tailLines` counts
//! file entries and `timestamps` prefixes every entry.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::{Body, ServerState, query_pairs, text};
use crate::directory::LookupError;

/// How often a followed log is polled for new bytes once it is at its end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often a followed log's container is checked for having stopped.
const STATE_CHECK: Duration = Duration::from_millis(500);

/// Parsed query of a log request.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub since: Option<jiff::Timestamp>,
    pub timestamps: bool,
}

/// Go's `strconv.ParseBool`, with an empty value meaning false.
fn parse_bool(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(format!("invalid value for {k}: {v:?}")),
    }
}

pub(crate) fn parse_options(query: Option<&str>) -> Result<LogOptions, String> {
    let mut o = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "follow" => o.follow = parse_bool(&k, &v)?,
            "previous" => o.previous = parse_bool(&k, &v)?,
            "timestamps" => o.timestamps = parse_bool(&k, &v)?,
            "tailLines" => {
                let n: i64 = v.parse().map_err(|_| format!("invalid tailLines: {v:?}"))?;
                if n < 0 {
                    return Err(
                        "tailLines: Invalid value: must be greater than or equal to 0".into(),
                    );
                }
                o.tail_lines = Some(n as u64);
            }
            "limitBytes" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("invalid limitBytes: {v:?}"))?;
                if n < 1 {
                    return Err("limitBytes: Invalid value: must be greater than 0".into());
                }
                o.limit_bytes = Some(n as u64);
            }
            "sinceSeconds" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("invalid sinceSeconds: {v:?}"))?;
                if n < 1 {
                    return Err("sinceSeconds: Invalid value: must be greater than 0".into());
                }
                since_seconds = Some(n);
            }
            "sinceTime" => {
                let t: jiff::Timestamp = v
                    .parse()
                    .map_err(|e| format!("invalid sinceTime {v:?}: {e}"))?;
                since_time = Some(t);
            }
            _ => {}
        }
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        (Some(s), None) => {
            o.since = jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(s))
                .ok();
        }
        (None, t) => o.since = t,
    }
    Ok(o)
}

/// One parsed CRI log entry.
#[derive(Debug, PartialEq)]
pub(crate) struct Entry<'a> {
    pub timestamp: jiff::Timestamp,
    pub stream: &'a str,
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses `<timestamp> <stream> <tag> <message>` (no trailing newline).
pub(crate) fn parse_cri(line: &[u8]) -> Option<Entry<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(it.next()?).ok()?;
    let stream = std::str::from_utf8(it.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = it.next()?;
    // Tags are `F` or `P`, optionally followed by `:`-separated extensions.
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let message = it.next().unwrap_or(b"");
    Some(Entry {
        timestamp: ts.parse().ok()?,
        stream,
        partial,
        message,
    })
}

/// Appends the text of one log entry to `out` (empty when filtered out).
fn render(line: &[u8], opts: &LogOptions, out: &mut Vec<u8>) {
    let Some(e) = parse_cri(line) else {
        tracing::debug!("skipping a log line that is not in the CRI format");
        return;
    };
    if let Some(since) = opts.since
        && e.timestamp < since
    {
        return;
    }
    if opts.timestamps {
        // Go's RFC3339Nano: trailing zeros of the fraction dropped, `Z` for UTC.
        out.extend_from_slice(e.timestamp.to_string().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(e.message);
    if !e.partial {
        out.push(b'\n');
    }
}

/// Byte offset where the last `n` lines of the file start (upstream's
/// `FindTailLineStartIndex`): reads backwards in blocks.
pub(crate) fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut count = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let size = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..size])?;
        for i in (0..size).rev() {
            let abs = start + i as u64;
            // The newline that ends the file's last line does not start a line.
            if buf[i] == b'\n' && abs != len - 1 {
                count += 1;
                if count == n {
                    return Ok(abs + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// A body fed by a channel, so a followed log streams as it grows.
pub(crate) struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub(crate) async fn container_logs(
    state: &ServerState,
    ns: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Response<Body> {
    let mut opts = match parse_options(query) {
        Ok(o) => o,
        Err(e) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid request: {e}"),
            );
        }
    };
    let c = match state.pods.container(ns, pod, container) {
        Ok(c) => c,
        Err(LookupError::PodNotFound { .. }) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("pod {pod:?} does not exist"),
            );
        }
        Err(LookupError::ContainerNotFound { .. }) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("container {container:?} not found in pod {pod:?}"),
            );
        }
    };
    let path = if opts.previous {
        // A terminated attempt does not grow: nothing to follow.
        opts.follow = false;
        match c.previous_log_path.clone() {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "previous terminated container {container:?} in pod {pod:?} not found"
                    ),
                );
            }
        }
    } else {
        match c.log_path.clone() {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                    ),
                );
            }
        }
    };
    if opts.follow && !c.running {
        opts.follow = false;
    }
    let start = match opts.tail_lines {
        None => 0,
        Some(n) => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || tail_offset(&p, n)).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Ok(Err(e)) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("failed to read {}: {e}", path.display()),
                    );
                }
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let follow = Follow {
        state: state.clone(),
        ns: ns.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        container_id: c.container_id.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = stream_file(path.clone(), start, opts, follow, tx).await {
            tracing::debug!(path = %path.display(), error = %e, "log stream ended with an error");
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Who to ask whether a followed container still runs.
struct Follow {
    state: ServerState,
    ns: String,
    pod: String,
    container: String,
    container_id: Option<String>,
}

impl Follow {
    /// Whether the attempt whose log is followed still runs (a restart ends `-f`, like
    /// upstream, which follows one attempt's file).
    fn running(&self) -> bool {
        match self
            .state
            .pods
            .container(&self.ns, &self.pod, &self.container)
        {
            Ok(c) => c.running && c.container_id == self.container_id,
            Err(_) => false,
        }
    }
}

async fn stream_file(
    path: PathBuf,
    start: u64,
    opts: LogOptions,
    follow: Follow,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        // No output yet: with -f, wait for the file; otherwise an empty log.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.follow => loop {
            if tx.is_closed() || !follow.running() {
                return Ok(());
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            if let Ok(f) = tokio::fs::File::open(&path).await {
                break f;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(start)).await?;
    let mut pos = start;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = opts.limit_bytes;
    let mut last_check = Instant::now();
    let mut finishing = false;
    loop {
        let n = file.read(&mut buf).await?;
        let mut out = Vec::new();
        if n > 0 {
            pos += n as u64;
            pending.extend_from_slice(&buf[..n]);
            let mut consumed = 0;
            while let Some(i) = pending[consumed..].iter().position(|b| *b == b'\n') {
                render(&pending[consumed..consumed + i], &opts, &mut out);
                consumed += i + 1;
            }
            pending.drain(..consumed);
        } else if !opts.follow || finishing {
            // The end: a last line without its newline still counts.
            if !pending.is_empty() {
                render(&pending, &opts, &mut out);
                pending.clear();
            }
            send(&tx, out, &mut left).await;
            return Ok(());
        }
        if !out.is_empty() && !send(&tx, out, &mut left).await {
            return Ok(());
        }
        if n > 0 {
            continue;
        }
        // Following, at the end of the file.
        if tx.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        if last_check.elapsed() >= STATE_CHECK {
            last_check = Instant::now();
            if !follow.running() {
                // Read what the container wrote before it stopped, then end.
                finishing = true;
            }
        }
        // Rotated or truncated underneath us: start over on the new file.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() < pos
            && let Ok(f) = tokio::fs::File::open(&path).await
        {
            file = f;
            pos = 0;
            pending.clear();
        }
    }
}

/// Sends `out` honouring `limitBytes`; false when the stream must end (limit reached or the
/// client went away).
async fn send(tx: &mpsc::Sender<Bytes>, mut out: Vec<u8>, left: &mut Option<u64>) -> bool {
    let mut more = true;
    if let Some(l) = left {
        if (out.len() as u64) >= *l {
            out.truncate(*l as usize);
            more = false;
        }
        *l -= out.len() as u64;
    }
    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
        return false;
    }
    more
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_entries() {
        let e = parse_cri(b"2016-10-06T00:17:09.669794202Z stdout F hello world").expect("parses");
        assert_eq!(e.stream, "stdout");
        assert!(!e.partial);
        assert_eq!(e.message, b"hello world");
        assert_eq!(e.timestamp.to_string(), "2016-10-06T00:17:09.669794202Z");
        let e = parse_cri(b"2016-10-06T00:17:09.6697942Z stderr P ").expect("parses");
        assert!(e.partial);
        assert_eq!(e.message, b"");
        assert_eq!(e.timestamp.to_string(), "2016-10-06T00:17:09.6697942Z");
        assert!(parse_cri(b"{\"log\":\"docker json\"}").is_none());
        assert!(parse_cri(b"2016-10-06T00:17:09Z other F x").is_none());
    }

    #[test]
    fn partials_join_and_timestamps_prefix_entries() {
        let mut out = Vec::new();
        let o = LogOptions::default();
        render(b"2024-01-01T00:00:00Z stdout P abc", &o, &mut out);
        render(b"2024-01-01T00:00:01Z stdout F def", &o, &mut out);
        assert_eq!(out, b"abcdef\n");
        let mut out = Vec::new();
        let o = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        render(b"2024-01-01T00:00:00.500Z stderr F x", &o, &mut out);
        assert_eq!(out, b"2024-01-01T00:00:00.5Z x\n");
        let mut out = Vec::new();
        let o = LogOptions {
            since: Some("2024-01-01T00:00:01Z".parse().expect("ts")),
            ..Default::default()
        };
        render(b"2024-01-01T00:00:00Z stdout F old", &o, &mut out);
        render(b"2024-01-01T00:00:02Z stdout F new", &o, &mut out);
        assert_eq!(out, b"new\n");
    }

    #[test]
    fn tail_offset_counts_lines_from_the_end() -> std::io::Result<()> {
        let p = std::env::temp_dir().join(format!("kumo-tail-{}", std::process::id()));
        std::fs::write(&p, b"a\nbb\nccc\n")?;
        assert_eq!(tail_offset(&p, 0)?, 9);
        assert_eq!(tail_offset(&p, 1)?, 5);
        assert_eq!(tail_offset(&p, 2)?, 2);
        assert_eq!(tail_offset(&p, 3)?, 0);
        assert_eq!(tail_offset(&p, 10)?, 0);
        std::fs::write(
            &p,
            b"2024-01-01T00:00:01.5Z stdout F line one\n2024-01-01T00:00:02Z stderr F line two\n2024-01-01T00:00:03.123456789Z stdout P a long line \n2024-01-01T00:00:03.2Z stdout P in three \n2024-01-01T00:00:03.3Z stdout F pieces\n",
        )?;
        assert_eq!(tail_offset(&p, 3)?, 80);
        std::fs::write(&p, b"a\nbb")?;
        assert_eq!(tail_offset(&p, 1)?, 2);
        std::fs::remove_file(&p)?;
        Ok(())
    }

    #[test]
    fn options_follow_upstream_validation() {
        let o = parse_options(Some("follow=true&tailLines=3&timestamps=1&limitBytes=10"))
            .expect("valid");
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        assert!(parse_options(Some("tailLines=-1")).is_err());
        assert!(parse_options(Some("limitBytes=0")).is_err());
        assert!(parse_options(Some("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")).is_err());
        assert!(
            parse_options(Some("sinceSeconds=5"))
                .expect("valid")
                .since
                .is_some()
        );
    }
}

#[cfg(test)]
mod stream_tests {
    use std::sync::Arc;

    use super::*;
    use crate::directory::{ContainerRef, PodDirectory};

    struct One(PathBuf);

    impl PodDirectory for One {
        fn container(&self, _: &str, _: &str, _: &str) -> Result<ContainerRef, LookupError> {
            Ok(ContainerRef {
                container_id: Some("x".into()),
                log_path: Some(self.0.clone()),
                previous_log_path: None,
                running: false,
            })
        }
        fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
            Vec::new()
        }
    }

    async fn get(path: &Path, query: &str) -> String {
        let state = ServerState {
            node_name: "n".into(),
            pods: Arc::new(One(path.to_path_buf())),
            runtime: Arc::new(kumo_runtime::sim::SimRuntime::new(false)),
            metrics: prometheus::Registry::new(),
            api: None,
        };
        let r = container_logs(&state, "ns", "p", "c", Some(query)).await;
        let b = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn tail_limit_and_timestamps_over_a_file() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("kumo-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("0.log");
        std::fs::write(
            &p,
            "2024-01-01T00:00:01.5Z stdout F line one\n2024-01-01T00:00:02Z stderr F line two\n2024-01-01T00:00:03.123456789Z stdout P a long line \n2024-01-01T00:00:03.2Z stdout P in three \n2024-01-01T00:00:03.3Z stdout F pieces\n",
        )?;
        assert_eq!(
            get(&p, "").await,
            "line one\nline two\na long line in three pieces\n"
        );
        assert_eq!(
            get(&p, "tailLines=3").await,
            "a long line in three pieces\n"
        );
        assert_eq!(
            get(&p, "tailLines=1&timestamps=true").await,
            "2024-01-01T00:00:03.3Z pieces\n"
        );
        assert_eq!(get(&p, "limitBytes=12").await, "line one\nlin");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
