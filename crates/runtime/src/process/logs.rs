//! The CRI container log format the kubelet serves (`kubectl logs`): one record per line,
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`, where `P` marks a partial line
//! (a line longer than 16 KiB is cut into `P` records ending with an `F`), as containerd writes.

use std::fs::File;
use std::io::{self, Write};

/// containerd's `maxContainerLogLineSize` default is 16 KiB.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Buffers each stream's incomplete line and writes complete records.
#[derive(Debug)]
pub struct CriLogWriter<W: Write = File> {
    out: W,
    pending: [Vec<u8>; 2],
}

impl<W: Write> CriLogWriter<W> {
    pub fn new(out: W) -> Self {
        CriLogWriter {
            out,
            pending: [Vec::new(), Vec::new()],
        }
    }

    fn idx(s: Stream) -> usize {
        match s {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    /// Feeds bytes read from a stream; writes every complete line.
    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let i = Self::idx(stream);
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.pending[i]);
                    line.extend_from_slice(&data[..nl]);
                    self.write_line(stream, &line)?;
                    data = &data[nl + 1..];
                }
                None => {
                    self.pending[i].extend_from_slice(data);
                    data = &[];
                }
            }
        }
        // Long lines go out in `P` pieces as they arrive.
        while self.pending[i].len() > MAX_LINE {
            let rest = self.pending[i].split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.pending[i], rest);
            self.record(stream, "P", &piece)?;
        }
        self.out.flush()
    }

    /// At end of stream: a last line without newline is still a full record.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let i = Self::idx(stream);
        if !self.pending[i].is_empty() {
            let line = std::mem::take(&mut self.pending[i]);
            self.record(stream, "F", &line)?;
        }
        self.out.flush()
    }

    fn write_line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut line = line;
        while line.len() > MAX_LINE {
            self.record(stream, "P", &line[..MAX_LINE])?;
            line = &line[MAX_LINE..];
        }
        self.record(stream, "F", line)
    }

    fn record(&mut self, stream: Stream, tag: &str, content: &[u8]) -> io::Result<()> {
        let mut rec = Vec::with_capacity(content.len() + 48);
        write!(
            rec,
            "{} {} {tag} ",
            rfc3339_nano(jiff::Timestamp::now()),
            stream.as_str()
        )?;
        rec.extend_from_slice(content);
        rec.push(b'\n');
        // One write per record so concurrent readers never see half a timestamp.
        self.out.write_all(&rec)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Go's `time.RFC3339Nano` in UTC: nanoseconds with trailing zeros trimmed.
pub fn rfc3339_nano(t: jiff::Timestamp) -> String {
    let secs = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos == 0 {
        return format!("{secs}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{secs}.{}Z", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(out: &[u8]) -> Vec<(String, String, String)> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap_or_default();
                assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
                (
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_partials_and_streams() {
        let mut w = CriLogWriter::new(Vec::new());
        w.feed(Stream::Stdout, b"hello\nwor").expect("feed");
        w.feed(Stream::Stderr, b"oops\n").expect("feed");
        w.feed(Stream::Stdout, b"ld\n\n").expect("feed");
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        w.feed(Stream::Stdout, &long).expect("feed");
        w.feed(Stream::Stdout, b"\ntail").expect("feed");
        w.finish(Stream::Stdout).expect("finish");
        let recs = parse(&w.into_inner());
        let x = |n: usize| "x".repeat(n);
        assert_eq!(
            recs,
            vec![
                ("stdout".into(), "F".into(), "hello".into()),
                ("stderr".into(), "F".into(), "oops".into()),
                ("stdout".into(), "F".into(), "world".into()),
                ("stdout".into(), "F".into(), "".into()),
                ("stdout".into(), "P".into(), x(MAX_LINE)),
                ("stdout".into(), "P".into(), x(MAX_LINE)),
                ("stdout".into(), "F".into(), x(10)),
                ("stdout".into(), "F".into(), "tail".into()),
            ]
        );
    }

    #[test]
    fn timestamp_format() {
        let t: jiff::Timestamp = "2024-01-02T03:04:05.120Z".parse().expect("ts");
        assert_eq!(rfc3339_nano(t), "2024-01-02T03:04:05.12Z");
        let t: jiff::Timestamp = "2024-01-02T03:04:05Z".parse().expect("ts");
        assert_eq!(rfc3339_nano(t), "2024-01-02T03:04:05Z");
    }
}
