//! Clients with no HTTP library in between, for feeding a server input no well-behaved client
//! would send: bytes written verbatim on a TCP socket, and HTTP/2 frames encoded by hand
//! (RFC 9113 section 4; header blocks as HPACK literals, RFC 7541 section 6.2.2).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// What came back on a raw connection.
#[derive(Debug, Default)]
pub struct Reply {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// The server closed (or reset) the connection before the time limit.
    pub closed: bool,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of every HTTP/1.x status line in the reply, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        let mut statuses = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("HTTP/1.") {
            let line = &rest[at..];
            if let Some(code) = line.get(9..12).and_then(|c| c.parse().ok()) {
                statuses.push(code);
            }
            rest = &rest[at + 7..];
        }
        statuses
    }
}

/// Whether `bytes` hold one complete HTTP/1.1 response with a `content-length` body.
fn complete_response(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|length| bytes.len() >= end + 4 + length)
}

/// Reads until the server closes the connection or `limit` passes; with `one_response`, also
/// stops after one complete response (the server may keep the connection open after it).
pub async fn read_reply(stream: &mut TcpStream, limit: Duration, one_response: bool) -> Reply {
    let mut reply = Reply::default();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if one_response && complete_response(&reply.bytes) {
            return reply;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return reply,
            Ok(Ok(0)) | Ok(Err(_)) => {
                reply.closed = true;
                return reply;
            }
            Ok(Ok(n)) => reply.bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the server closes the connection or `limit` passes.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Reply {
    read_reply(stream, limit, false).await
}

/// Connects, writes `bytes` as they are, and reads until the server closes the connection,
/// sends one complete response, or `limit` passes. A write the server refuses half-way (it
/// closed first) is not an error.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_reply(&mut stream, limit, true).await
}

/// Connects and writes `bytes` one byte at a time, `pause` apart, stopping early when the
/// server closes the connection; then reads what is left. Returns the reply and how many bytes
/// were written.
pub async fn trickle(
    addr: SocketAddr,
    bytes: &[u8],
    pause: Duration,
    limit: Duration,
) -> (Reply, usize) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let mut written = 0;
    let mut probe = [0u8; 4096];
    let mut early = Reply::default();
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            early.closed = true;
            break;
        }
        written += 1;
        // Anything the server says (or its close) ends the trickle.
        match tokio::time::timeout(pause, stream.read(&mut probe)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                early.closed = true;
                break;
            }
            Ok(Ok(n)) => early.bytes.extend_from_slice(&probe[..n]),
        }
        if start.elapsed() > limit {
            break;
        }
    }
    if early.closed {
        return (early, written);
    }
    let rest = read_to_close(&mut stream, limit.saturating_sub(start.elapsed())).await;
    early.bytes.extend_from_slice(&rest.bytes);
    early.closed = rest.closed;
    (early, written)
}

// ---- HTTP/2 ----

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// `CANCEL`, the error code a client resets a stream it no longer wants with.
pub const CANCEL: u32 = 0x8;

/// One frame: a 9-octet header and its payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24, "frame payload too long");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `settings` (identifier, value).
pub fn settings(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn ping(payload: [u8; 8]) -> Vec<u8> {
    frame(PING, 0, 0, &payload)
}

/// A header block as a HEADERS frame followed by as many CONTINUATION frames as frames of at
/// most 16384 octets (the default SETTINGS_MAX_FRAME_SIZE) need.
pub fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    const MAX: usize = 16384;
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![block]
    } else {
        block.chunks(MAX).collect()
    };
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut flags = if i == last { END_HEADERS } else { 0 };
        if i == 0 && end_stream {
            flags |= END_STREAM;
        }
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        out.extend_from_slice(&frame(kind, flags, stream, chunk));
    }
    out
}

/// An HPACK integer with an `prefix`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman coding: every
/// byte of every name and value goes on the wire exactly as given.
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The header block of a request: the pseudo-headers, then `extra`.
pub fn request_block(
    method: &str,
    authority: &str,
    path: &str,
    extra: &[(&[u8], &[u8])],
) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", method.as_bytes()),
        (b":scheme", b"http"),
        (b":authority", authority.as_bytes()),
        (b":path", path.as_bytes()),
    ];
    fields.extend_from_slice(extra);
    header_block(&fields)
}

/// The status of a response header block, from its first field as HPACK encoders write
/// `:status`: an indexed static entry (RFC 7541 appendix A, 8..=14) or a literal with the
/// `:status` name, raw or Huffman-coded.
pub fn response_status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let index = (first & 0x7f) as usize;
        return (8..=14).contains(&index).then(|| STATIC[index - 8]);
    }
    // Literal with incremental indexing (0x40), without indexing (0x00) or never indexed
    // (0x10), name index 8 (`:status`).
    if !matches!(first, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = (len_byte & 0x7f) as usize;
    let value = block.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 appendix B: `0`-`2` are
/// 5-bit codes 0b00000-0b00010, `3`-`9` are 6-bit codes 0b011001-0b011111).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let five = bits[at..at + 5].iter().fold(0u8, |acc, b| acc << 1 | b);
        if five <= 2 {
            out.push((b'0' + five) as char);
            at += 5;
            continue;
        }
        if at + 6 > bits.len() {
            break;
        }
        let six = bits[at..at + 6].iter().fold(0u8, |acc, b| acc << 1 | b);
        if (0b011001..=0b011111).contains(&six) {
            out.push((b'3' + (six - 0b011001)) as char);
            at += 6;
            continue;
        }
        break;
    }
    // What is left must be the EOS padding: all ones, under a byte.
    let padding = &bits[at..];
    (padding.len() < 8 && padding.iter().all(|b| *b == 1)).then_some(out)
}

/// A frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// How reading frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server sent GOAWAY (and may have closed after it).
    GoAway { code: u32 },
    /// The server closed or reset the connection without GOAWAY.
    Closed,
    /// Nothing ended the connection within the time limit.
    TimedOut,
}

/// What the server said on an HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: End,
    /// RST_STREAM error codes by stream.
    pub resets: BTreeMap<u32, u32>,
    /// Response statuses by stream (first HEADERS frame of each).
    pub statuses: BTreeMap<u32, Option<u16>>,
    /// DATA payload bytes by stream.
    pub data: BTreeMap<u32, usize>,
    /// Streams that ended normally (END_STREAM from the server).
    pub finished: Vec<u32>,
    /// Frames read, by type.
    pub frames: BTreeMap<u8, usize>,
}

impl Summary {
    fn new() -> Summary {
        Summary {
            end: End::TimedOut,
            resets: BTreeMap::new(),
            statuses: BTreeMap::new(),
            data: BTreeMap::new(),
            finished: Vec::new(),
            frames: BTreeMap::new(),
        }
    }

    /// Whether the server refused `stream`: reset it, answered it with a 4xx status, or went
    /// away without answering it.
    pub fn refused(&self, stream: u32) -> bool {
        self.resets.contains_key(&stream)
            || self
                .statuses
                .get(&stream)
                .is_some_and(|s| s.is_some_and(|s| (400..500).contains(&s)))
            || (!self.statuses.contains_key(&stream) && self.end != End::TimedOut)
    }

    pub fn count(&self, kind: u8) -> usize {
        self.frames.get(&kind).copied().unwrap_or(0)
    }
}

/// The reading half of a raw HTTP/2 connection.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame; `Ok(None)` when the server closed the connection.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let rest = self.buf.split_off(9 + len);
                    let raw = std::mem::replace(&mut self.buf, rest);
                    return Ok(Some(Frame {
                        kind: raw[3],
                        flags: raw[4],
                        stream: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff,
                        payload: raw[9..].to_vec(),
                    }));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.read.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until the server goes away or closes, or until `limit`, or (with
    /// `until_streams`) until every one of those streams was reset or finished. SETTINGS from
    /// the server are acknowledged through `ack` when given.
    pub async fn summarize(
        &mut self,
        limit: Duration,
        until_streams: &[u32],
        mut ack: Option<&mut OwnedWriteHalf>,
    ) -> Summary {
        let mut summary = Summary::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = !until_streams.is_empty()
                && until_streams
                    .iter()
                    .all(|s| summary.resets.contains_key(s) || summary.finished.contains(s));
            if done {
                return summary;
            }
            let frame = match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return summary,
                Ok(Err(_)) | Ok(Ok(None)) => {
                    if summary.end == End::TimedOut {
                        summary.end = End::Closed;
                    }
                    return summary;
                }
                Ok(Ok(Some(frame))) => frame,
            };
            *summary.frames.entry(frame.kind).or_default() += 1;
            match frame.kind {
                GOAWAY => {
                    let code = frame
                        .payload
                        .get(4..8)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(0);
                    summary.end = End::GoAway { code };
                    // Streams the server had started keep going; read on until it closes.
                }
                RST_STREAM => {
                    let code = frame
                        .payload
                        .get(0..4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(0);
                    summary.resets.insert(frame.stream, code);
                }
                HEADERS => {
                    summary
                        .statuses
                        .entry(frame.stream)
                        .or_insert_with(|| response_status(&header_fragment(&frame)));
                    if frame.flags & END_STREAM != 0 {
                        summary.finished.push(frame.stream);
                    }
                }
                DATA => {
                    *summary.data.entry(frame.stream).or_default() += frame.payload.len();
                    if frame.flags & END_STREAM != 0 {
                        summary.finished.push(frame.stream);
                    }
                }
                SETTINGS if frame.flags & ACK == 0 => {
                    if let Some(write) = ack.as_deref_mut() {
                        let _ = write.write_all(&frame_ack()).await;
                    }
                }
                _ => {}
            }
        }
    }
}

fn frame_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

/// A HEADERS frame's header block fragment (padding and priority removed).
fn header_fragment(frame: &Frame) -> Vec<u8> {
    let mut payload = frame.payload.as_slice();
    let mut pad = 0;
    if frame.flags & 0x8 != 0 {
        pad = payload.first().copied().unwrap_or(0) as usize;
        payload = payload.get(1..).unwrap_or_default();
    }
    if frame.flags & 0x20 != 0 {
        payload = payload.get(5..).unwrap_or_default();
    }
    payload
        .get(..payload.len().saturating_sub(pad))
        .unwrap_or_default()
        .to_vec()
}

/// A raw HTTP/2 connection (h2c with prior knowledge): the preface and a SETTINGS frame are
/// sent on connect; nothing else is done for the test.
pub struct H2 {
    pub reader: FrameReader,
    pub writer: OwnedWriteHalf,
}

impl H2 {
    pub async fn connect(addr: SocketAddr, client_settings: &[(u16, u32)]) -> H2 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.set_nodelay(true);
        let (read, mut writer) = stream.into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(client_settings));
        writer.write_all(&hello).await.unwrap();
        H2 {
            reader: FrameReader {
                read,
                buf: Vec::new(),
            },
            writer,
        }
    }

    /// Writes bytes; false when the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    /// Reads until the server resets or finishes every stream in `streams` (acknowledging its
    /// SETTINGS), goes away, or `limit` passes.
    pub async fn outcome(&mut self, streams: &[u32], limit: Duration) -> Summary {
        self.reader
            .summarize(limit, streams, Some(&mut self.writer))
            .await
    }
}
