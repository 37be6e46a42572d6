package httpapi

import "context"

// FlushIdempotency waits until the idempotency records of the requests s
// answered are written (they follow the answers: completions).
func FlushIdempotency(ctx context.Context, s *Server) error { return s.completions.flush(ctx) }
