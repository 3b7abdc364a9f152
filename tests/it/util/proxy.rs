//! A TCP proxy a test puts between one Clientele instance and its database,
//! to cut the connection at will: [`Proxy::down`] is a database outage as
//! that instance sees it, while the database, and other instances, carry
//! on; [`Proxy::up`] ends it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    down: bool,
    /// The forwarding tasks of the connections open now.
    live: Vec<AbortHandle>,
}

pub struct Proxy {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to
    /// `host:port`.
    pub async fn start((host, port): (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("a bound port");
        let state = Arc::new(Mutex::new(State::default()));
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Decided under the lock that `down` takes, so that no
                // connection slips past an outage.
                let mut state = accepting.lock().unwrap();
                if state.down {
                    reset(client);
                    continue;
                }
                state.live.retain(|task| !task.is_finished());
                let target = (host.clone(), port);
                state.live.push(tokio::spawn(forward(client, target)).abort_handle());
            }
        });
        Self { address, state }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection through the proxy, and resets new ones until
    /// [`up`](Self::up).
    pub fn down(&self) {
        let mut state = self.state.lock().unwrap();
        state.down = true;
        for task in state.live.drain(..) {
            task.abort();
        }
    }

    pub fn up(&self) {
        self.state.lock().unwrap().down = false;
    }
}

/// Drops a connection with a reset rather than an orderly close, as a
/// database that went away does.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn forward(mut client: TcpStream, target: (String, u16)) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return reset(client);
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
