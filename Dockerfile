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
# GOGC says, up to half the CPU. Measured (bench/load, 2 cores, side by side
# with the GOGC tuner forge-remote had before): at 300 users 77.9 us CPU per
# request against the tuner's 89.8 (GOGC=200 GOMEMLIMIT=64MiB: 12% more than
# the tuner), peak RSS 36 MiB against 52; at 100,000 users 89 MiB against 96,
# where 64MiB would let RSS reach ~118 MiB, over the 100 MB target.
# Sizing: 40MiB holds about 100,000 cached users (~150 B of heap each plus the
# runtime): the token path. Chats add their bounded maps (about 12 MB full at
# CHAT_CACHE_ENTRIES=50000) and, with CONFLUENCE_POOL=site, about 1 KB per
# site calling Confluence in the hour: at 100,000 users with 200,000 page
# chats the token answer cost 190 us CPU at 40MiB and 84 us at 100MiB (README).
# For chats, more users or a larger container, raise GOMEMLIMIT to 70-80%
# of the container's memory limit minus what bolt's mapped file takes, and
# watch go_gc_heap_live_bytes against it. Override at run time (docker run -e).
ENV GOGC=400 GOMEMLIMIT=40MiB
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/forge-remote", "healthcheck"]
ENTRYPOINT ["/forge-remote"]
CMD ["serve"]
