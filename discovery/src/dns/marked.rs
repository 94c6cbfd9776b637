//! The resolver's sockets with the proxy's `SO_MARK`: under capture with a mark (rather than
//! a dedicated uid), the port-53 rule would otherwise send the resolver's own lookups to the
//! sidecar's DNS proxy, which answers VIPs, not the hosts' real addresses.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// How long a TCP connection to a DNS server may take (hickory's own default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tokio's runtime for hickory, with every socket marked when a mark is set.
#[derive(Clone, Default)]
pub(crate) struct MarkedRuntime {
    tokio: TokioRuntimeProvider,
    mark: Option<u32>,
}

impl MarkedRuntime {
    pub(crate) fn new(mark: Option<u32>) -> MarkedRuntime {
        MarkedRuntime {
            tokio: TokioRuntimeProvider::default(),
            mark,
        }
    }
}

impl RuntimeProvider for MarkedRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = UdpSocket;
    type Tcp = AsyncIoTokioAsStd<TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.tokio.create_handle()
    }

    fn connect_tcp(
        &self,
        server: SocketAddr,
        bind: Option<SocketAddr>,
        wait_for: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        let Some(mark) = self.mark else {
            return self.tokio.connect_tcp(server, bind, wait_for);
        };
        Box::pin(async move {
            let socket = match server {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            strait_proxy::set_socket_mark(&socket, mark)?;
            if let Some(bind) = bind {
                socket.bind(bind)?;
            }
            socket.set_nodelay(true)?;
            let wait_for = wait_for.unwrap_or(CONNECT_TIMEOUT);
            match tokio::time::timeout(wait_for, socket.connect(server)).await {
                Ok(connected) => connected.map(AsyncIoTokioAsStd),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to the DNS server {server} timed out"),
                )),
            }
        })
    }

    fn bind_udp(
        &self,
        local: SocketAddr,
        server: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        let Some(mark) = self.mark else {
            return self.tokio.bind_udp(local, server);
        };
        Box::pin(async move {
            let socket = UdpSocket::bind(local).await?;
            strait_proxy::set_socket_mark(&socket, mark)?;
            Ok(socket)
        })
    }
}
