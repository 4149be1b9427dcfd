//! The API server double, exercised with the real kube client over HTTP: CRUD, lists,
//! watches, reflectors, subresources, patches, faults, events and leases.

use crate::support;

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Fault, Gvr, ResourceDef, ScalePaths, objects};

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn start() -> (ApiServerDouble, Client) {
    let server = ApiServerDouble::start().await.expect("server starts");
    let client = server.client().expect("client builds");
    (server, client)
}

fn typed(value: Value) -> Deployment {
    serde_json::from_value(value).expect("valid Deployment JSON")
}

fn replicas(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref().and_then(|s| s.replicas)
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn wpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.practo.dev", "v1", "WorkerPodAutoScaler"),
        "workerpodautoscalers",
    )
}

/// Polls `check` until it returns `Some`, failing after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn deployment_create_get_list_delete() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "team-a");
    let pp = PostParams::default();

    let created = api
        .create(&pp, &typed(objects::deployment("team-a", "worker", 2)))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert_eq!(rv, server.resource_version());

    let again = api
        .create(&pp, &typed(objects::deployment("team-a", "worker", 2)))
        .await;
    assert_eq!(api_error(again), (409, "AlreadyExists".to_string()));

    let fetched = api.get("worker").await.expect("get");
    assert_eq!(replicas(&fetched), Some(2));
    assert_eq!(
        api_error(api.get("missing").await),
        (404, "NotFound".to_string())
    );

    let list = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.metadata.resource_version, Some(rv.to_string()));

    // Listing across namespaces sees objects of other namespaces too.
    server
        .insert(objects::deployment("team-b", "other", 1))
        .expect("insert");
    let all: Api<Deployment> = Api::all(api.clone().into_client());
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("list all")
            .items
            .len(),
        2
    );

    api.delete("worker", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        api_error(api.get("worker").await),
        (404, "NotFound".to_string())
    );
    assert!(
        server
            .get(&Gvr::DEPLOYMENTS, Some("team-a"), "worker")
            .is_none()
    );
}

#[tokio::test]
async fn custom_resource_through_dynamic_api_and_unknown_resource() {
    let (server, client) = start().await;
    let resource = wpa_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "ns", &resource);
    let mut wpa = DynamicObject::new("queue-worker", &resource);
    wpa.data = json!({"spec": {"deploymentName": "worker", "maxReplicas": 10, "queueURI": "q"}});
    api.create(&PostParams::default(), &wpa)
        .await
        .expect("create");

    let fetched = api.get("queue-worker").await.expect("get");
    assert_eq!(fetched.data["spec"]["maxReplicas"], 10);
    assert_eq!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let stored = server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some("ns"), "queue-worker")
        .expect("stored");
    assert_eq!(stored["kind"], "WorkerPodAutoScaler");
    api.delete("queue-worker", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        api.get_opt("queue-worker")
            .await
            .expect("get_opt")
            .is_none()
    );

    let unknown = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client, "ns", &unknown);
    let status = match gadgets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected 404, got {other:?}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert!(!status.message.is_empty());
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    // The initial (empty) list completes before we write.
    within("init done", async {
        while let Some(event) = events.try_next().await.expect("watch") {
            if matches!(event, watcher::Event::InitDone) {
                break;
            }
        }
    })
    .await;

    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("patch");
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");

    let mut seen = Vec::new();
    within("three events", async {
        while seen.len() < 3 {
            match events
                .try_next()
                .await
                .expect("watch")
                .expect("stream open")
            {
                watcher::Event::Apply(d) => seen.push(("apply", replicas(&d))),
                watcher::Event::Delete(d) => seen.push(("delete", replicas(&d))),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(
        seen,
        vec![("apply", Some(1)), ("apply", Some(5)), ("delete", Some(5))]
    );
}

#[tokio::test]
async fn raw_watch_replays_from_version_sends_bookmarks_and_times_out() {
    let (server, client) = start().await;
    server.set_bookmark_interval(Duration::from_millis(100));
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let start_rv = server.resource_version().to_string();
    server
        .insert(objects::deployment("ns", "a", 1))
        .expect("insert");
    server
        .modify(&Gvr::DEPLOYMENTS, Some("ns"), "a", |d| {
            d["spec"]["replicas"] = 2.into();
        })
        .expect("modify");

    let params = WatchParams::default().timeout(1);
    let stream = api.watch(&params, &start_rv).await.expect("watch");
    let events: Vec<_> = within("watch ends by timeout", stream.try_collect())
        .await
        .expect("events");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert_eq!(kinds.get(1), Some(&"MODIFIED"));
    assert!(kinds[2..].iter().all(|k| *k == "BOOKMARK"));
    assert!(kinds.len() > 2, "bookmarks arrive every 100 ms: {kinds:?}");

    // A version older than the retained history gets an ERROR event with 410.
    server.compact_history();
    let stream = api.watch(&params, &start_rv).await.expect("watch");
    let events: Vec<_> = within("gone", stream.try_collect()).await.expect("events");
    match events.as_slice() {
        [WatchEvent::Error(status)] => assert_eq!(status.code, 410),
        other => panic!("expected one 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn reflector_store_follows_the_server() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "one", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    within("store ready", reader.wait_until_ready())
        .await
        .expect("ready");
    assert_eq!(reader.len(), 1);

    server
        .insert(objects::deployment("ns", "two", 4))
        .expect("insert");
    server
        .delete(&Gvr::DEPLOYMENTS, Some("ns"), "one")
        .expect("delete");
    eventually("store has only 'two'", || async {
        let names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        (names == ["two"]).then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_replicas() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment_with_status("ns", "w", 2, 2))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");

    let scale = api.get_scale("w").await.expect("get_scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let status = scale.status.expect("scale status");
    assert_eq!(status.replicas, 2);
    assert_eq!(status.selector.as_deref(), Some("app=w"));

    let patched = api
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch_scale");
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(3));
    let deployment = api.get("w").await.expect("get");
    assert_eq!(replicas(&deployment), Some(3));
    assert_eq!(deployment.metadata.generation, Some(2));
    assert_eq!(server.scale_patches("ns", "w"), vec![3]);
    assert_eq!(
        server.replica_history(&Gvr::DEPLOYMENTS, Some("ns"), "w"),
        vec![2, 3]
    );

    // A custom resource registered with scale paths gets /scale too.
    let gvr = Gvr::new("example.com", "v1", "pools");
    server.register(
        ResourceDef::namespaced(gvr.clone(), "Pool")
            .with_status()
            .with_scale(ScalePaths {
                spec_replicas: "/spec/size".to_string(),
                status_replicas: "/status/size".to_string(),
                selector: Some("/status/selector".to_string()),
            }),
    );
    server
        .insert(json!({"apiVersion": "example.com/v1", "kind": "Pool",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"size": 1}, "status": {"size": 1, "selector": "pool=p"}}))
        .expect("insert pool");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Pool"),
        "pools",
    );
    let pools: Api<DynamicObject> = Api::namespaced_with(api.into_client(), "ns", &resource);
    let scale = pools.get_scale("p").await.expect("pool scale");
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("pool=p")
    );
    pools
        .patch_scale(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .expect("patch pool scale");
    let pool = server.get(&gvr, Some("ns"), "p").expect("pool");
    assert_eq!(pool["spec"]["size"], 7);
}

#[tokio::test]
async fn status_subresource_is_separate_from_spec() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let mut with_status = typed(objects::deployment_with_status("ns", "w", 2, 2));
    with_status.metadata.namespace = None;
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .expect("create");
    assert!(
        created.status.is_none(),
        "create drops status with a status subresource"
    );

    let patched = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 1}, "spec": {"replicas": 9}})),
        )
        .await
        .expect("patch_status");
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.available_replicas),
        Some(1)
    );
    assert_eq!(replicas(&patched), Some(2), "status writes ignore spec");
    assert_eq!(patched.metadata.generation, Some(1));

    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 5}, "spec": {"replicas": 4}})),
        )
        .await
        .expect("patch");
    assert_eq!(replicas(&patched), Some(4));
    assert_eq!(
        patched.status.and_then(|s| s.available_replicas),
        Some(1),
        "main writes keep status"
    );
    assert_eq!(patched.metadata.generation, Some(2));
}

#[tokio::test]
async fn stale_put_conflicts_and_fresh_put_succeeds() {
    let (_server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let created = api
        .create(
            &PostParams::default(),
            &typed(objects::deployment("ns", "w", 1)),
        )
        .await
        .expect("create");
    let mut first = created.clone();
    if let Some(spec) = first.spec.as_mut() {
        spec.replicas = Some(2);
    }
    let updated = api
        .replace("w", &PostParams::default(), &first)
        .await
        .expect("replace");
    assert_eq!(replicas(&updated), Some(2));

    // `created` still carries the old resourceVersion.
    let stale = api.replace("w", &PostParams::default(), &created).await;
    assert_eq!(api_error(stale), (409, "Conflict".to_string()));

    let mut fresh = updated.clone();
    if let Some(spec) = fresh.spec.as_mut() {
        spec.replicas = Some(6);
    }
    let replaced = api
        .replace("w", &PostParams::default(), &fresh)
        .await
        .expect("fresh");
    assert_eq!(replicas(&replaced), Some(6));
}

#[tokio::test]
async fn merge_json_and_apply_patches() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");

    let merged = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(
        merged.metadata.labels.and_then(|l| l.get("team").cloned()),
        Some("x".to_string())
    );
    assert_eq!(
        merged.metadata.generation,
        Some(1),
        "label changes keep the generation"
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 4}
    ]))
    .expect("ops");
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Json::<()>(ops.clone()),
        )
        .await
        .expect("json patch");
    assert_eq!(replicas(&patched), Some(4));
    // The same test op now fails.
    let failed = api
        .patch("w", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await;
    assert_eq!(api_error(failed).0, 422);

    // A merge patch carrying a stale resourceVersion conflicts.
    let stale = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}})),
        )
        .await;
    assert_eq!(api_error(stale), (409, "Conflict".to_string()));

    // Server-side apply: a second manager may not take a field another one owns. The JSON
    // patch above made the client's default manager own spec.replicas, so alpha forces.
    let apply = |manager: &str, force: bool| {
        let mut params = PatchParams::apply(manager);
        params.force = force;
        params
    };
    let body = |replicas: i32| json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": replicas}});
    let conflict = api
        .patch("w", &apply("alpha", false), &Patch::Apply(body(5)))
        .await;
    assert_eq!(api_error(conflict), (409, "Conflict".to_string()));
    api.patch("w", &apply("alpha", true), &Patch::Apply(body(5)))
        .await
        .expect("forced apply by alpha");
    api.patch("w", &apply("alpha", false), &Patch::Apply(body(5)))
        .await
        .expect("alpha owns the field now");
    let conflict = api
        .patch("w", &apply("beta", false), &Patch::Apply(body(6)))
        .await;
    assert_eq!(api_error(conflict), (409, "Conflict".to_string()));
    let forced = api
        .patch("w", &apply("beta", true), &Patch::Apply(body(6)))
        .await
        .expect("forced apply");
    assert_eq!(replicas(&forced), Some(6));

    // Apply creates a missing object.
    let created = api
        .patch(
            "fresh",
            &apply("alpha", false),
            &Patch::Apply(objects::deployment("ns", "fresh", 2)),
        )
        .await
        .expect("apply creates");
    assert_eq!(replicas(&created), Some(2));
}

#[tokio::test]
async fn label_and_field_selectors_and_pagination() {
    let (server, client) = start().await;
    for (name, tier) in [
        ("a", "web"),
        ("b", "web"),
        ("c", "batch"),
        ("d", "batch"),
        ("e", "db"),
    ] {
        let mut deployment = objects::deployment("ns", name, 1);
        deployment["metadata"]["labels"]["tier"] = tier.into();
        server.insert(deployment).expect("insert");
    }
    let mut unlabelled = objects::deployment("ns", "f", 1);
    unlabelled["metadata"]["labels"] = json!({});
    server.insert(unlabelled).expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let names = |list: kube::api::ObjectList<Deployment>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect()
    };

    let web = api
        .list(&ListParams::default().labels("tier=web"))
        .await
        .expect("list");
    assert_eq!(names(web), ["a", "b"]);
    let not_web = api
        .list(&ListParams::default().labels("tier!=web,tier"))
        .await
        .expect("list");
    assert_eq!(names(not_web), ["c", "d", "e"]);
    let set = api
        .list(&ListParams::default().labels("tier in (db, batch)"))
        .await
        .expect("list");
    assert_eq!(names(set), ["c", "d", "e"]);
    let without = api
        .list(&ListParams::default().labels("!tier"))
        .await
        .expect("list");
    assert_eq!(names(without), ["f"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .expect("list");
    assert_eq!(names(by_name), ["c"]);

    let mut collected = Vec::new();
    let mut params = ListParams::default().limit(4);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.expect("page");
        pages += 1;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        collected.extend(names(page));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(collected, ["a", "b", "c", "d", "e", "f"]);
}

#[tokio::test]
async fn injected_errors_then_success_are_recorded() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    server.inject(
        Fault::status(500)
            .method("GET")
            .path_contains("/deployments/w")
            .times(1),
    );
    server.inject(
        Fault::status(429)
            .method("PATCH")
            .path_contains("/scale")
            .times(1),
    );

    assert_eq!(
        api_error(api.get("w").await),
        (500, "InternalError".to_string())
    );
    api.get("w").await.expect("second get succeeds");
    // kube's client retries 429 (and 503/504) by itself: the call succeeds, and the
    // recordings show both attempts.
    let scale = Patch::Merge(json!({"spec": {"replicas": 2}}));
    api.patch_scale("w", &PatchParams::default(), &scale)
        .await
        .expect("retried patch succeeds");
    let attempts: Vec<u16> = server
        .requests("PATCH", "/deployments/w/scale")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(attempts, [429, 200]);

    let gets = server.requests("GET", "/deployments/w");
    assert_eq!(gets.len(), 2);
    assert_eq!(
        (gets[0].status, gets[0].fault.as_deref()),
        (500, Some("injected 500"))
    );
    assert_eq!((gets[1].status, gets[1].fault.as_deref()), (200, None));
    assert_eq!(
        server.scale_patches("ns", "w"),
        vec![2],
        "only successful scale writes"
    );
    assert_eq!(server.writes().len(), 2, "both scale attempts are writes");
    server.clear_recorded();
    assert!(server.recorded().is_empty());

    // Latency applies to matching requests only.
    server.inject(Fault::latency(Duration::from_millis(300)).path_contains("/deployments/w"));
    let started = std::time::Instant::now();
    api.get("w").await.expect("slow get");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        server.recorded()[0].fault.as_deref(),
        Some("injected latency 300 ms")
    );
}

/// Runs a watcher in the background and reports the names it has applied, in order.
fn spawn_watcher(
    api: Api<Deployment>,
) -> (
    tokio::sync::watch::Receiver<Vec<String>>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, receiver) = tokio::sync::watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                sender.send_modify(|names| names.extend(d.metadata.name));
            }
        }
    });
    (receiver, task)
}

#[tokio::test]
async fn watcher_resumes_after_dropped_watch() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let (mut seen, task) = spawn_watcher(api);
    eventually("watch open", || async {
        (server.open_watches() == 1).then_some(())
    })
    .await;

    server.drop_watches();
    server
        .insert(objects::deployment("ns", "after-drop", 1))
        .expect("insert");
    within(
        "sees object",
        seen.wait_for(|names| names.contains(&"after-drop".to_string())),
    )
    .await
    .expect("watcher alive");
    let watches: Vec<_> = server
        .recorded()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert!(watches.len() >= 2, "watch was re-opened: {watches:?}");
    let lists = server
        .recorded()
        .into_iter()
        .filter(|r| r.method == "GET" && !r.is_watch())
        .count();
    assert_eq!(lists, 1, "a dropped watch resumes without relisting");
    task.abort();
}

#[tokio::test]
async fn watcher_relists_after_gone_on_resume() {
    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let (mut seen, task) = spawn_watcher(api);
    eventually("watch open", || async {
        (server.open_watches() == 1).then_some(())
    })
    .await;

    server.fail_next_watch_resumes(1);
    server.drop_watches();
    server
        .insert(objects::deployment("ns", "after-gone", 1))
        .expect("insert");
    within(
        "sees object",
        seen.wait_for(|names| names.contains(&"after-gone".to_string())),
    )
    .await
    .expect("watcher alive");
    let recorded = server.recorded();
    assert!(
        recorded
            .iter()
            .any(|r| r.fault.as_deref() == Some("injected 410 Gone on watch resume"))
    );
    let lists = recorded
        .iter()
        .filter(|r| r.method == "GET" && !r.is_watch())
        .count();
    assert_eq!(lists, 2, "410 makes the watcher list again");
    task.abort();
}

#[tokio::test]
async fn recorder_publishes_events() {
    let (server, client) = start().await;
    let deployment = server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "wpa-controller".into(),
            instance: Some("pod-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some("w".into()),
        namespace: Some("ns".into()),
        uid: deployment["metadata"]["uid"].as_str().map(str::to_string),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Scaled".into(),
        note: Some("scaled to 3".into()),
        action: "Scale".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.expect("publish");
    // The same event again becomes a series update (a merge patch) on the same object.
    recorder
        .publish(&event, &reference)
        .await
        .expect("publish again");

    let events: Api<K8sEvent> = Api::namespaced(client, "ns");
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    assert_eq!(list.items.len(), 1);
    let stored = &list.items[0];
    assert_eq!(stored.reason.as_deref(), Some("Scaled"));
    assert_eq!(
        stored.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("w")
    );
    assert_eq!(stored.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        server
            .requests("POST", "/apis/events.k8s.io/v1/namespaces/ns/events")
            .len(),
        1
    );
}

#[tokio::test]
async fn lease_manager_holds_the_lease_exclusively() {
    let (server, client) = start().await;
    let manager = |identity: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "wpa-leader")
            .with_namespace("ns")
            .with_identity(identity)
            .with_duration(10)
            .with_grace(4)
            .build()
    };
    let first = within("build first", manager("first"))
        .await
        .expect("first manager");
    let second = within("build second", manager("second"))
        .await
        .expect("second manager");

    assert!(
        within("first acquires", first.changed())
            .await
            .expect("changed")
    );
    let lease: Api<Lease> = Api::namespaced(client.clone(), "ns");
    let holder = lease
        .get("wpa-leader")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("first"));

    // While the first renews, the second cannot take the lease.
    let renewing = tokio::spawn(async move {
        let result = first.changed().await;
        (first, result)
    });
    // The first renews 4 s before its 10 s lease ends: slack for a slow machine.
    let attempt = tokio::time::timeout(Duration::from_secs(6), second.changed()).await;
    assert!(
        attempt.is_err(),
        "second manager must not become leader: {attempt:?}"
    );
    let stored = server
        .get(&Gvr::LEASES, Some("ns"), "wpa-leader")
        .expect("stored lease");
    assert_eq!(stored["spec"]["holderIdentity"], "first");

    // Once the first releases, the second takes over.
    renewing.abort();
    let first = within("build first again", manager("first"))
        .await
        .expect("manager");
    within("release", first.release()).await.expect("release");
    assert!(
        within("second acquires", second.changed())
            .await
            .expect("changed")
    );
    let stored = server
        .get(&Gvr::LEASES, Some("ns"), "wpa-leader")
        .expect("stored lease");
    assert_eq!(stored["spec"]["holderIdentity"], "second");
}

#[tokio::test]
async fn simulated_workloads_report_available_replicas() {
    let (server, client) = start().await;
    server.simulate_workloads(Some(Duration::from_millis(200)));
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let available = |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas);
    eventually("one available", || async {
        (available(&api.get("w").await.ok()?) == Some(1)).then_some(())
    })
    .await;

    api.patch_scale(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("scale");
    let right_after = api.get("w").await.expect("get");
    assert_eq!(available(&right_after), Some(1), "the delay applies");
    eventually("four available", || async {
        (available(&api.get("w").await.ok()?) == Some(4)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let (server, client) = start().await;
    let mut deployment = objects::deployment("ns", "w", 1);
    deployment["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    server.insert(deployment).expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = api.get("w").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());

    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert!(api.get_opt("w").await.expect("get_opt").is_none());
}

#[tokio::test]
async fn kubeconfig_file_points_at_the_server() {
    let server = ApiServerDouble::start().await.expect("start");
    server
        .insert(objects::deployment("default", "w", 1))
        .expect("insert");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("write");

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("parse kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    let api: Api<Deployment> = Api::default_namespaced(client);
    assert_eq!(replicas(&api.get("w").await.expect("get")), Some(1));
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "existing", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut initial = Vec::new();
    within("initial events end", async {
        loop {
            match events.try_next().await.expect("watch").expect("open") {
                watcher::Event::InitApply(d) => initial.extend(d.metadata.name),
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(initial, ["existing"]);
    let watch = &server.recorded()[0];
    assert_eq!(watch.query_param("sendInitialEvents"), Some("true"));

    server
        .insert(objects::deployment("ns", "later", 1))
        .expect("insert");
    let next = within("live event", events.try_next())
        .await
        .expect("watch");
    match next {
        Some(watcher::Event::Apply(d)) => assert_eq!(d.metadata.name.as_deref(), Some("later")),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_controller_reconciles_against_the_double() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Never;
    impl std::fmt::Display for Never {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("never")
        }
    }
    impl std::error::Error for Never {}

    let (server, client) = start().await;
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    // Reconcile: scale every Deployment to 3 replicas through the scale subresource.
    let reconcile = |deployment: Arc<Deployment>, api: Arc<Api<Deployment>>| async move {
        if replicas(&deployment) != Some(3) {
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let patch = Patch::Merge(json!({"spec": {"replicas": 3}}));
            api.patch_scale(&name, &PatchParams::default(), &patch)
                .await
                .map_err(|_| Never)?;
        }
        Ok::<_, Never>(Action::await_change())
    };
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(api),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    server
        .insert(objects::deployment("ns", "worker", 1))
        .expect("insert");
    let scaled = server
        .wait_for(WAIT, |s| {
            s.get(&Gvr::DEPLOYMENTS, Some("ns"), "worker")
                .filter(|d| d["spec"]["replicas"] == 3)
        })
        .await;
    assert!(scaled.is_some(), "the controller scaled the Deployment");
    assert_eq!(server.scale_patches("ns", "worker"), vec![3]);
    task.abort();
}

#[tokio::test]
async fn kube_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    use std::sync::Arc;

    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    let run = |object: Deployment| {
        let api = api.clone();
        async move {
            finalizer(
                &api,
                "example.com/cleanup",
                Arc::new(object),
                |event| async move {
                    Ok::<_, std::convert::Infallible>(match event {
                        Finalizer::Apply(_) => Action::await_change(),
                        Finalizer::Cleanup(_) => Action::await_change(),
                    })
                },
            )
            .await
        }
    };

    run(api.get("w").await.expect("get"))
        .await
        .expect("adds finalizer");
    let with_finalizer = api.get("w").await.expect("get");
    assert_eq!(
        with_finalizer.metadata.finalizers,
        Some(vec!["example.com/cleanup".to_string()])
    );

    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    let deleting = api.get("w").await.expect("still present while finalizing");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    run(deleting).await.expect("cleanup removes finalizer");
    assert!(api.get_opt("w").await.expect("get_opt").is_none());
}

#[tokio::test]
async fn metadata_calls_and_metadata_watcher() {
    use kube::core::PartialObjectMeta;

    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client.clone(), "ns");
    let meta = api.get_metadata("w").await.expect("get_metadata");
    assert_eq!(meta.metadata.name.as_deref(), Some("w"));
    assert_eq!(
        meta.types.map(|t| t.kind),
        Some("PartialObjectMetadata".to_string())
    );
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    assert_eq!(list.items.len(), 1);

    // An Api over PartialObjectMeta makes the watcher send metadata-only requests.
    let metadata_api: Api<PartialObjectMeta<Deployment>> = Api::namespaced(client, "ns");
    let mut events = watcher(metadata_api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = within("initial object", events.try_next())
        .await
        .expect("watch");
    assert_eq!(first.and_then(|m| m.metadata.name).as_deref(), Some("w"));
    server
        .insert(objects::deployment("ns", "later", 1))
        .expect("insert");
    let next = within("live object", events.try_next())
        .await
        .expect("watch");
    assert_eq!(next.and_then(|m| m.metadata.name).as_deref(), Some("later"));
    let watch = server
        .recorded()
        .into_iter()
        .find(|r| r.is_watch())
        .expect("a watch request");
    assert_eq!(watch.status, 200);
    assert!(
        watch
            .accept
            .is_some_and(|a| a.contains("as=PartialObjectMetadata")),
        "the watcher asked for metadata only"
    );
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let (server, client) = start().await;
    server
        .insert(objects::deployment("ns", "w", 1))
        .expect("insert");
    let api: Api<Deployment> = Api::namespaced(client, "ns");
    api.get("w").await.expect("served while running");
    drop(server);
    // Kube's client may retry; either way, the answer must be an error soon.
    let after = within("request after drop fails", api.get("w")).await;
    assert!(
        after.is_err(),
        "a dropped server must not answer: {after:?}"
    );
}
