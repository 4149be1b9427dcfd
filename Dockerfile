# syntax=docker/dockerfile:1.7
# Image of the WorkerPodAutoScaler controller.
#   docker build -t ghcr.io/worker-pod-autoscaler/workerpodautoscaler:0.1.0 .

# ---- build ------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the registry and target/ between builds; the binary is
# copied out of the cached target/ because cache mounts are not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin workerpodautoscaler \
    && install -D -m 0755 target/release/workerpodautoscaler /out/workerpodautoscaler

# ---- run --------------------------------------------------------------------
# The binary links glibc (and libgcc_s for unwinding): distroless "cc" has both,
# "static" has neither. TLS is rustls, so no OpenSSL is needed at run time.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="workerpodautoscaler" \
      org.opencontainers.image.description="Scales worker Deployments on message-queue backlog" \
      org.opencontainers.image.source="https://github.com/worker-pod-autoscaler/worker-pod-autoscaler" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/workerpodautoscaler /workerpodautoscaler
USER 65532:65532
EXPOSE 8787
ENTRYPOINT ["/workerpodautoscaler"]
CMD ["run"]
