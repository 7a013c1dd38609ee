//! The `ServerConnection` actor: owns one HTTP connection to a server (hyper's request
//! sender) and forwards requests on it. Dialing is in [`super::dial`], pooling in
//! [`super::pool`].

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use crate::http::body::ProxyBody;

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// The request sender of one server connection: its actor owns it, and lends it to the
/// client connection's task for one exchange while the actor is idle ([`exchange`]). Both
/// live on the same worker thread (`Rc`: the compiler keeps it there), so the sender is
/// handed over, never shared, and a request on a kept-alive connection costs no actor
/// message, mailbox or reply channel (measured with callgrind: see BENCHMARKS.md).
pub(crate) struct SenderSlot(RefCell<Option<Sender>>);

impl SenderSlot {
    fn take(&self) -> Option<Sender> {
        self.0.borrow_mut().take()
    }

    fn put(&self, s: Sender) {
        *self.0.borrow_mut() = Some(s);
    }
}

impl std::fmt::Debug for SenderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.0.borrow() {
            Some(Sender::H1(_)) => "idle (HTTP/1)",
            Some(Sender::H2(_)) => "idle (HTTP/2)",
            None => "lent",
        };
        f.debug_tuple("SenderSlot").field(&state).finish()
    }
}

/// Forwards one request on this server connection; answers the response head.
#[derive(Debug)]
pub(crate) struct Forward(pub(crate) hyper::Request<ProxyBody>);

impl Message for Forward {
    type Result = Result<hyper::Response<Incoming>, Unsent>;
}

/// Why a [`Forward`] failed, with the request when hyper gave it back: it was never written
/// to the connection (the connection was closed or not ready), so it can go on another one
/// as it is, without the caller keeping a copy.
#[derive(Debug)]
pub(crate) struct Unsent {
    pub(crate) reason: String,
    /// Boxed: the error stays small on the path where nothing failed.
    pub(crate) request: Option<Box<hyper::Request<ProxyBody>>>,
}

impl Unsent {
    fn from_hyper(mut e: hyper::client::conn::TrySendError<hyper::Request<ProxyBody>>) -> Self {
        let request = e.take_message().map(Box::new);
        Self {
            reason: describe(e.error()),
            request,
        }
    }
}

/// Sends `req` on the server connection behind `slot` and `addr`: in the caller's task when
/// the actor is idle (its sender is in the slot), else through the actor's mailbox.
/// `Err(None)`: the actor is gone.
pub(crate) async fn exchange(
    slot: &SenderSlot,
    addr: &Addr<ServerConnection>,
    req: hyper::Request<ProxyBody>,
) -> Result<Result<hyper::Response<Incoming>, Unsent>, MailboxError> {
    match slot.take() {
        Some(Sender::H2(s)) => {
            // HTTP/2 multiplexes: this request gets its own clone, the slot keeps the sender.
            let mut s2 = s.clone();
            slot.put(Sender::H2(s));
            Ok(s2.try_send_request(req).await.map_err(Unsent::from_hyper))
        }
        Some(Sender::H1(s)) => {
            // Given back when the exchange ends, or when the caller drops it half-way.
            let mut lent = Lent {
                slot,
                sender: Some(s),
            };
            let Some(s) = lent.sender.as_mut() else {
                return Ok(Err(Unsent {
                    reason: "server connection is no longer usable".to_owned(),
                    request: Some(Box::new(req)),
                }));
            };
            Ok(send_h1(s, req).await)
        }
        None => addr.send(Forward(req)).await,
    }
}

/// An HTTP/1 sender lent out of its slot, put back on drop.
struct Lent<'a> {
    slot: &'a SenderSlot,
    sender: Option<http1::SendRequest<ProxyBody>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            self.slot.put(Sender::H1(s));
        }
    }
}

/// One HTTP/1 exchange: waits until the connection takes a request, sends it.
async fn send_h1(
    s: &mut http1::SendRequest<ProxyBody>,
    req: hyper::Request<ProxyBody>,
) -> Result<hyper::Response<Incoming>, Unsent> {
    match s.ready().await {
        Ok(()) => s.try_send_request(req).await.map_err(Unsent::from_hyper),
        Err(e) => Err(Unsent {
            reason: describe(&e),
            request: Some(Box::new(req)),
        }),
    }
}

/// The actor owning one server connection's request sender (in a [`SenderSlot`] it lends
/// out). The connection's IO driver runs as its own task (never inside an actor's waiting
/// future, where it would starve).
pub(crate) struct ServerConnection {
    slot: Rc<SenderSlot>,
}

impl ServerConnection {
    /// Starts the actor for an HTTP/1 connection's request sender.
    pub(crate) fn start_h1(s: http1::SendRequest<ProxyBody>) -> (Addr<Self>, Rc<SenderSlot>) {
        Self::start_with(Sender::H1(s))
    }

    /// Starts the actor for an HTTP/2 connection's request sender.
    pub(crate) fn start_h2(s: http2::SendRequest<ProxyBody>) -> (Addr<Self>, Rc<SenderSlot>) {
        Self::start_with(Sender::H2(s))
    }

    fn start_with(s: Sender) -> (Addr<Self>, Rc<SenderSlot>) {
        let slot = Rc::new(SenderSlot(RefCell::new(Some(s))));
        let addr = Self { slot: slot.clone() }.start();
        (addr, slot)
    }
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConnection").finish_non_exhaustive()
    }
}

impl Actor for ServerConnection {
    type Context = Context<Self>;
}

impl Handler<Forward> for ServerConnection {
    type Result = ActorResponse<Self, Result<hyper::Response<Incoming>, Unsent>>;

    fn handle(&mut self, Forward(req): Forward, _ctx: &mut Self::Context) -> Self::Result {
        match self.slot.take() {
            Some(Sender::H2(s)) => {
                // HTTP/2 multiplexes: every request gets its own clone, nothing waits.
                let mut s2 = s.clone();
                self.slot.put(Sender::H2(s));
                ActorResponse::r#async(
                    async move { s2.try_send_request(req).await.map_err(Unsent::from_hyper) }
                        .into_actor(self),
                )
            }
            Some(Sender::H1(mut s)) => {
                // HTTP/1 carries one exchange at a time: the sender is moved into the request's
                // future and back, and the actor answers nothing else meanwhile.
                let fut = async move {
                    let r = send_h1(&mut s, req).await;
                    (s, r)
                };
                ActorResponse::r#async(fut.into_actor(self).map(|(s, r), act, _| {
                    act.slot.put(Sender::H1(s));
                    r
                }))
            }
            None => {
                // Lent out (another exchange is in flight), or an earlier exchange's future was
                // dropped half-way.
                ActorResponse::reply(Err(Unsent {
                    reason: "server connection is no longer usable".to_owned(),
                    request: Some(Box::new(req)),
                }))
            }
        }
    }
}

pub(crate) fn tls_version_name(v: Option<rustls::ProtocolVersion>) -> Option<String> {
    v.map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    })
}

/// A hyper error with its causes, on one line.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}
