# geolb container image: a static-ish binary on a slim Debian, run as an unprivileged user.
#   docker build -t geolb .
#   docker run -p 8080:8080 -e GEOLB_NODES="gs=http://geoserver:8080;master=1" geolb
# The config is read from /etc/geolb/config.toml (GEOLB_CONFIG); GEOLB_* variables override it.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY config.toml config.toml
RUN cargo build --release --locked && strip target/release/geolb

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin geolb \
 && mkdir -p /etc/geolb
COPY --from=build /src/target/release/geolb /usr/local/bin/geolb
COPY config.toml /etc/geolb/config.toml
ENV GEOLB_CONFIG=/etc/geolb/config.toml \
    GEOLB_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
USER geolb
EXPOSE 8080
# SIGTERM: stop accepting, let in-flight requests finish (listen.shutdown_grace, 8 s < docker's 10 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["geolb", "healthcheck"]
ENTRYPOINT ["geolb"]
CMD ["run"]
