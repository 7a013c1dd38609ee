//! The `ServerConnection` actor: owns one HTTP connection to a server (hyper's request
//! sender) and forwards requests on it. Dialing is in [`super::dial`], pooling in
//! [`super::pool`].

use actix::prelude::*;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use crate::http::body::ProxyBody;

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// Forwards one request on this server connection; answers the response head.
#[derive(Debug)]
pub(crate) struct Forward(pub(crate) hyper::Request<ProxyBody>);

impl Message for Forward {
    type Result = Result<hyper::Response<Incoming>, String>;
}

/// The actor owning one server connection's request sender. The connection's IO driver runs
/// as its own task (never inside an actor's waiting future, where it would starve).
pub(crate) struct ServerConnection {
    sender: Option<Sender>,
}

impl ServerConnection {
    /// Starts the actor for an HTTP/1 connection's request sender.
    pub(crate) fn start_h1(s: http1::SendRequest<ProxyBody>) -> Addr<Self> {
        Self {
            sender: Some(Sender::H1(s)),
        }
        .start()
    }

    /// Starts the actor for an HTTP/2 connection's request sender.
    pub(crate) fn start_h2(s: http2::SendRequest<ProxyBody>) -> Addr<Self> {
        Self {
            sender: Some(Sender::H2(s)),
        }
        .start()
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
    type Result = ActorResponse<Self, Result<hyper::Response<Incoming>, String>>;

    fn handle(&mut self, Forward(req): Forward, _ctx: &mut Self::Context) -> Self::Result {
        match self.sender.take() {
            Some(Sender::H2(s)) => {
                // HTTP/2 multiplexes: every request gets its own clone, nothing waits.
                let mut s2 = s.clone();
                self.sender = Some(Sender::H2(s));
                ActorResponse::r#async(
                    async move { s2.send_request(req).await.map_err(|e| describe(&e)) }
                        .into_actor(self),
                )
            }
            Some(Sender::H1(mut s)) => {
                // HTTP/1 carries one exchange at a time: the sender is moved into the request's
                // future and back, and the actor answers nothing else meanwhile.
                let fut = async move {
                    let r = match s.ready().await {
                        Ok(()) => s.send_request(req).await.map_err(|e| describe(&e)),
                        Err(e) => Err(describe(&e)),
                    };
                    (s, r)
                };
                ActorResponse::r#async(fut.into_actor(self).map(|(s, r), act, _| {
                    act.sender = Some(Sender::H1(s));
                    r
                }))
            }
            None => {
                // Only if an earlier exchange's future was dropped half-way.
                ActorResponse::reply(Err("server connection is no longer usable".to_owned()))
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
