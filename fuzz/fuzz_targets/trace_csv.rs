//! Any trace file: the reader returns rows or an error naming the line, and every accepted
//! trace simulates with decisions inside [minReplicas, maxReplicas].
#![no_main]

use libfuzzer_sys::fuzz_target;
use wpa::simulate::{SimulateOptions, load_wpa, simulate, trace::read_trace};

const PRACTO: &str = "
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata: {name: fuzz}
spec:
  minReplicas: 0
  maxReplicas: 40
  deploymentName: worker
  queueURI: redis://127.0.0.1:6379/0/fuzz
  targetMessagesPerWorker: 7
  secondsToProcessOneJob: 0.5
  maxDisruption: '25%'
";

const BEHAVIOR: &str = "
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata: {name: fuzz}
spec:
  minReplicas: 1
  maxReplicas: 12
  deploymentName: worker
  queueURI: redis://127.0.0.1:6379/0/fuzz
  targetMessagesPerWorker: 3
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 30
      policies: [{type: Pods, value: 2, periodSeconds: 20}, {type: Percent, value: 50, periodSeconds: 10}]
    scaleDown:
      selectPolicy: Min
      policies: [{type: Percent, value: 30, periodSeconds: 15}]
";

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = read_trace(data) else {
        return;
    };
    for pair in rows.windows(2) {
        assert!(pair[0].t <= pair[1].t, "time goes backwards");
    }
    for manifest in [PRACTO, BEHAVIOR] {
        let wpa = load_wpa(manifest).expect("fixed manifest loads");
        let steps = simulate(&wpa, &rows, &SimulateOptions::default()).expect("simulates");
        let (min, max) = (wpa.spec.min_replicas, wpa.spec.max_replicas);
        for step in &steps {
            assert!((min..=max).contains(&step.desired), "{step:?}");
        }
    }
});
