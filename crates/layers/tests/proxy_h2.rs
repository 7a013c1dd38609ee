//! HTTP/2 from the client (prior knowledge on the proxy port) to an HTTP/1.1 origin: many
//! concurrent streams and a large upload.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin};

#[actix_rt::test]
async fn h2_client_to_h1_server_with_concurrent_streams_and_a_large_upload() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);

    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut s = sender.clone();
        let uri = format!("http://{origin}/stream/{i}");
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::get(uri)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let body = t.await.unwrap();
        assert!(
            body.starts_with(&format!("origin GET /stream/{i} ")),
            "{body}"
        );
    }

    let upload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let mut s = sender.clone();
    let req = hyper::Request::post(format!("http://{origin}/echo"))
        .body(Full::new(Bytes::from(upload.clone())))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), upload.len());
    assert!(body == upload);
    proxy.shutdown().await;
}
