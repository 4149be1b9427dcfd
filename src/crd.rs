//! The WorkerPodAutoScaler custom resource (`k8s.practo.dev/v1`).
//!
//! Every field of practo's v1 CRD keeps its name, type and meaning, so existing manifests are
//! accepted as they are; the status keeps practo's capitalised field names for dashboards and
//! scripts. Everything new is optional and additive. Validation lives in the schema (OpenAPI
//! constraints plus CEL `x-kubernetes-validations`) so the API server refuses bad specs before the
//! controller ever sees them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::queue::kinds;

/// Annotation that freezes a WPA: the controller keeps reporting but never scales.
pub const PAUSED_ANNOTATION: &str = "k8s.practo.dev/paused";

/// Scale a worker Deployment (or ReplicaSet, or any resource with a /scale subresource) on the
/// backlog of its message queue.
// kube-derive repeats `type_` across printcolumn attributes, which clippy flags.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "k8s.practo.dev",
    version = "v1",
    kind = "WorkerPodAutoScaler",
    plural = "workerpodautoscalers",
    singular = "workerpodautoscaler",
    shortname = "wpa",
    shortname = "wpas",
    namespaced,
    status = "WorkerPodAutoScalerStatus",
    derive = "PartialEq",
    doc = "WorkerPodAutoScaler scales a worker Deployment on the backlog of its message queue.",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(
        name = "Messages",
        type_ = "integer",
        json_path = ".status.CurrentMessages"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.CurrentReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.DesiredReplicas"
    ),
    printcolumn(name = "Busy", type_ = "integer", json_path = ".status.workers.busy"),
    printcolumn(
        name = "Wait",
        type_ = "integer",
        json_path = ".status.wait.predictedWaitSeconds"
    ),
    printcolumn(
        name = "Arrivals/s",
        type_ = "number",
        json_path = ".status.wait.arrivalsPerSecond"
    ),
    printcolumn(
        name = "Decision",
        type_ = "string",
        json_path = ".status.lastDecisionReason"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Queue",
        type_ = "string",
        json_path = ".spec.queueURI",
        priority = 1
    ),
    printcolumn(
        name = "Queues",
        type_ = "string",
        json_path = ".spec.queueURIs",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("[has(self.queueURI) && self.queueURI != '', has(self.queueURIs) && size(self.queueURIs) > 0].filter(x, x).size() == 1").message("exactly one of queueURI and queueURIs must be set"))]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("[has(self.deploymentName) && self.deploymentName != '', has(self.replicaSetName) && self.replicaSetName != '', has(self.scaleTargetRef)].filter(x, x).size() == 1").message("exactly one of deploymentName, replicaSetName and scaleTargetRef must be set"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodAutoScalerSpec {
    /// Fewest workers to run (0 allows scaling to zero).
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Most workers to run.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// How many workers one scale-down may remove: a count ("2" or 2) or a percentage of the
    /// current workers ("10%", rounded up). Default: the controller's
    /// `--wpa-default-max-disruption` (100%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "max_disruption_schema")]
    pub max_disruption: Option<IntOrString>,
    /// The queue to watch, in the grammar of its provider (its scheme picks it; see
    /// `workerpodautoscaler providers`). Exactly one of `queueURI` and `queueURIs` is set.
    #[serde(rename = "queueURI", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(kinds::uri_scheme_rule("self")).message(Message::Message(kinds::uri_scheme_message("queueURI"))))]
    pub queue_uri: Option<String>,
    /// Several queues that the same workers consume (a Celery worker started with
    /// `--queues=a,b,c`), each written like `queueURI`: the backlog is the sum over them, and
    /// the workers are idle only when every queue is. Exactly one of `queueURI` and
    /// `queueURIs` is set.
    #[serde(rename = "queueURIs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "queue_uris_schema")]
    pub queue_uris: Option<Vec<String>>,
    /// Name of the Deployment to scale, in the WPA's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub deployment_name: Option<String>,
    /// Name of the ReplicaSet to scale, in the WPA's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub replica_set_name: Option<String>,
    /// Any resource with a /scale subresource (e.g. a StatefulSet), in the WPA's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,
    /// Messages (visible + in flight) one worker should handle; desired = ceil(backlog / this).
    #[schemars(range(min = 1))]
    pub target_messages_per_worker: i32,
    /// Seconds one job takes. With the queue's send rate it keeps
    /// ceil(seconds * sentPerMinute / 60) workers even at zero backlog. 0 or unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub seconds_to_process_one_job: Option<f64>,
    /// The longest a newly queued task should wait before a worker starts it, in seconds.
    /// When set, the workers are sized on wait time from what the controller learns (task
    /// arrival rate, task time, worker start-up; docs/wait-time.md);
    /// `targetMessagesPerWorker` decides until enough is learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_wait_seconds: Option<i32>,
    /// HPA v2-style scaling behavior. When set, its stabilization windows and rate policies
    /// replace the controller's scale-down delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<ScalingBehavior>,
    /// Compute and report decisions ("would scale to N") without changing the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// How often to poll this queue, overriding the controller's per-provider default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_interval_seconds: Option<i32>,
    /// Broker credentials from a Secret in the WPA's namespace (never inline passwords).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// Where the controller learns which workers are busy, so that a scale-down never
    /// removes one: `Auto` (the default) uses every signal there is; `CeleryEvents` only
    /// Celery's worker heartbeats on the queue's Redis or RabbitMQ broker; `Consumers` only
    /// the queue's own per-consumer report (RabbitMQ management API, an HTTP endpoint's
    /// `workers`); `Off` decides on queue figures alone, exactly as practo. SQS and
    /// beanstalkd queues have no such signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "worker_signal_schema")]
    pub worker_signal: Option<WorkerSignal>,
}

/// `spec.workerSignal`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum WorkerSignal {
    #[default]
    Auto,
    CeleryEvents,
    Consumers,
    Off,
}

impl WorkerSignal {
    pub fn celery_events(self) -> bool {
        matches!(self, WorkerSignal::Auto | WorkerSignal::CeleryEvents)
    }

    pub fn consumers(self) -> bool {
        matches!(self, WorkerSignal::Auto | WorkerSignal::Consumers)
    }
}

impl WorkerPodAutoScalerSpec {
    /// The queues this WPA watches, in order: `queueURIs`, or the one `queueURI`. Fails when
    /// neither or both are set, or one queue is listed twice: the CRD's rules refuse those,
    /// and this check also covers an API server that does not run them.
    pub fn queue_uris(&self) -> Result<Vec<&str>, String> {
        let list = match (&self.queue_uri, &self.queue_uris) {
            (Some(one), None) if !one.is_empty() => return Ok(vec![one.as_str()]),
            (None, Some(many)) if !many.is_empty() => many,
            (Some(one), Some(many)) if !one.is_empty() && !many.is_empty() => {
                return Err("exactly one of queueURI and queueURIs must be set, not both".into());
            }
            _ => return Err("exactly one of queueURI and queueURIs must be set".into()),
        };
        if list.len() > MAX_QUEUES_PER_WPA {
            return Err(format!(
                "queueURIs lists {} queues; at most {MAX_QUEUES_PER_WPA} are allowed",
                list.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, uri) in list.iter().enumerate() {
            if uri.is_empty() {
                return Err(format!("queueURIs[{index}] is empty"));
            }
            if !seen.insert(uri.as_str()) {
                return Err(format!("queueURIs[{index}] repeats an earlier entry"));
            }
        }
        Ok(list.iter().map(String::as_str).collect())
    }
}

/// A resource in the WPA's namespace that has a /scale subresource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// e.g. "apps/v1".
    #[schemars(length(min = 1, max = 317))]
    pub api_version: String,
    /// e.g. "StatefulSet".
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where the controller finds broker credentials. Keys default to `username`, `password` and
/// `authorization` (the HTTP provider's Authorization header).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name, in the WPA's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub authorization_key: Option<String>,
}

impl CredentialsSecretRef {
    pub fn username_key(&self) -> &str {
        self.username_key.as_deref().unwrap_or("username")
    }
    pub fn password_key(&self) -> &str {
        self.password_key.as_deref().unwrap_or("password")
    }
    pub fn authorization_key(&self) -> &str {
        self.authorization_key.as_deref().unwrap_or("authorization")
    }
}

/// HPA v2 `behavior`, same field names and meaning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Default: no stabilization, +100% or +4 pods per 15 s, whichever is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Default: 300 s stabilization, -100% per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// One direction's rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Scale-up uses the lowest, scale-down the highest recommendation of this many past seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// Which policy wins when several apply (default Max); Disabled turns this direction off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "select_policy_schema")]
    pub select_policy: Option<SelectPolicy>,
    /// Rate limits; when empty, the direction's default policies apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicy>>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// `maxDisruption`: an int-or-string with a length bound, so that the API server's CEL cost
/// estimate of its `matches()` rule stays small.
fn max_disruption_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "How many workers one scale-down may remove: a count (\"2\" or 2) or a percentage of the\ncurrent workers (\"10%\", rounded up). Default: the controller's\n`--wpa-default-max-disruption` (100%).",
        "nullable": true,
        "x-kubernetes-int-or-string": true,
        "maxLength": 12,
        "x-kubernetes-validations": [{
            "rule": "string(self).matches('^([0-9]+|([0-9]|[1-9][0-9]|100)%)$')",
            "message": "maxDisruption must be a non-negative count or a percentage from 0% to 100%"
        }]
    })
}

/// Most queues one WPA may watch.
pub const MAX_QUEUES_PER_WPA: usize = 16;

/// `queueURIs`: 1 to 16 distinct queue URIs, each bounded and checked like `queueURI` (the
/// bounds keep the API server's CEL cost estimate small).
fn queue_uris_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Several queues that the same workers consume (a Celery worker started with\n`--queues=a,b,c`), each written like `queueURI`: the backlog is the sum over them, and\nthe workers are idle only when every queue is. Exactly one of `queueURI` and\n`queueURIs` is set.",
        "type": "array",
        "nullable": true,
        "minItems": 1,
        "maxItems": MAX_QUEUES_PER_WPA,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "minLength": 1, "maxLength": 2048},
        "x-kubernetes-validations": [{
            "rule": format!("self.all(u, {})", kinds::uri_scheme_rule("u")),
            "message": kinds::uri_scheme_message("every queueURIs entry")
        }]
    })
}

fn worker_signal_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Where the controller learns which workers are busy, so that a scale-down never\nremoves one: `Auto` (the default) uses every signal there is; `CeleryEvents` only\nCelery's worker heartbeats on the queue's Redis or RabbitMQ broker; `Consumers` only\nthe queue's own per-consumer report (RabbitMQ management API, an HTTP endpoint's\n`workers`); `Off` decides on queue figures alone, exactly as practo. SQS and\nbeanstalkd queues have no such signal.",
        "type": "string",
        "nullable": true,
        "enum": ["Auto", "CeleryEvents", "Consumers", "Off"],
    })
}

/// An optional string enum without the `null` member schemars would add: the API server wants
/// enum members of the declared type.
fn select_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "enum": ["Max", "Min", "Disabled"],
    })
}

/// At most `value` pods (or percent of the replicas at the start of the period) of change
/// within any `periodSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    #[schemars(range(min = 1))]
    pub value: i32,
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyType {
    Pods,
    Percent,
}

/// Status. practo's capitalised fields are kept verbatim; new fields are camelCase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
pub struct WorkerPodAutoScalerStatus {
    /// Backlog: visible plus in-flight messages.
    #[serde(rename = "CurrentMessages", default)]
    pub current_messages: i64,
    #[serde(rename = "CurrentReplicas", default)]
    pub current_replicas: i32,
    #[serde(rename = "AvailableReplicas", default)]
    pub available_replicas: i32,
    #[serde(rename = "DesiredReplicas", default)]
    pub desired_replicas: i32,
    /// Time of the last scale up or down.
    #[serde(
        rename = "LastScaleTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_scale_time: Option<Time>,
    /// Messages handed to workers and not yet acknowledged, when the broker can tell.
    #[serde(
        rename = "inFlightMessages",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub in_flight_messages: Option<i64>,
    /// The WPA generation the status was computed from.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
    /// Time of the last scale up.
    #[serde(
        rename = "lastScaleUpTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_scale_up_time: Option<Time>,
    /// Time of the last scale down.
    #[serde(
        rename = "lastScaleDownTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_scale_down_time: Option<Time>,
    /// Machine-readable reason of the last decision, e.g. `ScaleUpBacklog`.
    #[serde(
        rename = "lastDecisionReason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_decision_reason: Option<String>,
    /// Ready, MetricsAvailable, AbleToScale, ScalingLimited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Each queue's figures when the WPA watches several (`queueURIs`), in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
    /// What the workers report (`spec.workerSignal`); absent where there is no signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersStatus>,
    /// Sizing on wait time (`spec.maxWaitSeconds`): what was learned and what it predicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitStatus>,
}

/// Sizing on wait time. Rates and times are rounded to two significant digits, so that a
/// steady stream does not rewrite the status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitStatus {
    /// `MaxWait` while the workers are sized on wait time; `Learning` while
    /// targetMessagesPerWorker decides (`message` says what is still being learned).
    pub mode: String,
    /// The wait (seconds) a task queued now is predicted to see with the desired workers:
    /// the later of the backlog's last task, the arrivals' 95th percentile and the tasks
    /// held by busy workers. Absent when the workers cannot keep up with the arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_wait_seconds: Option<i64>,
    /// Tasks arriving per second (last 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrivals_per_second: Option<f64>,
    /// Tasks one worker (pod) finishes per second when busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_per_worker: Option<f64>,
    /// Mean seconds a task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_seconds: Option<f64>,
    /// Tasks one pod runs at once, as seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots_per_worker: Option<i32>,
    /// Seconds from a scale-up to a new worker taking tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<i64>,
    /// Where the figures come from, e.g. `CeleryEvents`; the start-up is `Default` until one
    /// was measured.
    pub source: String,
    /// Tasks held by busy workers (prefetched): no new pod can start them.
    pub held_tasks: i64,
    /// The replicas the target needs now, before maxReplicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The target's pods by what their workers report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// Where the reports come from, e.g. `CeleryEvents`.
    pub source: String,
    /// Pods whose workers run tasks: a scale-down keeps them.
    pub busy: i32,
    /// Pods whose workers report no task: removed first.
    pub idle: i32,
    /// Pods no worker reports for (starting, heartbeats off): neither idle nor protected.
    pub unknown: i32,
    /// Tasks executing now on the target's workers.
    pub active_tasks: i64,
    /// Pods whose workers are being drained (told to stop taking tasks) before a
    /// scale-in removes them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draining: i32,
    /// Why the reports cannot be used now (the broker's events cannot be read, the
    /// controller started moments ago); absent while they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One queue of a WPA that watches several.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The queue's URI, any password replaced.
    pub queue: String,
    /// Visible plus in-flight messages (the last known figure while the queue fails).
    pub messages: i64,
    /// Messages handed to workers and not yet acknowledged, when the broker can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_messages: Option<i64>,
    /// This queue's workers are idle.
    pub idle: bool,
    /// Why the last poll of this queue failed; absent while it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The CRD manifest as YAML, exactly what `workerpodautoscaler crd` prints.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&WorkerPodAutoScaler::crd())
}
