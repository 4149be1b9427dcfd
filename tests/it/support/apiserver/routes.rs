//! HTTP entry point: one fallback handler parses Kubernetes API paths itself (they are
//! generic over group, version, resource and scope), applies injected faults, dispatches to
//! the operations in `ops.rs` / `watch.rs`, and records the request and its outcome.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::discovery;
use super::objects::partial_metadata;
use super::ops::{ListQuery, ObjectRef, Target};
use super::patch::{PatchKind, check_body_encoding, parse_body};
use super::recording::RecordedRequest;
use super::resources::{Gvr, ResourceDef};
use super::selectors::{FieldSelector, LabelSelector};
use super::shared::Shared;
use super::status::ApiError;
use super::watch::{self, WatchRequest};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// The parts of a request the dispatcher needs.
struct Request {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    user_agent: Option<String>,
    accept: Option<String>,
    /// The client asked for `PartialObjectMetadata` (kube's `*_metadata` calls and
    /// `metadata_watcher`).
    metadata_only: bool,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    /// The field manager of a write: `fieldManager`, else the client's User-Agent.
    fn manager(&self) -> String {
        self.param("fieldManager")
            .map(str::to_string)
            .or_else(|| self.user_agent.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    fn patch_kind(&self) -> Result<PatchKind, ApiError> {
        PatchKind::from_content_type(
            self.content_type.as_deref().unwrap_or_default(),
            self.flag("force"),
        )
    }

    fn list_query(&self) -> Result<ListQuery, ApiError> {
        Ok(ListQuery {
            labels: LabelSelector::parse(self.param("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(self.param("fieldSelector").unwrap_or_default())?,
            limit: self.param("limit").and_then(|l| l.parse().ok()),
            continue_token: self
                .param("continue")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_query = uri.query().unwrap_or_default().to_string();
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request = Request {
        method,
        path: uri.path().to_string(),
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        content_type: header_text(header::CONTENT_TYPE),
        user_agent: header_text(header::USER_AGENT),
        metadata_only: header_text(header::ACCEPT)
            .is_some_and(|accept| accept.contains("as=PartialObjectMetadata")),
        accept: header_text(header::ACCEPT),
        body,
    };

    let outcome = shared
        .faults
        .check(request.method.as_str(), &request.path, &raw_query);
    if !outcome.latency.is_zero() {
        tokio::time::sleep(outcome.latency).await;
    }
    let mut fault = outcome.describe();
    // No await from here on: the guard keeps readers of the recordings out until this
    // request, whose change may already be visible in the store, is recorded.
    let _answering = shared.recorder.answering();
    let response = match (outcome.status, outcome.body) {
        (Some(code), Some(body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        (Some(code), None) => {
            ApiError::from_code(code, format!("injected fault: HTTP {code}")).into_response()
        }
        (None, _) => match dispatch(&shared, &request, &mut fault) {
            Ok(response) => response,
            Err(error) => error.into_response(),
        },
    };

    let kind = request.patch_kind().ok();
    let recorded_body = parse_body(&request.body, kind.as_ref())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()));
    shared.recorder.push(RecordedRequest {
        at: jiff::Timestamp::now(),
        method: request.method.to_string(),
        path: request.path,
        query: request.query,
        content_type: request.content_type,
        accept: request.accept,
        body: recorded_body,
        status: response.status().as_u16(),
        fault,
    });
    response
}

/// Where a path points.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources { group: String, version: String },
    Object(ObjectPath),
}

/// A resource path: collection (`name` is `None`), object, or subresource of an object.
struct ObjectPath {
    gvr: Gvr,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        [] => {
            return Some(Route::Resources {
                group: group.to_string(),
                version: version.to_string(),
            });
        }
        // `/namespaces/{ns}` alone (or with its own subresource) is the Namespace object.
        ["namespaces", _] | ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(Route::Object(ObjectPath {
        gvr: Gvr::new(group, version, resource),
        namespace,
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    }))
}

fn dispatch(
    shared: &Arc<Shared>,
    request: &Request,
    fault: &mut Option<String>,
) -> Result<Response, ApiError> {
    let route = parse_path(&request.path).ok_or_else(ApiError::unknown_resource)?;
    check_body_encoding(request.content_type.as_deref())?;
    if request.param("dryRun").is_some() && request.method != Method::GET {
        // Better an explicit error than a dry run that silently writes.
        return Err(ApiError::bad_request(
            "dryRun is not supported by the API server double",
        ));
    }
    let read_only = |value: Value| -> Result<Response, ApiError> {
        if request.method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        Ok(ok(value))
    };
    let target = match route {
        Route::Version => return read_only(discovery::version()),
        Route::CoreVersions => return read_only(discovery::core_versions()),
        Route::Groups => return read_only(discovery::group_list(&shared.registry())),
        Route::Resources { group, version } => {
            let list = discovery::resource_list(&shared.registry(), &group, &version)
                .ok_or_else(ApiError::unknown_resource)?;
            return read_only(list);
        }
        Route::Object(target) => target,
    };
    let def = shared
        .resolve(&target.gvr)
        .ok_or_else(ApiError::unknown_resource)?;
    if !def.namespaced && target.namespace.is_some() {
        return Err(ApiError::unknown_resource());
    }
    let namespace = target.namespace.as_deref();
    match (&target.name, target.subresource.as_deref()) {
        (None, _) => collection(shared, request, &def, namespace, fault),
        (Some(name), None) => object(
            shared,
            request,
            ObjectRef::new(&def, namespace, name),
            Target::Main,
        ),
        (Some(name), Some("status")) if def.status_subresource => object(
            shared,
            request,
            ObjectRef::new(&def, namespace, name),
            Target::Status,
        ),
        (Some(name), Some("scale")) if def.scale.is_some() => {
            scale(shared, request, ObjectRef::new(&def, namespace, name))
        }
        _ => Err(ApiError::unknown_resource()),
    }
}

fn collection(
    shared: &Arc<Shared>,
    request: &Request,
    def: &ResourceDef,
    namespace: Option<&str>,
    fault: &mut Option<String>,
) -> Result<Response, ApiError> {
    match request.method {
        Method::GET if request.flag("watch") => {
            let watch = WatchRequest {
                def: def.clone(),
                namespace: namespace.map(str::to_string),
                resource_version: request.param("resourceVersion").map(str::to_string),
                query: request.list_query()?,
                bookmarks: request.flag("allowWatchBookmarks"),
                send_initial_events: request.flag("sendInitialEvents"),
                timeout: request
                    .param("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs),
                metadata_only: request.metadata_only,
            };
            watch::start(shared, watch, fault)
        }
        Method::GET => {
            let list = shared.list_objects(def, namespace, &request.list_query()?)?;
            Ok(reply(request, StatusCode::OK, list))
        }
        Method::POST => {
            let body = parse_body(&request.body, None)?;
            let created = shared.create_object(def, namespace, body, &request.manager())?;
            Ok(reply(request, StatusCode::CREATED, created))
        }
        Method::DELETE => {
            let deleted = shared.delete_collection(def, namespace, &request.list_query()?)?;
            Ok(reply(request, StatusCode::OK, deleted))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn object(
    shared: &Arc<Shared>,
    request: &Request,
    obj: ObjectRef<'_>,
    target: Target,
) -> Result<Response, ApiError> {
    let manager = request.manager();
    let value = match request.method {
        Method::GET => shared.get_object(obj)?,
        Method::PUT => {
            let body = parse_body(&request.body, None)?;
            shared.replace_object(obj, body, target, &manager)?
        }
        Method::PATCH => {
            let kind = request.patch_kind()?;
            if matches!(kind, PatchKind::Apply { .. }) && request.param("fieldManager").is_none() {
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                     is required for apply patch",
                ));
            }
            let body = parse_body(&request.body, Some(&kind))?;
            shared.patch_object(obj, &kind, &body, target, &manager)?
        }
        Method::DELETE if target == Target::Main => {
            let options = parse_body(&request.body, None)?;
            shared.delete_object(obj, &options)?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(reply(request, StatusCode::OK, value))
}

fn scale(
    shared: &Arc<Shared>,
    request: &Request,
    obj: ObjectRef<'_>,
) -> Result<Response, ApiError> {
    let manager = request.manager();
    let value = match request.method {
        Method::GET => shared.get_scale(obj)?,
        Method::PUT => {
            let body = parse_body(&request.body, None)?;
            shared.write_scale(obj, None, &body, &manager)?
        }
        Method::PATCH => {
            let kind = request.patch_kind()?;
            let body = parse_body(&request.body, Some(&kind))?;
            shared.write_scale(obj, Some(&kind), &body, &manager)?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(ok(value))
}

/// A JSON response; as `PartialObjectMetadata` when the client asked for it.
fn reply(request: &Request, status: StatusCode, value: Value) -> Response {
    let value = if request.metadata_only {
        partial_metadata(&value)
    } else {
        value
    };
    (status, axum::Json(value)).into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}
