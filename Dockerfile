# syntax=docker/dockerfile:1
# One image for the operator (/manager), the control plane
# (/weft-controlplane) and the CLI (/weftctl). The proxy has its own, smaller
# image: proxy/Dockerfile. Static binaries on a distroless non-root base.
# `make docker-build` tags it both weft:<version> (the operator) and
# weft-controlplane:<version> (what the operator deploys, with command
# /weft-controlplane).
# test/images builds the binaries with exactly these RUN lines. The
# grpcnotrace tag keeps gRPC from linking golang.org/x/net/trace, whose
# html/template makes the linker keep every exported method: the control
# plane's binary is 27 MB smaller and its resident set 12 MiB smaller.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=v0.1.0
ENV CGO_ENABLED=0
RUN go build -tags grpcnotrace -trimpath -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION}" -o /out/manager ./cmd/manager
RUN go build -tags grpcnotrace -trimpath -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION}" -o /out/weft-controlplane ./cmd/controlplane
RUN go build -tags grpcnotrace -trimpath -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION}" -o /out/weftctl ./cmd/weftctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/manager"]
