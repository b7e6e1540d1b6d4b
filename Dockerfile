# The redrain image: `redrain serve` as a static binary on distroless, run as
# a non-root user.
#
#   docker build -t redrain:v1.4.0 --build-arg VERSION=v1.4.0 .
#   docker run --rm redrain:v1.4.0 --help
#
# The entrypoint is `redrain serve`: the container's arguments are serve's
# flags (deploy/kubernetes/redrain.yaml). Other commands: --entrypoint, e.g.
#   docker run --rm --entrypoint /usr/local/bin/redrain redrain:v1.4.0 keygen --id ops
#
# deploy/deploy_test.go runs the build line below (the RUN with `go build`)
# as it stands, and the binary it makes; keep it one command.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: a change to the code alone reuses this layer.
COPY go.mod go.sum ./
# The patched goleveldb go.mod replaces (third_party/goleveldb/PATCHES.md).
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/redrain ./cmd/redrain

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/redrain /usr/local/bin/redrain
# nonroot is uid 65532, whose home holds ./data (the default --data-dir)
# unless a volume is mounted and named with --data-dir.
USER 65532:65532
WORKDIR /home/nonroot
# 8080 the API (--http), 8081 the operations listener (--admin-http), 9200
# cluster membership and remoting (--cluster-addr).
EXPOSE 8080 8081 9200
ENTRYPOINT ["/usr/local/bin/redrain", "serve"]
CMD ["--http=:8080", "--admin-http=:8081"]
