# The Arrakis gateway (src/bin/gateway.rs), built in one stage and run from a slim one.
#   docker build -t arrakis-gateway .
#   docker run --env-file .env arrakis-gateway
# Keep target/ out of the build context (a .dockerignore with `target` does it).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo checks that every declared target exists, benches included.
COPY benches ./benches
RUN cargo build --release --locked --bin gateway

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY config/gateway.yaml /etc/arrakis/gateway.yaml
ENV GATEWAY_CONFIG=/etc/arrakis/gateway.yaml \
    RUST_LOG=info
USER gateway
ENTRYPOINT ["/usr/local/bin/gateway"]
