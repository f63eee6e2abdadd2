package telemetry

// Histogram buckets (Prometheus `le` bounds, seconds). A model call lasts
// from tens of milliseconds (embeddings) to many minutes (long streams).
var (
	durationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	ttfbBuckets     = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)
