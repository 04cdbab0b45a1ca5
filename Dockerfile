# Multi-stage build: compile with the full toolchain, run on a slim base as a
# non-root user. Build: docker build -t rookery .
# Run:   docker run -p 1883:1883 -v rookery-data:/var/lib/rookery rookery
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin rookery

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/rookery --shell /usr/sbin/nologin rookery \
 && mkdir -p /var/lib/rookery /etc/rookery \
 && chown rookery:rookery /var/lib/rookery
COPY --from=build /src/target/release/rookery /usr/local/bin/rookery
COPY config/rookery.toml /etc/rookery/rookery.toml
USER rookery
# Inside a container the broker must listen on every interface; data in the volume.
ENV ROOKERY_STORAGE__DIR=/var/lib/rookery
VOLUME ["/var/lib/rookery"]
EXPOSE 1883
# docker stop sends SIGTERM: clients get DISCONNECT 0x8B and storage is flushed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rookery", "--config", "/etc/rookery/rookery.toml", "--listen", "0.0.0.0:1883"]
