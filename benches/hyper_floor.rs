//! The floor of a proxy made of hyper on both sides: what `benches/instructions.sh` counts for a
//! proxy that does nothing but move a request to a node and the answer back.
//!
//!     cargo build --release --example hyper_floor
//!     target/release/examples/hyper_floor 127.0.0.1:LISTEN 127.0.0.1:NODE
//!
//! It has geolb's shape at its cheapest: hyper's HTTP/1 server for the client, hyper's HTTP/1
//! client connection for the node, kept in a pool of idle connections and driven by the request's
//! own task (no task per node connection), headers passed through untouched, no classifier, no
//! routing, no timeouts, no records. Every instruction it spends is hyper's, tokio's or the
//! allocator's; geolb's own work is what geolb spends above it. Not for use: no error answers, no
//! limits. Stops on SIGTERM (printing how many node connections it opened, which must stay small:
//! the pool works).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

static CONNECTS: AtomicUsize = AtomicUsize::new(0);

/// A node connection: where requests go, and the state machine that moves its bytes.
struct Up {
    send: SendRequest<Incoming>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Incoming>>>,
}

impl Up {
    /// Polls the driver once; false once the connection is closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.driver.as_mut().poll(cx).is_pending()
    }
}

type Idle = Arc<Mutex<Vec<Up>>>;

/// The answer's body, read through its connection, which goes back to the pool at its end.
struct Answer {
    body: Incoming,
    up: Option<Up>,
    idle: Idle,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(up) = &mut this.up {
            if !up.drive(cx) {
                this.up = None;
            }
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(up) = this.up.take() {
                if let Ok(mut idle) = this.idle.lock() {
                    idle.push(up);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    /// hyper's server stops reading a body once it says it has ended (its length reached), often
    /// before the `None` that would end it: the connection goes back here.
    fn drop(&mut self) {
        if let Some(up) = self.up.take() {
            if self.body.is_end_stream() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(up);
                }
            }
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    node: SocketAddr,
    idle: Idle,
) -> Result<Response<Answer>, hyper::Error> {
    let reused = idle.lock().ok().and_then(|mut idle| {
        while let Some(mut up) = idle.pop() {
            if up.drive(&mut Context::from_waker(Waker::noop())) && up.send.is_ready() {
                return Some(up);
            }
        }
        None
    });
    let mut up = match reused {
        Some(up) => up,
        None => {
            CONNECTS.fetch_add(1, Ordering::Relaxed);
            let tcp = match TcpStream::connect(node).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    eprintln!("hyper_floor: connect {node}: {e}");
                    std::process::exit(1);
                }
            };
            let _ = tcp.set_nodelay(true);
            let (send, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            Up {
                send,
                driver: Box::pin(driver),
            }
        }
    };
    let mut sent = std::pin::pin!(up.send.try_send_request(req));
    let response = std::future::poll_fn(|cx| {
        let driving = up.drive(cx);
        match sent.as_mut().poll(cx) {
            Poll::Pending if !driving => Poll::Ready(Err(None)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
        }
    })
    .await;
    let response = match response {
        Ok(response) => response,
        Err(Some(mut e)) => {
            drop(e.take_message());
            return Err(e.into_error());
        }
        Err(None) => {
            eprintln!("hyper_floor: node connection closed");
            std::process::exit(1);
        }
    };
    Ok(response.map(|body| Answer {
        body,
        up: Some(up),
        idle,
    }))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(node)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR NODE_ADDR");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hyper_floor: runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("hyper_floor: bind {listen}: {e}");
                std::process::exit(1);
            }
        };
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    eprintln!("hyper_floor: signal: {e}");
                    std::process::exit(1);
                }
            };
        let idle: Idle = Arc::default();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = term.recv() => break,
            };
            let _ = stream.set_nodelay(true);
            let idle = idle.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| forward(req, node, idle.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
        eprintln!(
            "hyper_floor: {} node connections opened",
            CONNECTS.load(Ordering::Relaxed)
        );
    });
}
