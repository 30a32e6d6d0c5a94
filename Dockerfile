# syncgate in a container: built in the Rust image, run in Debian slim as an
# unprivileged user. See docs/running-in-production.md (section 8); the
# development machines cannot pull base images, so build this in your CI.
#
#   docker build --build-arg SYNCGATE_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" -t syncgate .
#   docker run -p 8080:8080 -v syncgate-data:/var/lib/syncgate -e SYNCGATE_JWT_SECRET=… syncgate

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The commit for syncgate_build_info (.git is not part of the build context).
ARG SYNCGATE_BUILD_COMMIT=unknown
ENV SYNCGATE_BUILD_COMMIT=${SYNCGATE_BUILD_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin syncgate \
 && install -m 0755 target/release/syncgate /usr/local/bin/syncgate

FROM debian:bookworm-slim
# curl for the HEALTHCHECK only; the server needs nothing but libc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/syncgate --shell /usr/sbin/nologin syncgate \
 && install -d -o syncgate -g syncgate -m 0700 /var/lib/syncgate
COPY --from=build /usr/local/bin/syncgate /usr/local/bin/syncgate
USER 10001:10001
ENV SYNCGATE_LISTEN=0.0.0.0:8080 \
    SYNCGATE_DATA_DIR=/var/lib/syncgate \
    SYNCGATE_LOG_FORMAT=json \
    SYNCGATE_DRAIN_GRACE=10s
VOLUME ["/var/lib/syncgate"]
EXPOSE 8080
# /readyz: 200 when the store commits and the node is not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz >/dev/null || exit 1
# SIGTERM drains (SYNCGATE_DRAIN_GRACE), then closes every connection with 1001.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/syncgate"]
CMD ["serve"]
