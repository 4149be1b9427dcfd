//! A CloudWatch double speaking the protocol the Rust SDK uses for CloudWatch (Smithy RPC v2
//! CBOR), for the one operation the controller calls: `GetMetricData`. moto's CloudWatch only
//! speaks the older query/JSON protocols, hence this double. It answers each query with the
//! values set for its metric name and records what was asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ciborium::Value;

/// One `GetMetricData` metric query as received.
#[derive(Debug, Clone, PartialEq)]
pub struct AskedMetric {
    pub id: String,
    pub namespace: String,
    pub metric_name: String,
    pub queue_name: String,
    pub stat: String,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct AskedRequest {
    pub path: String,
    pub metrics: Vec<AskedMetric>,
}

#[derive(Default)]
struct Shared {
    values: HashMap<String, Vec<f64>>,
    failing: bool,
    asked: Vec<AskedRequest>,
}

pub struct CloudWatchDouble {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl CloudWatchDouble {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the CloudWatch double");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data points answered for `metric_name` (e.g. `NumberOfMessagesReceived`).
    pub fn set_values(&self, metric_name: &str, values: &[f64]) {
        let mut shared = self.shared.lock().expect("lock");
        shared
            .values
            .insert(metric_name.to_string(), values.to_vec());
    }

    /// Answer every request with a 500 (`true`) or normally (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.shared.lock().expect("lock").failing = failing;
    }

    pub fn asked(&self) -> Vec<AskedRequest> {
        self.shared.lock().expect("lock").asked.clone()
    }
}

impl Drop for CloudWatchDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cbor_response(status: StatusCode, body: &Value) -> Response {
    let mut bytes = Vec::new();
    ciborium::into_writer(body, &mut bytes).expect("CBOR encodes");
    (
        status,
        [
            (header::CONTENT_TYPE, "application/cbor"),
            (
                header::HeaderName::from_static("smithy-protocol"),
                "rpc-v2-cbor",
            ),
        ],
        bytes,
    )
        .into_response()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// `map[key]` of a CBOR map with text keys.
fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn field_text(map: &Value, key: &str) -> String {
    field(map, key)
        .and_then(Value::as_text)
        .unwrap_or_default()
        .to_string()
}

fn asked_metric(query: &Value) -> AskedMetric {
    let stat = field(query, "MetricStat").cloned().unwrap_or(Value::Null);
    let metric = field(&stat, "Metric").cloned().unwrap_or(Value::Null);
    let queue_name = field(&metric, "Dimensions")
        .and_then(Value::as_array)
        .and_then(|dims| {
            dims.iter()
                .find(|d| field_text(d, "Name") == "QueueName")
                .map(|d| field_text(d, "Value"))
        })
        .unwrap_or_default();
    AskedMetric {
        id: field_text(query, "Id"),
        namespace: field_text(&metric, "Namespace"),
        metric_name: field_text(&metric, "MetricName"),
        queue_name,
        stat: field_text(&stat, "Stat"),
    }
}

async fn answer(
    State(shared): State<Arc<Mutex<Shared>>>,
    uri: Uri,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = match ciborium::from_reader(body.as_ref()) {
        Ok(v) => v,
        Err(e) => {
            let error = Value::Map(vec![
                (text("__type"), text("InvalidParameterValueException")),
                (text("message"), text(&format!("not CBOR: {e}"))),
            ]);
            return cbor_response(StatusCode::BAD_REQUEST, &error);
        }
    };
    let metrics: Vec<AskedMetric> = field(&request, "MetricDataQueries")
        .and_then(Value::as_array)
        .map(|queries| queries.iter().map(asked_metric).collect())
        .unwrap_or_default();
    let mut shared = shared.lock().expect("lock");
    shared.asked.push(AskedRequest {
        path: uri.path().to_string(),
        metrics: metrics.clone(),
    });
    if shared.failing {
        let error = Value::Map(vec![
            (text("__type"), text("InternalServiceFault")),
            (text("message"), text("injected failure")),
        ]);
        return cbor_response(StatusCode::INTERNAL_SERVER_ERROR, &error);
    }
    let results = metrics
        .iter()
        .map(|m| {
            let values = shared
                .values
                .get(&m.metric_name)
                .cloned()
                .unwrap_or_default();
            Value::Map(vec![
                (text("Id"), text(&m.id)),
                (text("Label"), text(&m.metric_name)),
                (text("StatusCode"), text("Complete")),
                (
                    text("Values"),
                    Value::Array(values.into_iter().map(Value::Float).collect()),
                ),
            ])
        })
        .collect();
    cbor_response(
        StatusCode::OK,
        &Value::Map(vec![(text("MetricDataResults"), Value::Array(results))]),
    )
}
