//! Reading a TLS ClientHello from the start of a connection without terminating TLS.
//!
//! Listeners peek at the ClientHello to route by SNI (TLS passthrough) and to choose a filter
//! chain by `server_name` and ALPN, then replay the bytes they read with
//! [`Prefixed`](crate::io::Prefixed) to whoever handles the connection: a local TLS acceptor or
//! an upstream connection.
//!
//! [`parse`] works on the bytes read so far and says whether they hold a complete ClientHello,
//! need more bytes, or are not TLS at all (plain HTTP is recognised from its first byte). It
//! reassembles a ClientHello fragmented across several TLS records (RFC 8446 section 5.1), and
//! accepts up to [`MAX_CLIENT_HELLO`] bytes of records, room for post-quantum key shares.
//! [`read_client_hello`] reads from a stream until [`parse`] can decide.
//!
//! The `host_name` of the `server_name` extension is returned verbatim, not validated as a DNS
//! name: Istio routes on names such as `outbound_.8080_._.reviews.default.svc.cluster.local`.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most bytes of TLS records (headers included) read to find a complete ClientHello.
///
/// A ClientHello with a post-quantum key share (X25519MLKEM768) is about 1.2-1.8 KB.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// `ContentType.handshake` (RFC 8446 section 5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// The major byte of every TLS (and SSL 3.0) record version.
const RECORD_VERSION_MAJOR: u8 = 3;
/// `type (1) + legacy_record_version (2) + length (2)` of `TLSPlaintext`.
const RECORD_HEADER_LEN: usize = 5;
/// `TLSPlaintext.length` MUST NOT exceed 2^14 (RFC 8446 section 5.1).
const MAX_RECORD_FRAGMENT: usize = 1 << 14;
/// `msg_type (1) + length (3)` of `Handshake`.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// `HandshakeType.client_hello`.
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
/// Length of `Random`.
const RANDOM_LEN: usize = 32;
/// `legacy_session_id<0..32>`.
const MAX_SESSION_ID_LEN: usize = 32;

/// `ExtensionType.server_name` (RFC 6066).
const EXTENSION_SERVER_NAME: u16 = 0;
/// `ExtensionType.application_layer_protocol_negotiation` (RFC 7301).
const EXTENSION_ALPN: u16 = 16;
/// `ExtensionType.supported_versions` (RFC 8446 section 4.2.1).
const EXTENSION_SUPPORTED_VERSIONS: u16 = 43;
/// `NameType.host_name` (RFC 6066 section 3).
const NAME_TYPE_HOST_NAME: u8 = 0;
/// The longest `host_name` accepted: the longest DNS name.
const MAX_HOST_NAME_LEN: usize = 255;

/// How much buffer space [`read_client_hello`] reserves before each read.
const READ_CHUNK: usize = 4096;

/// What routing needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` entry of the `server_name` extension, verbatim (not validated as a DNS
    /// name), or `None` if the client sent none.
    pub server_name: Option<String>,
    /// Protocol names of the `application_layer_protocol_negotiation` extension, in the
    /// client's order, decoded as lossy UTF-8.
    pub alpn: Vec<String>,
    /// `ClientHello.legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Versions of the `supported_versions` extension in the client's order (GREASE values
    /// included), empty if the client sent none.
    pub supported_versions: Vec<u16>,
}

/// What [`parse`] found in the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete ClientHello.
    Complete(ClientHello),
    /// The bytes so far begin a TLS handshake; more are needed.
    Incomplete,
    /// The connection does not start with a TLS handshake record (for example plain HTTP).
    NotTls,
}

/// Why a connection that starts like TLS does not carry a usable ClientHello.
#[derive(Debug, thiserror::Error)]
pub enum ClientHelloError {
    /// A record longer than `TLSPlaintext` allows.
    #[error("TLS record of {len} bytes exceeds the 16384-byte limit")]
    RecordOverflow {
        /// The record's `length` field.
        len: usize,
    },
    /// A handshake record with no fragment, which RFC 8446 forbids.
    #[error("zero-length TLS handshake record")]
    EmptyRecord,
    /// A record other than a handshake record before the ClientHello was complete.
    #[error("expected a TLS handshake record (content type 22), found content type {content_type}")]
    UnexpectedRecord {
        /// The record's `type` field.
        content_type: u8,
    },
    /// A later record whose version is not 3.x.
    #[error("TLS record version {major}.{minor} is not 3.x")]
    RecordVersion {
        /// Major byte of `legacy_record_version`.
        major: u8,
        /// Minor byte of `legacy_record_version`.
        minor: u8,
    },
    /// The first handshake message is not a ClientHello.
    #[error("first TLS handshake message has type {msg_type}, not client_hello (1)")]
    NotClientHello {
        /// The handshake message's `msg_type`.
        msg_type: u8,
    },
    /// The ClientHello does not fit in [`MAX_CLIENT_HELLO`] bytes of records.
    #[error("TLS ClientHello exceeds the {limit}-byte limit")]
    TooLarge {
        /// [`MAX_CLIENT_HELLO`].
        limit: usize,
    },
    /// A field, or the length that prefixes it, runs past the end of its enclosing structure.
    #[error("TLS ClientHello is malformed: {field} is truncated or overflows its enclosing length")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes left over after a structure that should have consumed them all.
    #[error("TLS ClientHello is malformed: {len} unexpected bytes after {field}")]
    TrailingBytes {
        /// The structure that should have ended.
        field: &'static str,
        /// How many bytes were left over.
        len: usize,
    },
    /// A vector whose length is outside the range, or not a multiple of the element size,
    /// that its definition allows.
    #[error("TLS ClientHello is malformed: {field} has invalid length {len}")]
    InvalidLength {
        /// The vector.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The same extension appears twice.
    #[error("TLS ClientHello repeats the {extension} extension")]
    DuplicateExtension {
        /// The extension's name.
        extension: &'static str,
    },
    /// The `server_name` extension lists more than one `host_name`.
    #[error("TLS ClientHello server_name lists more than one host_name")]
    DuplicateHostName,
    /// The `host_name` is empty, too long or not printable ASCII.
    #[error("TLS ClientHello server_name host_name is invalid: {reason}")]
    InvalidHostName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The connection ended before a complete ClientHello.
    #[error("connection closed after {read} bytes, before a complete TLS ClientHello")]
    UnexpectedEof {
        /// How many bytes had been read.
        read: usize,
    },
    /// Reading from the connection failed.
    #[error("reading the TLS ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses the bytes read so far from the start of a connection.
///
/// Returns [`Parsed::NotTls`] as soon as the first byte is not a handshake record type or the
/// second is not record version major 3, [`Parsed::Incomplete`] while a ClientHello has begun
/// but more bytes are needed, and [`Parsed::Complete`] once its handshake message, possibly
/// spread over several records, is all there. Bytes after it are ignored.
///
/// # Errors
///
/// Any malformed record or ClientHello, a first handshake message that is not a ClientHello,
/// or records beyond [`MAX_CLIENT_HELLO`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parsed, ClientHelloError> {
    if !starts_like_tls(buf) {
        return Ok(Parsed::NotTls);
    }
    match client_hello_message(buf)? {
        None => Ok(Parsed::Incomplete),
        Some(message) => parse_client_hello(&message).map(Parsed::Complete),
    }
}

/// Reads from `io` into `buf` until [`parse`] finds a complete ClientHello or not TLS.
///
/// `buf` holds the bytes already read from the start of the connection (usually none). Every
/// byte read is appended to it and kept, so the caller can replay them all with
/// [`Prefixed`](crate::io::Prefixed). Never reads past [`MAX_CLIENT_HELLO`] bytes in `buf`.
/// There is no timeout here: wrap the call in `tokio::time::timeout`.
///
/// # Errors
///
/// What [`parse`] reports, [`ClientHelloError::UnexpectedEof`] if the connection ends first,
/// and [`ClientHelloError::Io`] if reading fails.
pub async fn read_client_hello<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
) -> Result<Parsed, ClientHelloError> {
    loop {
        match parse(buf)? {
            Parsed::Incomplete => {}
            decided => return Ok(decided),
        }
        let room = MAX_CLIENT_HELLO.saturating_sub(buf.len());
        if room == 0 {
            return Err(too_large());
        }
        buf.reserve(room.min(READ_CHUNK));
        if io.read_buf(&mut (&mut *buf).limit(room)).await? == 0 {
            return Err(ClientHelloError::UnexpectedEof { read: buf.len() });
        }
    }
}

/// Whether the first bytes (as many as there are, up to two) could start a TLS handshake.
fn starts_like_tls(buf: &[u8]) -> bool {
    let content_type_ok = buf.first().is_none_or(|&b| b == CONTENT_TYPE_HANDSHAKE);
    let version_ok = buf.get(1).is_none_or(|&b| b == RECORD_VERSION_MAJOR);
    content_type_ok && version_ok
}

fn too_large() -> ClientHelloError {
    ClientHelloError::TooLarge {
        limit: MAX_CLIENT_HELLO,
    }
}

/// Reassembles the first handshake message from the records in `buf`.
///
/// Returns `None` while a record it needs is incomplete. Borrows when the message sits in one
/// record; copies it together from its fragments otherwise.
fn client_hello_message(buf: &[u8]) -> Result<Option<Cow<'_, [u8]>>, ClientHelloError> {
    let mut fragments: Vec<&[u8]> = Vec::new();
    let mut received = 0;
    let mut message_len = None;
    let mut offset = 0;
    loop {
        if let Some(len) = message_len
            && received >= len
        {
            return Ok(Some(join_fragments(&fragments, len)));
        }
        let Some(fragment) = next_record(buf, offset)? else {
            return Ok(None);
        };
        offset += RECORD_HEADER_LEN + fragment.len();
        received += fragment.len();
        fragments.push(fragment);
        if message_len.is_none() && received >= HANDSHAKE_HEADER_LEN {
            message_len = Some(client_hello_len(&fragments)?);
        }
    }
}

/// The fragment of the handshake record at `offset`, or `None` if it is not all in `buf` yet.
fn next_record(buf: &[u8], offset: usize) -> Result<Option<&[u8]>, ClientHelloError> {
    let fragment_start = offset + RECORD_HEADER_LEN;
    if fragment_start > MAX_CLIENT_HELLO {
        return Err(too_large());
    }
    let Some(header) = buf.get(offset..fragment_start) else {
        return Ok(None);
    };
    let mut header = Reader::new(header);
    let content_type = header.u8("record type")?;
    let [major, minor] = header.array("record version")?;
    let len = usize::from(header.u16("record length")?);
    if content_type != CONTENT_TYPE_HANDSHAKE {
        return Err(ClientHelloError::UnexpectedRecord { content_type });
    }
    if major != RECORD_VERSION_MAJOR {
        return Err(ClientHelloError::RecordVersion { major, minor });
    }
    if len > MAX_RECORD_FRAGMENT {
        return Err(ClientHelloError::RecordOverflow { len });
    }
    if len == 0 {
        return Err(ClientHelloError::EmptyRecord);
    }
    let fragment_end = fragment_start + len;
    if fragment_end > MAX_CLIENT_HELLO {
        return Err(too_large());
    }
    Ok(buf.get(fragment_start..fragment_end))
}

/// Checks the handshake header at the start of `fragments` (at least four bytes in all) and
/// returns the length of the whole ClientHello message, header included.
fn client_hello_len(fragments: &[&[u8]]) -> Result<usize, ClientHelloError> {
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    let bytes = fragments.iter().flat_map(|fragment| fragment.iter());
    for (slot, byte) in header.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    let [msg_type, len @ ..] = header;
    if msg_type != HANDSHAKE_TYPE_CLIENT_HELLO {
        return Err(ClientHelloError::NotClientHello { msg_type });
    }
    let message_len = HANDSHAKE_HEADER_LEN + u24(len);
    // Even in a single record the message needs one record header on top.
    if RECORD_HEADER_LEN + message_len > MAX_CLIENT_HELLO {
        return Err(too_large());
    }
    Ok(message_len)
}

/// The first `len` bytes of the concatenated `fragments` (which hold at least that many).
fn join_fragments<'a>(fragments: &[&'a [u8]], len: usize) -> Cow<'a, [u8]> {
    if let Some(first) = fragments.first()
        && let Some(message) = first.get(..len)
    {
        return Cow::Borrowed(message);
    }
    let mut message = fragments.concat();
    message.truncate(len);
    Cow::Owned(message)
}

/// Parses a whole ClientHello handshake message, header included (RFC 8446 section 4.1.2).
fn parse_client_hello(message: &[u8]) -> Result<ClientHello, ClientHelloError> {
    let mut reader = Reader::new(message);
    reader.take(HANDSHAKE_HEADER_LEN, "handshake header")?;
    let legacy_version = reader.u16("legacy_version")?;
    reader.take(RANDOM_LEN, "random")?;

    let session_id = reader.vec_u8("legacy_session_id")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(invalid_length("legacy_session_id", session_id));
    }
    let cipher_suites = reader.vec_u16("cipher_suites")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(invalid_length("cipher_suites", cipher_suites));
    }
    let compression_methods = reader.vec_u8("legacy_compression_methods")?;
    if compression_methods.is_empty() {
        return Err(invalid_length(
            "legacy_compression_methods",
            compression_methods,
        ));
    }

    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
    };
    // Before TLS 1.3 a ClientHello may end without an extensions block.
    if !reader.is_empty() {
        let extensions = reader.vec_u16("extensions")?;
        reader.finish("extensions")?;
        parse_extensions(extensions, &mut hello)?;
    }
    Ok(hello)
}

/// Fills `hello` from the extensions it routes on; other extensions are skipped.
fn parse_extensions(extensions: &[u8], hello: &mut ClientHello) -> Result<(), ClientHelloError> {
    let mut reader = Reader::new(extensions);
    let mut seen_server_name = false;
    let mut seen_alpn = false;
    let mut seen_supported_versions = false;
    while !reader.is_empty() {
        let extension_type = reader.u16("extension_type")?;
        let extension_data = reader.vec_u16("extension_data")?;
        match extension_type {
            EXTENSION_SERVER_NAME => {
                first_time(&mut seen_server_name, "server_name")?;
                hello.server_name = parse_server_name(extension_data)?;
            }
            EXTENSION_ALPN => {
                first_time(&mut seen_alpn, "application_layer_protocol_negotiation")?;
                hello.alpn = parse_alpn(extension_data)?;
            }
            EXTENSION_SUPPORTED_VERSIONS => {
                first_time(&mut seen_supported_versions, "supported_versions")?;
                hello.supported_versions = parse_supported_versions(extension_data)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Marks an extension as seen, failing if it was already.
fn first_time(seen: &mut bool, extension: &'static str) -> Result<(), ClientHelloError> {
    if std::mem::replace(seen, true) {
        return Err(ClientHelloError::DuplicateExtension { extension });
    }
    Ok(())
}

/// Parses `ServerNameList` (RFC 6066 section 3) and returns its `host_name`, if any.
fn parse_server_name(extension_data: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let mut reader = Reader::new(extension_data);
    let server_name_list = reader.vec_u16("server_name_list")?;
    reader.finish("server_name")?;
    if server_name_list.is_empty() {
        return Err(invalid_length("server_name_list", server_name_list));
    }

    let mut list = Reader::new(server_name_list);
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list.u8("name_type")?;
        // Unknown name types are assumed to share host_name's `opaque<1..2^16-1>` shape.
        let name = list.vec_u16("host_name")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.is_some() {
            return Err(ClientHelloError::DuplicateHostName);
        }
        host_name = Some(host_name_string(name)?);
    }
    Ok(host_name)
}

/// Checks a `host_name` is 1-255 bytes of printable ASCII and returns it verbatim.
fn host_name_string(name: &[u8]) -> Result<String, ClientHelloError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_HOST_NAME_LEN {
        "longer than 255 bytes"
    } else if !name.iter().all(u8::is_ascii_graphic) {
        "contains a byte outside printable ASCII"
    } else {
        return Ok(name.iter().copied().map(char::from).collect());
    };
    Err(ClientHelloError::InvalidHostName { reason })
}

/// Parses `ProtocolNameList` (RFC 7301 section 3.1) into protocol names.
fn parse_alpn(extension_data: &[u8]) -> Result<Vec<String>, ClientHelloError> {
    let mut reader = Reader::new(extension_data);
    let protocol_name_list = reader.vec_u16("protocol_name_list")?;
    reader.finish("application_layer_protocol_negotiation")?;
    if protocol_name_list.is_empty() {
        return Err(invalid_length("protocol_name_list", protocol_name_list));
    }

    let mut list = Reader::new(protocol_name_list);
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec_u8("protocol_name")?;
        if name.is_empty() {
            return Err(invalid_length("protocol_name", name));
        }
        protocols.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(protocols)
}

/// Parses the ClientHello form of `SupportedVersions` (RFC 8446 section 4.2.1).
fn parse_supported_versions(extension_data: &[u8]) -> Result<Vec<u16>, ClientHelloError> {
    let mut reader = Reader::new(extension_data);
    let versions = reader.vec_u8("supported_versions")?;
    reader.finish("supported_versions")?;
    if versions.is_empty() || versions.len() % 2 != 0 {
        return Err(invalid_length("supported_versions", versions));
    }

    let mut list = Reader::new(versions);
    let mut supported_versions = Vec::with_capacity(versions.len() / 2);
    while !list.is_empty() {
        supported_versions.push(list.u16("supported_versions")?);
    }
    Ok(supported_versions)
}

fn invalid_length(field: &'static str, vector: &[u8]) -> ClientHelloError {
    ClientHelloError::InvalidLength {
        field,
        len: vector.len(),
    }
}

/// `uint24` in network byte order.
fn u24([high, middle, low]: [u8; 3]) -> usize {
    (usize::from(high) << 16) | (usize::from(middle) << 8) | usize::from(low)
}

/// A cursor over TLS presentation-language structures; every read is bounds-checked.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `len` bytes.
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(ClientHelloError::Truncated { field })?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ClientHelloError> {
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| ClientHelloError::Truncated { field })
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ClientHelloError> {
        let [byte] = self.array(field)?;
        Ok(byte)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ClientHelloError> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// A vector with a one-byte length prefix (`<0..2^8-1>`).
    fn vec_u8(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    /// A vector with a two-byte length prefix (`<0..2^16-1>`).
    fn vec_u16(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// Fails if any bytes are left.
    fn finish(self, field: &'static str) -> Result<(), ClientHelloError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ClientHelloError::TrailingBytes {
                field,
                len: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::io::Prefixed;

    const ISTIO_SNI: &str = "outbound_.8080_._.reviews.default.svc.cluster.local";
    const ISTIO_SNI_PIPES: &str = "outbound|8080||reviews.default.svc.cluster.local";

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A self-signed certificate for example.com and its key.
    fn example_cert() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        (certified.cert.der().clone(), PrivateKeyDer::Pkcs8(key))
    }

    fn client_config(root: CertificateDer<'static>, alpn: &[&str]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    /// The first flight a rustls client writes: its ClientHello records.
    pub(crate) fn rustls_client_hello(server_name: &str, alpn: &[&str]) -> Vec<u8> {
        let (cert, _key) = example_cert();
        let config = Arc::new(client_config(cert, alpn));
        let server_name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut connection = rustls::ClientConnection::new(config, server_name).unwrap();
        let mut out = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut out).unwrap();
        }
        out
    }

    fn complete(parsed: Parsed) -> ClientHello {
        match parsed {
            Parsed::Complete(hello) => hello,
            other => panic!("expected a complete ClientHello, got {other:?}"),
        }
    }

    /// Splits records into their handshake bytes (all records must be handshake records).
    fn handshake_bytes(mut records: &[u8]) -> Vec<u8> {
        let mut handshake = Vec::new();
        while !records.is_empty() {
            assert_eq!(records[0], CONTENT_TYPE_HANDSHAKE);
            let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
            handshake.extend_from_slice(&records[5..5 + len]);
            records = &records[5 + len..];
        }
        handshake
    }

    /// Frames handshake bytes into handshake records of at most `size` bytes each.
    fn records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in handshake.chunks(size) {
            out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
            out.extend_from_slice(fragment);
        }
        out
    }

    fn with_u16_len(body: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn extension(extension_type: u16, data: &[u8]) -> Vec<u8> {
        let mut out = extension_type.to_be_bytes().to_vec();
        out.extend(with_u16_len(data));
        out
    }

    fn server_name_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend(with_u16_len(name));
        extension(EXTENSION_SERVER_NAME, &with_u16_len(&entry))
    }

    /// A ClientHello handshake message with the given extension blocks.
    fn hand_built_message(extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; RANDOM_LEN]);
        body.push(0); // legacy_session_id
        body.extend(with_u16_len(&[0x13, 0x01])); // cipher_suites
        body.extend_from_slice(&[1, 0]); // legacy_compression_methods
        body.extend(with_u16_len(&extensions.concat()));
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![HANDSHAKE_TYPE_CLIENT_HELLO, len[1], len[2], len[3]];
        message.extend(body);
        message
    }

    /// Rewrites the handshake length of `message` to match its size.
    fn fix_handshake_len(message: &mut [u8]) {
        let len = u32::try_from(message.len() - 4).unwrap().to_be_bytes();
        message[1..4].copy_from_slice(&len[1..]);
    }

    fn hand_built(extensions: &[Vec<u8>]) -> Vec<u8> {
        records(&hand_built_message(extensions), MAX_RECORD_FRAGMENT)
    }

    /// xorshift64: a small deterministic PRNG for the mutation loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    // (a) Real ClientHellos from rustls.

    #[test]
    fn parses_rustls_client_hello_with_h2() {
        let bytes = rustls_client_hello("example.com", &["h2", "http/1.1"]);
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        assert_eq!(hello.legacy_version, 0x0303);
        assert!(hello.supported_versions.contains(&0x0304));
        assert!(hello.supported_versions.contains(&0x0303));
    }

    #[test]
    fn parses_rustls_client_hello_with_istio_alpn() {
        let bytes = rustls_client_hello("example.com", &["istio-peer-exchange", "istio"]);
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["istio-peer-exchange", "istio"]);
    }

    #[test]
    fn post_quantum_client_hello_is_over_1k_and_parses() {
        let bytes = rustls_client_hello("example.com", &[]);
        assert!(bytes.len() > 1024, "hello is only {} bytes", bytes.len());
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert!(hello.alpn.is_empty());
    }

    #[test]
    fn ip_address_server_name_sends_no_sni() {
        let bytes = rustls_client_hello("127.0.0.1", &["h2"]);
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name, None);
        assert_eq!(hello.alpn, ["h2"]);
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        let mut bytes = rustls_client_hello("example.com", &["h2"]);
        bytes.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
    }

    // (b) One byte at a time.

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let bytes = rustls_client_hello("example.com", &["h2", "http/1.1"]);
        for len in 0..bytes.len() {
            assert!(
                matches!(parse(&bytes[..len]), Ok(Parsed::Incomplete)),
                "prefix of {len} bytes"
            );
        }
        complete(parse(&bytes).unwrap());
    }

    // (c) Fragmented across records.

    #[test]
    fn reassembles_hello_fragmented_into_100_byte_records() {
        let original = rustls_client_hello("example.com", &["h2", "http/1.1"]);
        let fragmented = records(&handshake_bytes(&original), 100);
        assert!(fragmented.len() > original.len() + 5 * 10);
        let hello = complete(parse(&fragmented).unwrap());
        assert_eq!(hello, complete(parse(&original).unwrap()));

        for len in 0..fragmented.len() {
            assert!(matches!(parse(&fragmented[..len]), Ok(Parsed::Incomplete)));
        }
    }

    #[test]
    fn reassembles_hello_with_handshake_header_split_across_records() {
        let original = rustls_client_hello("example.com", &["h2"]);
        for size in [1, 2, 3, 5, 7] {
            let fragmented = records(&handshake_bytes(&original), size);
            let hello = complete(parse(&fragmented).unwrap());
            assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        }
    }

    // (d) Istio SNI forms come back verbatim.

    #[test]
    fn istio_server_names_come_back_verbatim() {
        for name in [ISTIO_SNI, ISTIO_SNI_PIPES] {
            let bytes = hand_built(&[
                server_name_extension(name.as_bytes()),
                extension(EXTENSION_ALPN, &with_u16_len(b"\x05istio")),
                extension(EXTENSION_SUPPORTED_VERSIONS, &[2, 3, 4]),
            ]);
            let hello = complete(parse(&bytes).unwrap());
            assert_eq!(hello.server_name.as_deref(), Some(name));
            assert_eq!(hello.alpn, ["istio"]);
            assert_eq!(hello.supported_versions, [0x0304]);
        }
    }

    #[test]
    fn istio_underscore_server_name_from_rustls() {
        // rustls accepts underscores in DNS names (not `|`, hence the hand-built hellos above).
        let bytes = rustls_client_hello(ISTIO_SNI, &["istio"]);
        let hello = complete(parse(&bytes).unwrap());
        assert_eq!(hello.server_name.as_deref(), Some(ISTIO_SNI));
        assert_eq!(hello.alpn, ["istio"]);
    }

    #[test]
    fn hello_without_extensions_parses() {
        let mut message = hand_built_message(&[]);
        // Drop the (empty) extensions block and fix the handshake length.
        message.truncate(message.len() - 2);
        fix_handshake_len(&mut message);
        let hello = complete(parse(&records(&message, 1000)).unwrap());
        assert_eq!(hello.server_name, None);
        assert!(hello.alpn.is_empty() && hello.supported_versions.is_empty());
    }

    #[test]
    fn host_name_limits() {
        let longest = "a".repeat(255);
        let hello =
            complete(parse(&hand_built(&[server_name_extension(longest.as_bytes())])).unwrap());
        assert_eq!(hello.server_name, Some(longest));

        for bad in [
            &b"a".repeat(256)[..],
            b"",
            b"exa mple.com",
            b"example.com\0",
            b"\xc3\xa9.com",
        ] {
            let bytes = hand_built(&[server_name_extension(bad)]);
            assert!(
                matches!(parse(&bytes), Err(ClientHelloError::InvalidHostName { .. })),
                "{bad:?}"
            );
        }
    }

    // (e) Plain HTTP is recognised at once.

    #[test]
    fn plain_http_is_not_tls_within_three_bytes() {
        for request in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(parse(&request[..1]).unwrap(), Parsed::NotTls);
            assert_eq!(parse(&request[..3]).unwrap(), Parsed::NotTls);
            assert_eq!(parse(request).unwrap(), Parsed::NotTls);
        }
        assert_eq!(parse(b"").unwrap(), Parsed::Incomplete);
        assert_eq!(parse(&[22]).unwrap(), Parsed::Incomplete);
        assert_eq!(parse(&[22, 3]).unwrap(), Parsed::Incomplete);
        assert_eq!(parse(&[22, 2]).unwrap(), Parsed::NotTls);
        // An SSL 2.0-style hello is not something we route.
        assert_eq!(parse(&[0x80, 0x2e, 0x01]).unwrap(), Parsed::NotTls);
    }

    // (f) Errors, never panics.

    fn assert_error(bytes: &[u8], expected: fn(&ClientHelloError) -> bool) {
        match parse(bytes) {
            Err(error) if expected(&error) => {}
            other => panic!("unexpected result {other:?}"),
        }
    }

    #[test]
    fn record_errors() {
        assert_error(&[22, 3, 1, 0x40, 0x01], |e| {
            matches!(e, ClientHelloError::RecordOverflow { len: 16385 })
        });
        assert_error(&[22, 3, 1, 0, 0], |e| {
            matches!(e, ClientHelloError::EmptyRecord)
        });
        // A ServerHello where a ClientHello belongs.
        assert_error(&[22, 3, 3, 0, 4, 2, 0, 0, 0], |e| {
            matches!(e, ClientHelloError::NotClientHello { msg_type: 2 })
        });
        // A handshake message claiming far more than the cap.
        assert_error(&[22, 3, 1, 0, 4, 1, 0x10, 0, 0], |e| {
            matches!(e, ClientHelloError::TooLarge { .. })
        });
        // A record that would end past the cap, in a fragmented hello.
        let mut bytes = records(&[1, 0, 0x3f, 0xf0], 4);
        bytes.extend_from_slice(&[22, 3, 1, 0x3f, 0xff]);
        assert_error(&bytes, |e| matches!(e, ClientHelloError::TooLarge { .. }));

        let handshake = handshake_bytes(&rustls_client_hello("example.com", &[]));
        let fragmented = records(&handshake, 100);
        // An alert record in the middle of a fragmented hello.
        let mut interrupted = fragmented[..105].to_vec();
        interrupted.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert_error(&interrupted, |e| {
            matches!(e, ClientHelloError::UnexpectedRecord { content_type: 21 })
        });
        let mut bad_version = fragmented[..105].to_vec();
        bad_version.extend_from_slice(&[22, 4, 0, 0, 1, 0]);
        assert_error(&bad_version, |e| {
            matches!(e, ClientHelloError::RecordVersion { major: 4, minor: 0 })
        });
    }

    #[test]
    fn too_many_tiny_records_exceed_the_cap() {
        // 4 bytes of handshake per 9-byte record: a 9000-byte hello needs ~20 KB of records.
        let message = hand_built_message(&[extension(0xfe00, &[0; 9000])]);
        assert!(parse(&records(&message, 16_000)).is_ok());
        assert_error(&records(&message, 4), |e| {
            matches!(e, ClientHelloError::TooLarge { .. })
        });
    }

    #[test]
    fn client_hello_body_errors() {
        let duplicate_sni = hand_built(&[
            server_name_extension(b"a.example"),
            server_name_extension(b"b.example"),
        ]);
        assert_error(&duplicate_sni, |e| {
            matches!(
                e,
                ClientHelloError::DuplicateExtension {
                    extension: "server_name"
                }
            )
        });
        let duplicate_alpn = hand_built(&[
            extension(EXTENSION_ALPN, &with_u16_len(b"\x02h2")),
            extension(EXTENSION_ALPN, &with_u16_len(b"\x02h2")),
        ]);
        assert_error(&duplicate_alpn, |e| {
            matches!(e, ClientHelloError::DuplicateExtension { .. })
        });
        let two_host_names = {
            let entry = [&[0u8, 0, 1][..], b"a", &[0, 0, 1], b"b"].concat();
            hand_built(&[extension(EXTENSION_SERVER_NAME, &with_u16_len(&entry))])
        };
        assert_error(&two_host_names, |e| {
            matches!(e, ClientHelloError::DuplicateHostName)
        });
        let empty_alpn_name = hand_built(&[extension(EXTENSION_ALPN, &with_u16_len(&[0]))]);
        assert_error(&empty_alpn_name, |e| {
            matches!(
                e,
                ClientHelloError::InvalidLength {
                    field: "protocol_name",
                    ..
                }
            )
        });
        let odd_versions = hand_built(&[extension(EXTENSION_SUPPORTED_VERSIONS, &[3, 3, 4, 3])]);
        assert_error(&odd_versions, |e| {
            matches!(e, ClientHelloError::InvalidLength { .. })
        });
        let trailing_in_alpn = hand_built(&[extension(
            EXTENSION_ALPN,
            &[with_u16_len(b"\x02h2"), vec![9]].concat(),
        )]);
        assert_error(&trailing_in_alpn, |e| {
            matches!(e, ClientHelloError::TrailingBytes { .. })
        });
        // An extension whose length runs past the extensions block.
        let overflowing = hand_built(&[vec![0, 16, 0xff, 0xff, 0, 2]]);
        assert_error(&overflowing, |e| {
            matches!(e, ClientHelloError::Truncated { .. })
        });
    }

    #[test]
    fn session_id_and_trailing_message_errors() {
        let mut message = hand_built_message(&[]);
        let session_id_at = HANDSHAKE_HEADER_LEN + 2 + RANDOM_LEN;
        message[session_id_at] = 33;
        message.splice(session_id_at + 1..session_id_at + 1, [0; 33]);
        fix_handshake_len(&mut message);
        assert_error(&records(&message, 1000), |e| {
            matches!(
                e,
                ClientHelloError::InvalidLength {
                    field: "legacy_session_id",
                    len: 33
                }
            )
        });

        let mut message = hand_built_message(&[server_name_extension(b"example.com")]);
        message.push(0);
        fix_handshake_len(&mut message);
        assert_error(&records(&message, 1000), |e| {
            matches!(
                e,
                ClientHelloError::TrailingBytes {
                    field: "extensions",
                    ..
                }
            )
        });

        // A handshake length shorter than the fields it should hold.
        assert_error(&records(&[1, 0, 0, 3, 3, 3, 0], 100), |e| {
            matches!(e, ClientHelloError::Truncated { field: "random" })
        });
    }

    #[test]
    fn random_mutations_never_panic() {
        let original = rustls_client_hello("example.com", &["h2", "http/1.1"]);
        let fragmented = records(&handshake_bytes(&original), 100);
        let mut rng = XorShift(0x5eed_1234_abcd_ef01);
        let mut outcomes = [0usize; 4];
        for round in 0..4000 {
            let base = if round % 2 == 0 {
                &original
            } else {
                &fragmented
            };
            let mut bytes = base.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                }
                1 => bytes.truncate(rng.below(bytes.len())),
                2 => {
                    let at = rng.below(bytes.len());
                    let len = rng.below(64);
                    let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, junk);
                }
                _ => {
                    // Rewrite a length-like byte pair with an extreme value.
                    let at = rng.below(bytes.len() - 1);
                    let value: [u8; 2] = if rng.below(2) == 0 {
                        [0xff, 0xff]
                    } else {
                        [0, 0]
                    };
                    bytes[at..at + 2].copy_from_slice(&value);
                }
            }
            let outcome = match parse(&bytes) {
                Ok(Parsed::Complete(_)) => 0,
                Ok(Parsed::Incomplete) => 1,
                Ok(Parsed::NotTls) => 2,
                Err(_) => 3,
            };
            outcomes[outcome] += 1;
        }
        // Pure garbage that still starts like a TLS record.
        for _ in 0..2000 {
            let len = rng.below(300);
            let mut bytes: Vec<u8> = vec![22, 3, rng.next() as u8];
            bytes.extend((0..len).map(|_| rng.next() as u8));
            let _ = parse(&bytes);
        }
        assert!(outcomes.iter().all(|&count| count > 0), "{outcomes:?}");
    }

    // (g) read_client_hello over a pipe.

    #[tokio::test(start_paused = true)]
    async fn reads_hello_sent_in_small_chunks() {
        let bytes = rustls_client_hello("example.com", &["h2"]);
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(37) {
                client.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client.write_all(b"early").await.unwrap();
            client
        });

        let mut buf = BytesMut::new();
        let hello = complete(read_client_hello(&mut server, &mut buf).await.unwrap());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["h2"]);
        assert_eq!(&buf[..bytes.len()], &bytes[..]);
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn writer_closing_early_is_an_error() {
        let bytes = rustls_client_hello("example.com", &["h2"]);
        let (mut client, mut server) = tokio::io::duplex(64);
        let half = bytes[..bytes.len() / 2].to_vec();
        let writer = tokio::spawn(async move {
            for chunk in half.chunks(50) {
                client.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });

        let mut buf = BytesMut::new();
        let error = read_client_hello(&mut server, &mut buf).await.unwrap_err();
        assert!(
            matches!(error, ClientHelloError::UnexpectedEof { read } if read == bytes.len() / 2),
            "{error:?}"
        );
        assert_eq!(&buf[..], &bytes[..bytes.len() / 2]);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn empty_connection_is_an_eof_error() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let error = read_client_hello(&mut server, &mut BytesMut::new())
            .await
            .unwrap_err();
        assert!(matches!(error, ClientHelloError::UnexpectedEof { read: 0 }));
    }

    #[tokio::test]
    async fn plain_http_is_detected_without_waiting_for_more() {
        let (mut client, mut server) = tokio::io::duplex(64);
        // The client sends only a few bytes and keeps the connection open.
        client.write_all(b"GET").await.unwrap();
        let mut buf = BytesMut::new();
        let parsed = read_client_hello(&mut server, &mut buf).await.unwrap();
        assert_eq!(parsed, Parsed::NotTls);
        assert_eq!(&buf[..], b"GET");
    }

    #[tokio::test]
    async fn stops_at_the_cap() {
        let message = hand_built_message(&[extension(0xfe00, &[0; 9000])]);
        let bytes = records(&message, 4);
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            // The reader stops early, so the pipe may close under us.
            let _ = client.write_all(&bytes).await;
        });
        let mut buf = BytesMut::new();
        let error = read_client_hello(&mut server, &mut buf).await.unwrap_err();
        assert!(
            matches!(error, ClientHelloError::TooLarge { .. }),
            "{error:?}"
        );
        assert!(buf.len() <= MAX_CLIENT_HELLO);
        drop(server);
        writer.await.unwrap();
    }

    // Prefixed + read_client_hello in front of a real TLS acceptor.

    #[tokio::test]
    async fn tls_acceptor_completes_handshake_after_peeking() {
        let (cert, key) = example_cert();
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server_config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(cert, &["h2", "http/1.1"])));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();

        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let parsed = tokio::time::timeout(
                Duration::from_secs(10),
                read_client_hello(&mut stream, &mut buf),
            )
            .await
            .unwrap()
            .unwrap();
            let hello = complete(parsed);
            assert_eq!(hello.server_name.as_deref(), Some("example.com"));
            assert_eq!(hello.alpn, ["h2", "http/1.1"]);

            let mut tls = acceptor
                .accept(Prefixed::new(buf.freeze(), stream))
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            assert!(tls.get_ref().0.get_ref().peer_addr().is_ok());
            let mut message = [0u8; 5];
            tls.read_exact(&mut message).await.unwrap();
            tls.write_all(&message).await.unwrap();
            tls.shutdown().await.unwrap();
        });

        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let server_name = ServerName::try_from("example.com").unwrap();
        let mut tls = connector.connect(server_name, tcp).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut echoed = Vec::new();
        tls.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"hello");
        server.await.unwrap();
    }
}
