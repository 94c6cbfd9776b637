//! Forwarding what the proxy does not answer to the upstream resolvers (`--dns-server`, else
//! those of /etc/resolv.conf), byte for byte: the upstream's answer goes back unchanged,
//! NXDOMAIN and truncation included. UDP queries go upstream over UDP and TCP queries over
//! TCP, each from a fresh socket carrying the proxy's `SO_MARK`, so that the capture rule for
//! port 53 leaves them alone.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// The largest DNS message (the TCP length prefix is 16 bits).
pub(crate) const MAX_MESSAGE: usize = u16::MAX as usize;

/// The resolvers unanswered queries go to.
#[derive(Clone, Debug)]
pub(crate) struct Upstreams {
    servers: Vec<SocketAddr>,
    mark: Option<u32>,
    /// How long one server gets to answer one query.
    per_server: Duration,
}

impl Upstreams {
    /// `servers`, else the nameservers of /etc/resolv.conf; a query gets `timeout` in all.
    /// Without any server, what the proxy does not answer itself gets SERVFAIL.
    pub(crate) fn new(servers: &[SocketAddr], mark: Option<u32>, timeout: Duration) -> Upstreams {
        let servers = match servers.is_empty() {
            false => servers.to_vec(),
            true => system_servers().unwrap_or_else(|error| {
                tracing::warn!(%error, "the DNS proxy forwards nowhere");
                Vec::new()
            }),
        };
        if servers.is_empty() {
            tracing::warn!(
                "no upstream DNS server (/etc/resolv.conf names none and --dns-server is not set): \
                 the DNS proxy answers the mesh's names and SERVFAIL for the rest"
            );
        }
        let count = u32::try_from(servers.len()).unwrap_or(u32::MAX).max(1);
        Upstreams {
            per_server: (timeout / count).max(Duration::from_millis(200)),
            servers,
            mark,
        }
    }

    pub(crate) fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The first answer any server gives over UDP, in server order.
    pub(crate) async fn udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.servers {
            match tokio::time::timeout(self.per_server, self.udp_once(*server, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(error)) => tracing::debug!(%server, %error, "DNS upstream failed (UDP)"),
                Err(_) => tracing::debug!(%server, "DNS upstream timed out (UDP)"),
            }
        }
        None
    }

    /// The first answer any server gives over TCP, in server order.
    pub(crate) async fn tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.servers {
            match tokio::time::timeout(self.per_server, self.tcp_once(*server, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(error)) => tracing::debug!(%server, %error, "DNS upstream failed (TCP)"),
                Err(_) => tracing::debug!(%server, "DNS upstream timed out (TCP)"),
            }
        }
        None
    }

    async fn udp_once(&self, server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
        let any = match server {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        if let Some(mark) = self.mark {
            strait_proxy::set_socket_mark(&socket, mark)?;
        }
        socket.connect(server).await?;
        socket.send(query).await?;
        let mut buffer = vec![0u8; MAX_MESSAGE];
        loop {
            let read = socket.recv(&mut buffer).await?;
            // Only the answer to this query (same ID) counts; anything else is ignored.
            if read >= 12 && buffer[..2] == query[..2] {
                buffer.truncate(read);
                return Ok(buffer);
            }
        }
    }

    async fn tcp_once(&self, server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
        let socket = match server {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(mark) = self.mark {
            strait_proxy::set_socket_mark(&socket, mark)?;
        }
        let mut stream = socket.connect(server).await?;
        write_framed(&mut stream, query).await?;
        match read_framed(&mut stream).await? {
            Some(answer) => Ok(answer),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream closed without an answer",
            )),
        }
    }
}

/// Writes one length-prefixed DNS message (RFC 1035 4.2.2).
pub(crate) async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let length = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "DNS message too long"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// Reads one length-prefixed DNS message; `None` at a clean end of stream.
pub(crate) async fn read_framed(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = usize::from(u16::from_be_bytes(length));
    if length == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a zero-length DNS message",
        ));
    }
    let mut message = vec![0u8; length];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

/// The nameservers of /etc/resolv.conf.
fn system_servers() -> Result<Vec<SocketAddr>, String> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    let mut servers: Vec<SocketAddr> = Vec::new();
    for server in config.name_servers() {
        let port = server.connections.first().map_or(53, |c| c.port);
        let address = SocketAddr::new(server.ip, port);
        if !servers.contains(&address) {
            servers.push(address);
        }
    }
    Ok(servers)
}
