# concord: multi-stage build, small non-root runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p concord-proxy --bin concord -p concord-bench --bin concord-bench \
 && strip target/release/concord target/release/concord-bench

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/concord --create-home concord
COPY --from=build /src/target/release/concord /usr/local/bin/concord
# The load generator (deploy/kubernetes/bench.yaml runs it as agents).
COPY --from=build /src/target/release/concord-bench /usr/local/bin/concord-bench
USER concord
WORKDIR /var/lib/concord
# MySQL clients, Raft peers, admin port, HTTP (/metrics, /readyz)
EXPOSE 3306 7001 6033 9090
ENTRYPOINT ["/usr/local/bin/concord"]
CMD ["--config", "/etc/concord/concord.toml"]
