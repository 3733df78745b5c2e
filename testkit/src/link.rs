//! [`Link`]: the network link between two sites, as a TCP forwarder a test can cut.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A network link between two sites (the private link from on-prem to the cloud), made of
/// a TCP forwarder on `127.0.0.1`: every connection to [`port`](Self::port) is forwarded
/// byte for byte to the target port. It is a link, not a broker: it reads nothing of what
/// it carries (TLS passes through it end to end).
///
/// [`cut`](Self::cut) takes the link down as a failed line or a firewall rule would:
/// new connections are refused (the listening socket is closed) and every open one is
/// reset (RST). [`restore`](Self::restore) accepts connections again on the same port.
///
/// A broker started with [`BrokerBuilder::behind_link`](crate::BrokerBuilder::behind_link)
/// advertises the link's port on a second listener, so a client that bootstraps from
/// the link's [`bootstrap`](Self::bootstrap) address reaches it only over the link, while the test's own clients keep talking to the broker directly (see [`Broker::link`](crate::Broker::link)).
///
/// ```no_run
/// # let target_port = 9092;
/// let mut link = testkit::Link::open(target_port);
/// // ... a client connects to link.bootstrap() ...
/// link.cut(); // connections reset, new ones refused
/// link.restore();
/// ```
#[derive(Debug)]
pub struct Link {
    port: u16,
    target: Arc<AtomicU16>,
    accepted: Arc<AtomicUsize>,
    runtime: Runtime,
    /// While the link is up: what stops it, and the task that accepts and forwards.
    up: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Link {
    /// Opens a link on a free port of `127.0.0.1` to `127.0.0.1:target_port`.
    ///
    /// Panics if no port can be bound or the runtime cannot start.
    pub fn open(target_port: u16) -> Link {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("the loopback interface has a free port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-link")
            .enable_io()
            .build()
            .expect("a one-thread tokio runtime starts");
        let mut link = Link {
            port,
            target: Arc::new(AtomicU16::new(target_port)),
            accepted: Arc::new(AtomicUsize::new(0)),
            runtime,
            up: None,
        };
        link.serve(listener)
            .expect("a freshly bound listener can be served");
        link
    }

    /// The port clients connect to, the same across cuts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, to give a client as its bootstrap address.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections the link has accepted since it was opened: a test proves with
    /// it that its client went through the link.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Whether the link is up (not cut).
    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    /// Takes the link down: once this returns, the port refuses connections and every
    /// connection that was open has been reset. Does nothing if it is already cut.
    pub fn cut(&mut self) {
        if let Some((stop, task)) = self.up.take() {
            stop.cancel();
            // The task drops the listener and waits for its connections to be reset.
            let _ = self.runtime.block_on(task);
        }
    }

    /// Brings the link back up on the same port. Does nothing if it is up.
    ///
    /// Panics if the port cannot be bound again (something else took it meanwhile).
    pub fn restore(&mut self) {
        if self.up.is_some() {
            return;
        }
        // std sets SO_REUSEADDR on Unix listeners, so the port binds again at once.
        let listener =
            StdListener::bind((Ipv4Addr::LOCALHOST, self.port)).unwrap_or_else(|error| {
                panic!("link port {} cannot be bound again: {error}", self.port)
            });
        self.serve(listener)
            .unwrap_or_else(|error| panic!("link port {} cannot be served: {error}", self.port));
    }

    /// Forwards to another target port from the next connection on (a broker that moved).
    pub(crate) fn set_target(&self, target_port: u16) {
        self.target.store(target_port, Ordering::SeqCst);
    }

    fn serve(&mut self, listener: StdListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = self.runtime.enter();
            TcpListener::from_std(listener)?
        };
        let stop = CancellationToken::new();
        let task = self.runtime.spawn(accept(
            listener,
            Arc::clone(&self.target),
            Arc::clone(&self.accepted),
            stop.clone(),
        ));
        self.up = Some((stop, task));
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Accepts and forwards connections until `stop`, then closes the listener and waits
/// until every connection has been reset.
async fn accept(
    listener: TcpListener,
    target: Arc<AtomicU16>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            incoming = listener.accept() => {
                let Ok((inbound, _)) = incoming else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let to = SocketAddr::from((Ipv4Addr::LOCALHOST, target.load(Ordering::SeqCst)));
                connections.spawn(forward(inbound, to, stop.clone()));
            }
            // Reap finished connections as they end, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Copies bytes both ways between `inbound` and a new connection to `to` until either
/// side closes or `stop`; on `stop` both sockets are reset rather than closed cleanly.
async fn forward(mut inbound: TcpStream, to: SocketAddr, stop: CancellationToken) {
    let _ = inbound.set_nodelay(true);
    let Ok(mut outbound) = TcpStream::connect(to).await else {
        // Nothing listens behind the link: the client sees a reset, as from a dead host.
        let _ = inbound.set_zero_linger();
        return;
    };
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        () = stop.cancelled() => {
            // SO_LINGER 0: closing sends RST, as a failing line does to both ends.
            let _ = inbound.set_zero_linger();
            let _ = outbound.set_zero_linger();
        }
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream as StdStream;
    use std::time::Duration;

    use super::*;

    /// An echo server on a free port, answering every connection on its own thread.
    fn echo_server() -> u16 {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn echo_through(port: u16) -> io::Result<StdStream> {
        let mut stream = StdStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"ping")?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer)?;
        assert_eq!(&answer, b"ping");
        Ok(stream)
    }

    #[test]
    fn a_cut_link_resets_open_connections_refuses_new_ones_and_comes_back() {
        let mut link = Link::open(echo_server());
        let mut open = echo_through(link.port()).expect("the link forwards");
        assert_eq!(link.connections_accepted(), 1);

        link.cut();
        assert!(!link.is_up());
        let mut buffer = [0u8; 4];
        let after_cut = open
            .write_all(b"ping")
            .and_then(|()| open.read(&mut buffer));
        assert!(
            matches!(after_cut, Err(_) | Ok(0)),
            "an open connection is reset by the cut: {after_cut:?}"
        );
        let refused = StdStream::connect((Ipv4Addr::LOCALHOST, link.port()));
        assert_eq!(
            refused.map(|_| ()).map_err(|error| error.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );

        link.restore();
        echo_through(link.port()).expect("the restored link forwards on the same port");
        assert_eq!(link.connections_accepted(), 2);
    }

    #[test]
    fn a_link_to_nothing_resets_its_clients() {
        let nothing = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let link = Link::open(nothing);
        assert!(echo_through(link.port()).is_err());
    }
}
