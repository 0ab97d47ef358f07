# syntax=docker/dockerfile:1
# One image for the operator, the control plane and weftctl. The proxy has its
# own, smaller image (proxy/Dockerfile). Static binaries on a distroless
# non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=v0.1.0
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X github.com/weftmesh/weft/internal/version.Version=${VERSION}" -o /out/manager ./cmd/manager

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/manager"]
