# geolb container image: the geolb binary on a slim Debian, run as an unprivileged user (uid 10001).
#
# With a registry (BuildKit, or any builder that can pull rust and debian images), from source:
#   docker build -t geolb .
# Without one (this project's CI, an air-gapped host): build the binary on the host, make the base
# from the host's files, and take the `prebuilt` target (the legacy builder builds every stage up
# to the target, and these two come first, so nothing is pulled):
#   cargo build --release --locked
#   bash deploy/docker/base.sh                     # imports the image `geolb-base`
#   docker build --target prebuilt --build-arg BASE=geolb-base -t geolb .
#
#   docker run -p 8080:8080 -e GEOLB_NODES="gs=http://geoserver:8080;master=1" geolb
# The config is read from /etc/geolb/config.toml (GEOLB_CONFIG); GEOLB_* variables override it.
# The same image runs simulated nodes: `docker run geolb sim --listen 0.0.0.0:8080`.

ARG BASE=debian:bookworm-slim
ARG BUILDER=rust:1-slim-bookworm

# What the image is, whatever built the binary. No RUN: the base may have no shell.
FROM ${BASE} AS runtime
COPY config.toml /etc/geolb/config.toml
ENV GEOLB_CONFIG=/etc/geolb/config.toml \
    GEOLB_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
# SIGTERM: stop accepting, let in-flight requests finish (listen.shutdown_grace, 8 s < docker's 10 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["geolb", "healthcheck"]
ENTRYPOINT ["geolb"]
CMD ["run"]

# The binary built on the host (`cargo build --release --locked`, on Debian bookworm).
FROM runtime AS prebuilt
COPY target/release/geolb /usr/local/bin/geolb

FROM ${BUILDER} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY config.toml config.toml
RUN cargo build --release --locked && strip target/release/geolb

# The default target: built from source.
FROM runtime
COPY --from=build /src/target/release/geolb /usr/local/bin/geolb
