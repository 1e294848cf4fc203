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
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/forge-remote", "healthcheck"]
ENTRYPOINT ["/forge-remote"]
CMD ["serve"]
