//! The WorkerPodAutoScaler custom resource.
