# syntax=docker/dockerfile:1
# forge-remote: a static, non-root image. Build: docker build -t forge-remote .
# The Custom UI (static/) is deployed to Forge by `forge deploy`, not served by
# this image.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# nomsgpack: gin without its MsgPack codec, 3 MB of code forge-remote never calls.
RUN CGO_ENABLED=0 GOOS=linux go build -tags nomsgpack -trimpath -ldflags="-s -w" -o /out/forge-remote . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
# CA certificates come with the distroless base (Forge's JWKS, Weavy, Confluence are HTTPS).
COPY --from=build /out/forge-remote /forge-remote
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /
ENV LISTEN_ADDR=:8080 \
    STORE_URL=bolt:///data/forge-remote.db
# The Go garbage collector's settings: the one place they are set (bench/load
# reads this line and runs forge-remote and its HTTP floor with them). GOGC is
# how far the heap grows past the live heap before a collection, in percent:
# higher spends memory to spend less CPU collecting. GOMEMLIMIT is a soft limit
# on the runtime's memory: near it the collector runs more often, whatever
# GOGC says, trading CPU back for memory; keep it under the container's memory
# limit and well above the live heap. Override at run time (docker run -e).
ENV GOGC=200 GOMEMLIMIT=64MiB
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/forge-remote", "healthcheck"]
ENTRYPOINT ["/forge-remote"]
CMD ["serve"]
