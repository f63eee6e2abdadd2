package proxy

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/metering"
)

// A provider's end right after the client stalled a write — a cut or its
// own error event — is put down to the stall (the provider gave up on a
// stream that did not drain): the call is charged what was generated, and
// the client told. Long after a stall (past StreamIdle), or with no stall,
// the same end is the provider's failure, free.
func TestStallThenProviderEnd(t *testing.T) {
	s, model, m := fuzzServer(t)
	const chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"hello there\"}}]}\n\n"
	for _, tc := range []struct {
		name    string
		data    string
		stalled time.Duration // how long ago the client's last stall ended; 0: none
		charged bool
	}{
		{"cut after a stall", chunk, time.Millisecond, true},
		{"error event after a stall", chunk + "data: {\"error\":{\"message\":\"write timeout\"}}\n\n", time.Millisecond, true},
		{"cut long after a stall", chunk, time.Hour, false},
		{"error event without a stall", chunk + "data: {\"error\":{\"message\":\"boom\"}}\n\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.settles, m.releases = m.settles[:0], m.releases[:0]
			c := &call{s: s, rt: s.rt.Load(), ep: epChat, id: "req", ident: metering.Identity{Account: "a", KeyID: "k"}, model: model, start: time.Now(),
				body: []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello"}]}`)}
			var hdr fasthttp.ResponseHeader
			sb := newStreamBody(c, s.rt.Load().upstreams["p"], fasthttp.AcquireResponse(), &chunkedReader{data: []byte(tc.data), step: 7, err: io.ErrUnexpectedEOF}, &hdr)
			s.inflight.Add(1)
			if tc.stalled > 0 {
				sb.stalledAt = time.Now().Add(-tc.stalled)
			}
			out, err := io.ReadAll(sb)
			_ = sb.CloseWithError(nil)
			if err != nil {
				t.Fatal(err)
			}
			if charged := len(m.settles) == 1; charged != tc.charged || len(m.settles)+len(m.releases) != 1 {
				t.Fatalf("%d settles, %d releases; want charged %v: %q", len(m.settles), len(m.releases), tc.charged, out)
			}
			if tc.charged {
				if r := m.settles[0].Record; r.Reason != "upstream_cut_after_client_stall" || r.Failed || m.settles[0].Cost <= 0 || r.Output < 1 {
					t.Fatalf("settled %+v at %d", r, m.settles[0].Cost)
				}
				if !bytes.Contains(out, []byte("charged for what was generated")) {
					t.Fatalf("the client was not told: %q", out)
				}
			}
		})
	}
}
