# Two images from one build context:
#   docker build -t arrakis-gateway .                      # the Arrakis gateway (src/bin/gateway.rs),
#   docker build --target gateway -t arrakis-gateway .     # the same, named; the last stage is the default
#   docker run --env-file .env arrakis-gateway
#   docker build --target thumper -t thumper .             # thumper, for `thumper fleet manifest --image`
#   docker run --rm thumper --help
# Each image builds only its own binary (BuildKit skips the other stages). Keep target/ out of
# the build context (.dockerignore lists it).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock askama.toml ./
COPY src ./src
# Cargo checks that every declared target exists, benches included.
COPY benches ./benches

FROM build AS build-thumper
RUN cargo build --release --locked --bin thumper

FROM build AS build-gateway
RUN cargo build --release --locked --bin gateway

# thumper needs nothing but its binary to drive a --target (no embedded stack in a pod); the
# migrations are for `fleet coordinate`, which migrates before seeding, and are found as
# ./migrations from the working directory, as the bundled scenarios are as ./scenarios.
FROM debian:bookworm-slim AS thumper
RUN groupadd --system --gid 10001 thumper \
    && useradd --system --uid 10001 --gid 10001 --no-create-home thumper
COPY --from=build-thumper /src/target/release/thumper /usr/local/bin/thumper
COPY migrations /opt/thumper/migrations
COPY scenarios /opt/thumper/scenarios
WORKDIR /opt/thumper
# Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/thumper"]
CMD ["--help"]

# Last: what `docker build .` and docker-compose.yml's gateway service build.
FROM debian:bookworm-slim AS gateway
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build-gateway /src/target/release/gateway /usr/local/bin/gateway
COPY config/gateway.yaml /etc/arrakis/gateway.yaml
ENV GATEWAY_CONFIG=/etc/arrakis/gateway.yaml \
    RUST_LOG=info
USER gateway
ENTRYPOINT ["/usr/local/bin/gateway"]
