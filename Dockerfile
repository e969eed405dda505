# syntax=docker/dockerfile:1
#
# Image of the Open-AutoGLM service: one static binary on distroless, run as
# the distroless "nonroot" user. Build it with
#
#   docker build --build-arg VERSION=1.1.0 -t ghcr.io/open-autoglm/autoglm:1.1.0 .
#
# VERSION ends up in main.version, which /version and the X-Autoglm-Version
# header report, so the canary split can be observed from outside.

# The builder runs on the build machine's platform and cross-compiles to the
# target one (no emulation needed for multi-arch images: the binary is pure Go).
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src

# Modules first, so editing the code does not download them again.
# go.sum* because the module may have no dependencies yet (no go.sum).
COPY go.mod go.sum* ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

# All Go code lives under app/; copying only it keeps docs or manifest edits
# from invalidating the build cache.
COPY app/ ./app/

ARG TARGETOS
ARG TARGETARCH
# Declared after the module layer so a new version does not invalidate it.
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/autoglm ./app/cmd/autoglm

# static-debian12 has CA certificates and tzdata but no shell or libc, which a
# CGO_ENABLED=0 binary does not need.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="autoglm" \
      org.opencontainers.image.description="Open-AutoGLM real-time document sync service (Dapr app)" \
      org.opencontainers.image.source="https://github.com/open-autoglm/autoglm" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/autoglm /usr/local/bin/autoglm
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# The app binds loopback unless told otherwise; in a container it must
# answer on the pod's address (probes, the Service, the sidecar's channel).
ENV AUTOGLM_HOST=0.0.0.0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/autoglm"]
