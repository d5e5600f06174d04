//! A TCP link between one process and a server that a test can cut and restore: the
//! fault "this process alone loses that server" (docs/chaos.md uses Toxiproxy for the
//! same fault outside tests).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Link {
    port: u16,
    state: Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    cut: AtomicBool,
    /// Bytes are held, not forwarded, while set: a peer that is alive but not answering.
    stalled: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every forwarded connection, to break them when the link is cut.
    live: Mutex<Vec<TcpStream>>,
}

impl LinkState {
    fn break_all(&self) {
        for stream in self.live.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Link {
    /// Listens on a free loopback port and forwards each connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(LinkState::default());
        let accept_state = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                // A cut link accepts and drops at once: the caller sees a reset, as
                // with a peer that is gone.
                if accept_state.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&([127, 0, 0, 1], target).into(), Duration::from_secs(2)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                accept_state.live.lock().unwrap_or_else(|p| p.into_inner()).extend([c3, s3]);
                let (to_server, to_client) = (accept_state.clone(), accept_state.clone());
                std::thread::spawn(move || pump(client, server, &to_server));
                std::thread::spawn(move || pump(s2, c2, &to_client));
            }
        });
        Ok(Link { port, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Breaks every connection through the link and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.break_all();
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Holds every byte in both directions, keeping the connections open, until `resume`.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes, then closes both; holds what it read
/// while the link is stalled.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &LinkState) {
    use std::io::{Read, Write};
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        while state.stalled.load(Ordering::SeqCst) && !state.stopped.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.break_all();
        // Wakes the accept loop so that it sees `stopped` and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
