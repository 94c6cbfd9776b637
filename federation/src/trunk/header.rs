//! What each trunk stream starts with: the caller's [`StreamHeader`] (which service, port and
//! subset the connection is for, the SNI it carries, the network it comes from), and the
//! remote gateway's [`StreamStatus`], sent back before any byte of the connection flows.
//!
//! Both are framed the same way: a magic byte ([`MAGIC`]), a version byte ([`VERSION`]), a
//! big-endian `u16` length of the body, and the body. A header's body is, in order: the service
//! host (`u8` length, 1 to 253 bytes), the port (`u16`, not 0), the subset (`u8` length, at most
//! 63 bytes, empty for none), the original SNI (`u8` length, empty for none) and the source
//! network (`u8` length, at most 63 bytes). A status's body is its code (0 OK, 1 refused), the
//! refusal's reason code, and a UTF-8 text (`u16` length, at most [`MAX_STATUS_TEXT`]). Every
//! length is checked, every byte must be used, and names may hold only the characters DNS
//! names, Istio subsets and network names use: anything else is a [`FrameError`] saying what.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first byte of every header and status.
pub const MAGIC: u8 = 0xE5;
/// The framing version this build writes and reads.
pub const VERSION: u8 = 1;
/// The most body bytes a header may have (the fields' own bounds allow 640).
pub const MAX_HEADER_BODY: usize = 1024;
/// The most bytes of text a status may carry.
pub const MAX_STATUS_TEXT: usize = 512;
/// The longest service host (a DNS name).
pub const MAX_SERVICE: usize = 253;
/// The longest subset and network names.
pub const MAX_LABEL: usize = 63;

/// Magic, version and the `u16` length.
const PREFIX: usize = 4;

/// Why a header or a status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "the stream does not start with a trunk frame (first byte {0:#04x}, expected {MAGIC:#04x})"
    )]
    BadMagic(u8),
    #[error("trunk frame version {0} is not supported (this side speaks version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("a trunk {what} of {length} bytes is longer than the limit of {limit}")]
    TooLong {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    #[error("the trunk frame ended inside its {0}")]
    Truncated(&'static str),
    #[error("the trunk frame has {0} bytes after its last field")]
    TrailingBytes(usize),
    #[error("the {field} {value:?} is not valid: {why}")]
    InvalidField {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("unknown trunk status code {0}")]
    UnknownStatus(u8),
    #[error("reading the trunk frame: {0}")]
    Io(#[from] std::io::Error),
}

/// The connection a trunk stream carries, as the caller's gateway describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamHeader {
    /// The service host, `reviews.default.svc.cluster.local`.
    pub service: String,
    pub port: u16,
    /// The subset name; empty for none.
    pub subset: String,
    /// The SNI of the caller's ClientHello (`outbound_.9080_.v1_.reviews...`); empty for none.
    pub original_sni: String,
    /// The network the caller is in.
    pub source_network: String,
}

/// Why a remote gateway refused a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The service, port or subset is not exported to the caller.
    NotExported,
    /// It is exported but has no endpoint to take the connection.
    NoHealthyEndpoint,
    /// No endpoint could be connected to.
    UpstreamConnectFailure,
    /// The stream's header could not be read.
    MalformedHeader,
    /// A reason a newer peer knows and this build does not.
    Other(u8),
}

impl RefusalReason {
    fn code(self) -> u8 {
        match self {
            RefusalReason::NotExported => 1,
            RefusalReason::NoHealthyEndpoint => 2,
            RefusalReason::UpstreamConnectFailure => 3,
            RefusalReason::MalformedHeader => 4,
            RefusalReason::Other(code) => code,
        }
    }

    fn from_code(code: u8) -> RefusalReason {
        match code {
            1 => RefusalReason::NotExported,
            2 => RefusalReason::NoHealthyEndpoint,
            3 => RefusalReason::UpstreamConnectFailure,
            4 => RefusalReason::MalformedHeader,
            other => RefusalReason::Other(other),
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::NotExported => f.write_str("not exported"),
            RefusalReason::NoHealthyEndpoint => f.write_str("no healthy endpoint"),
            RefusalReason::UpstreamConnectFailure => f.write_str("upstream connect failure"),
            RefusalReason::MalformedHeader => f.write_str("malformed header"),
            RefusalReason::Other(code) => write!(f, "reason {code}"),
        }
    }
}

/// The remote gateway's answer to a stream's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// The connection to the endpoint is open; the bytes flow.
    Ok,
    /// Refused, with why; the stream ends.
    Refused { reason: RefusalReason, text: String },
}

impl StreamHeader {
    /// The header's bytes.
    ///
    /// # Errors
    ///
    /// When a field is out of bounds or holds characters it may not: what [`decode`] would
    /// reject is never written.
    ///
    /// [`decode`]: StreamHeader::decode
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        self.validate()?;
        let mut body = Vec::with_capacity(
            5 + self.service.len()
                + 2
                + self.subset.len()
                + self.original_sni.len()
                + self.source_network.len(),
        );
        put_u8_string(&mut body, &self.service);
        body.extend_from_slice(&self.port.to_be_bytes());
        put_u8_string(&mut body, &self.subset);
        put_u8_string(&mut body, &self.original_sni);
        put_u8_string(&mut body, &self.source_network);
        Ok(frame(body))
    }

    /// Reads a header from the start of `buf`: `Ok(None)` while more bytes are needed, else
    /// the header and how many bytes it took.
    ///
    /// # Errors
    ///
    /// Anything malformed, as soon as it shows.
    pub fn decode(buf: &[u8]) -> Result<Option<(StreamHeader, usize)>, FrameError> {
        let Some(body) = body_of(buf, "header", MAX_HEADER_BODY)? else {
            return Ok(None);
        };
        let header = StreamHeader::from_body(body)?;
        Ok(Some((header, PREFIX + body.len())))
    }

    /// Reads a header from a stream, taking exactly its bytes.
    ///
    /// # Errors
    ///
    /// Anything malformed, or the stream ending (or failing) before the header does.
    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<StreamHeader, FrameError> {
        let body = read_frame(reader, "header", MAX_HEADER_BODY).await?;
        StreamHeader::from_body(&body)
    }

    fn from_body(body: &[u8]) -> Result<StreamHeader, FrameError> {
        let mut cursor = Cursor { rest: body };
        let header = StreamHeader {
            service: cursor.u8_string("service")?,
            port: cursor.u16("port")?,
            subset: cursor.u8_string("subset")?,
            original_sni: cursor.u8_string("original SNI")?,
            source_network: cursor.u8_string("source network")?,
        };
        cursor.finish()?;
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), FrameError> {
        check_name("service", &self.service, 1, MAX_SERVICE, is_name_char)?;
        if self.port == 0 {
            return Err(invalid("port", "0", "a port is 1 to 65535"));
        }
        check_name("subset", &self.subset, 0, MAX_LABEL, is_name_char)?;
        check_name(
            "original SNI",
            &self.original_sni,
            0,
            usize::from(u8::MAX),
            is_sni_char,
        )?;
        check_name(
            "source network",
            &self.source_network,
            0,
            MAX_LABEL,
            is_name_char,
        )
    }
}

impl StreamStatus {
    /// A refusal with `text` cut to [`MAX_STATUS_TEXT`] bytes (at a character boundary).
    pub fn refused(reason: RefusalReason, text: impl Into<String>) -> StreamStatus {
        let mut text = text.into();
        if text.len() > MAX_STATUS_TEXT {
            let mut end = MAX_STATUS_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        StreamStatus::Refused { reason, text }
    }

    /// The status's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            StreamStatus::Ok => body.extend_from_slice(&[0, 0, 0, 0]),
            StreamStatus::Refused { reason, text } => {
                let text = &text.as_bytes()[..text.len().min(MAX_STATUS_TEXT)];
                body.push(1);
                body.push(reason.code());
                // Bounded by MAX_STATUS_TEXT above.
                body.extend_from_slice(&(text.len() as u16).to_be_bytes());
                body.extend_from_slice(text);
            }
        }
        frame(body)
    }

    /// Reads a status from the start of `buf`, as [`StreamHeader::decode`] does a header.
    ///
    /// # Errors
    ///
    /// Anything malformed, as soon as it shows.
    pub fn decode(buf: &[u8]) -> Result<Option<(StreamStatus, usize)>, FrameError> {
        let Some(body) = body_of(buf, "status", 4 + MAX_STATUS_TEXT)? else {
            return Ok(None);
        };
        Ok(Some((StreamStatus::from_body(body)?, PREFIX + body.len())))
    }

    /// Reads a status from a stream, taking exactly its bytes.
    ///
    /// # Errors
    ///
    /// Anything malformed, or the stream ending (or failing) before the status does.
    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<StreamStatus, FrameError> {
        let body = read_frame(reader, "status", 4 + MAX_STATUS_TEXT).await?;
        StreamStatus::from_body(&body)
    }

    fn from_body(body: &[u8]) -> Result<StreamStatus, FrameError> {
        let mut cursor = Cursor { rest: body };
        let code = cursor.u8("status code")?;
        let reason = cursor.u8("reason code")?;
        let length = usize::from(cursor.u16("status text length")?);
        if length > MAX_STATUS_TEXT {
            return Err(FrameError::TooLong {
                what: "status text",
                length,
                limit: MAX_STATUS_TEXT,
            });
        }
        let text = cursor.take(length, "status text")?;
        cursor.finish()?;
        let text = std::str::from_utf8(text)
            .map_err(|_| invalid("status text", &String::from_utf8_lossy(text), "not UTF-8"))?;
        match code {
            0 if reason == 0 && text.is_empty() => Ok(StreamStatus::Ok),
            0 => Err(invalid("status", text, "an OK status carries no reason")),
            1 => Ok(StreamStatus::Refused {
                reason: RefusalReason::from_code(reason),
                text: text.to_owned(),
            }),
            other => Err(FrameError::UnknownStatus(other)),
        }
    }
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX + body.len());
    out.push(MAGIC);
    out.push(VERSION);
    // Bodies are bounded far below u16::MAX by the fields' limits.
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks the prefix and returns the body once it is all in `buf`.
fn body_of<'a>(
    buf: &'a [u8],
    what: &'static str,
    limit: usize,
) -> Result<Option<&'a [u8]>, FrameError> {
    let Some(length) = check_prefix(buf, what, limit)? else {
        return Ok(None);
    };
    Ok(buf.get(PREFIX..PREFIX + length))
}

/// Checks as much of the prefix as `buf` holds; the body's length once it is all there.
fn check_prefix(buf: &[u8], what: &'static str, limit: usize) -> Result<Option<usize>, FrameError> {
    if let Some(&magic) = buf.first()
        && magic != MAGIC
    {
        return Err(FrameError::BadMagic(magic));
    }
    if let Some(&version) = buf.get(1)
        && version != VERSION
    {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let (Some(&high), Some(&low)) = (buf.get(2), buf.get(3)) else {
        return Ok(None);
    };
    let length = usize::from(u16::from_be_bytes([high, low]));
    if length > limit {
        return Err(FrameError::TooLong {
            what,
            length,
            limit,
        });
    }
    Ok(Some(length))
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; PREFIX];
    read_exact(reader, &mut prefix, what).await?;
    let length = check_prefix(&prefix, what, limit)?.unwrap_or(0);
    let mut body = vec![0u8; length];
    read_exact(reader, &mut body, what).await?;
    Ok(body)
}

async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated(what)),
        Err(e) => Err(FrameError::Io(e)),
    }
}

fn put_u8_string(out: &mut Vec<u8>, value: &str) {
    // Validated to at most 255 bytes before encoding.
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Truncated(field));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u8_string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let length = usize::from(self.u8(field)?);
        let bytes = self.take(length, field)?;
        // Every field is ASCII; anything else fails validation with the value shown.
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(field, &String::from_utf8_lossy(bytes), "not ASCII"))
    }

    fn finish(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes(self.rest.len()))
        }
    }
}

fn check_name(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
    allowed: fn(u8) -> bool,
) -> Result<(), FrameError> {
    if value.len() < min {
        return Err(invalid(field, value, "it may not be empty"));
    }
    if value.len() > max {
        return Err(FrameError::TooLong {
            what: field,
            length: value.len(),
            limit: max,
        });
    }
    if !value.bytes().all(allowed) {
        return Err(invalid(field, value, "it holds a character it may not"));
    }
    Ok(())
}

fn invalid(field: &'static str, value: &str, why: &'static str) -> FrameError {
    FrameError::InvalidField {
        field,
        value: value.to_owned(),
        why,
    }
}

/// Letters, digits, `-`, `.`, `_`: DNS names as Kubernetes and ServiceEntry hosts use them, and
/// Kubernetes label values (subset and network names).
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Istio's SNIs: DNS names, `outbound_.PORT_.SUBSET_.HOST` and `outbound|PORT|SUBSET|HOST`.
fn is_sni_char(b: u8) -> bool {
    is_name_char(b) || b == b'|'
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
