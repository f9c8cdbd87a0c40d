# syntax=docker/dockerfile:1

# Build stage: static worker and pharox binaries (no cgo, so they run on
# distroless/static); the image runs the worker, and the compose file's
# gateway service runs `pharox gateway` from the same image.
FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/pharox

# Final stage: no shell, no package manager, runs as uid/gid 65532 (nonroot).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/pharox /usr/local/bin/
# ./data (the embedded server's default --data-dir) lands in a directory
# nonroot can write to.
WORKDIR /home/nonroot
USER nonroot:nonroot
# Nothing is exposed: with --nats-url the worker is only a NATS client.
# The embedded server (no --nats-url) listens on 127.0.0.1:4222 by default;
# to reach it from outside, run with --listen 0.0.0.0:4222 and a
# --nats-config that requires a login (deploy/nats-server.conf), and publish
# the port: an exposed server without one is refused.
ENTRYPOINT ["/usr/local/bin/worker"]
