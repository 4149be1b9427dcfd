//! HTTP provider against a real HTTP server (axum on 127.0.0.1) in the test.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueProvider, QueueUri};

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route(
            "/good",
            get(|| async {
                r#"{"visible": 12, "in_flight": 3, "delayed": null, "sent_per_minute": 40, "consumers": 2, "idle": false}"#
            }),
        )
        .route("/minimal", get(|| async { r#"{"visible": 0}"# }))
        .route("/invalid", get(|| async { "<html>oops</html>" }))
        .route("/negative", get(|| async { r#"{"visible": -4}"# }))
        .route("/float", get(|| async { r#"{"visible": 2, "in_flight": 1.5}"# }))
        .route("/missing-visible", get(|| async { r#"{"in_flight": 1}"# }))
        .route(
            "/error",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                r#"{"visible": 1}"#
            }),
        )
        .route(
            "/huge",
            get(|| async { format!(r#"{{"visible": 1, "pad": "{}"}}"#, "x".repeat(200_000)) }),
        )
        .route(
            "/auth",
            get(|headers: HeaderMap| async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer s3cret-token") => (StatusCode::OK, r#"{"visible": 7}"#),
                    Some(_) => (StatusCode::FORBIDDEN, "no"),
                    None => (StatusCode::UNAUTHORIZED, "who?"),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn provider(addr: SocketAddr, path: &str, creds: Credentials) -> Box<dyn QueueProvider> {
    let uri = QueueUri::parse(&format!("http+json://{addr}{path}")).unwrap();
    let opts = ProviderOptions {
        request_timeout: Duration::from_millis(700),
        ..ProviderOptions::default()
    };
    uri.connect(&creds, &opts).await.unwrap()
}

async fn poll(addr: SocketAddr, path: &str) -> Result<wpa::queue::QueueMetrics, QueueError> {
    provider(addr, path, Credentials::default())
        .await
        .poll()
        .await
}

fn bad_response_detail(result: Result<wpa::queue::QueueMetrics, QueueError>) -> String {
    match result {
        Err(QueueError::BadResponse { detail, .. }) => detail,
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn good_json_is_read_field_by_field() {
    let addr = serve().await;
    let m = poll(addr, "/good").await.unwrap();
    assert_eq!(m.visible, 12);
    assert_eq!(m.in_flight, Some(3));
    assert_eq!(m.delayed, None);
    assert_eq!(m.sent_per_minute, Some(40));
    assert_eq!(m.consumers, Some(2));
    assert_eq!(m.idle, Some(false));
    let m = poll(addr, "/minimal").await.unwrap();
    assert_eq!((m.visible, m.in_flight, m.idle), (0, None, None));
}

#[tokio::test]
async fn schema_violations_are_clear_bad_responses() {
    let addr = serve().await;
    assert!(bad_response_detail(poll(addr, "/invalid").await).contains("not JSON"));
    assert!(bad_response_detail(poll(addr, "/negative").await).contains("`visible` is negative"));
    assert!(
        bad_response_detail(poll(addr, "/float").await)
            .contains("`in_flight` is not a whole number")
    );
    assert!(
        bad_response_detail(poll(addr, "/missing-visible").await).contains("`visible` is missing")
    );
    assert!(bad_response_detail(poll(addr, "/huge").await).contains("larger than"));
    assert!(bad_response_detail(poll(addr, "/teapot").await).contains("418"));
}

#[tokio::test]
async fn status_codes_map_to_error_kinds() {
    let addr = serve().await;
    assert!(matches!(
        poll(addr, "/error").await,
        Err(QueueError::Unavailable { .. })
    ));
    assert!(matches!(
        poll(addr, "/no-such-queue").await,
        Err(QueueError::NotFound { .. })
    ));
    assert!(matches!(
        poll(addr, "/auth").await,
        Err(QueueError::Denied { .. })
    ));
}

#[tokio::test]
async fn slow_endpoint_times_out_as_unavailable() {
    let addr = serve().await;
    let started = std::time::Instant::now();
    let err = poll(addr, "/slow").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match err {
        QueueError::Unavailable { detail, .. } => assert!(detail.contains("no answer within")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn authorization_header_from_credentials() {
    let addr = serve().await;
    let creds = Credentials {
        authorization: Some("Bearer s3cret-token".to_string()),
        ..Credentials::default()
    };
    let mut p = provider(addr, "/auth", creds).await;
    assert_eq!(p.poll().await.unwrap().visible, 7);
    let wrong = Credentials {
        authorization: Some("Bearer nope".to_string()),
        ..Credentials::default()
    };
    let err = provider(addr, "/auth", wrong)
        .await
        .poll()
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Denied { .. }));
    assert!(!format!("{err} {err:?}").contains("nope"));
}

#[tokio::test]
async fn unreachable_endpoint_and_bad_header_value() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = poll(SocketAddr::from(([127, 0, 0, 1], port)), "/m?token=hidden")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
    assert!(!err.to_string().contains("hidden"), "{err}");

    let uri = QueueUri::parse("http+json://127.0.0.1:1/m").unwrap();
    let creds = Credentials {
        authorization: Some("line\nbreak".to_string()),
        ..Credentials::default()
    };
    assert!(matches!(uri.validate(&creds), Err(QueueError::Config(_))));
}
