// Package logctx carries a request's correlation ids (request id, b3 trace and
// span) in its context so that every log line about the request can name them.
package logctx

import (
	"context"

	"go.uber.org/zap"
)

// IDs are the correlation ids of one request.
type IDs struct {
	RequestID string
	TraceID   string
	SpanID    string
}

type key struct{}

// With returns ctx carrying ids. The ids are stored by pointer so the request
// path pays for one small allocation, not for a child logger it may never use.
func With(ctx context.Context, ids *IDs) context.Context {
	return context.WithValue(ctx, key{}, ids)
}

// From returns the ids carried by ctx, or nil.
func From(ctx context.Context) *IDs {
	ids, _ := ctx.Value(key{}).(*IDs)
	return ids
}

// Fields returns the zap fields naming the request of ctx (none outside a request).
func Fields(ctx context.Context) []zap.Field {
	ids := From(ctx)
	if ids == nil {
		return nil
	}
	f := make([]zap.Field, 0, 3)
	f = append(f, zap.String("request_id", ids.RequestID))
	if ids.TraceID != "" {
		f = append(f, zap.String("trace_id", ids.TraceID))
	}
	if ids.SpanID != "" {
		f = append(f, zap.String("span_id", ids.SpanID))
	}
	return f
}

// Logger returns base annotated with the request of ctx.
func Logger(ctx context.Context, base *zap.Logger) *zap.Logger {
	f := Fields(ctx)
	if len(f) == 0 {
		return base
	}
	return base.With(f...)
}
