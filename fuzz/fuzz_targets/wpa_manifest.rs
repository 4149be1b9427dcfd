//! Any `simulate --wpa` file: a WorkerPodAutoScaler or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wpa::simulate::{SimulateOptions, load_wpa, simulate, trace::TraceRow};

fuzz_target!(|yaml: &str| {
    let Ok(wpa) = load_wpa(yaml) else {
        return;
    };
    let rows = [
        TraceRow { t: 0.0, messages: 50, in_flight: 3, sent_per_minute: 10.0, idle: false, busy: None },
        TraceRow { t: 700.0, messages: 0, in_flight: 0, sent_per_minute: 0.0, idle: true, busy: Some(1) },
    ];
    // An invalid spec is an error; a valid one gives decisions inside its bounds.
    if let Ok(steps) = simulate(&wpa, &rows, &SimulateOptions::default()) {
        let max = wpa.spec.max_replicas;
        assert!(steps.iter().all(|s| s.desired >= 0 && s.desired <= max.max(0)), "{steps:?}");
    }
});
