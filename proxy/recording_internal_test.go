package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/metering"
)

// slowRecorder is a Meter whose response records wait for release.
type slowRecorder struct {
	fuzzMeter
	release chan struct{}
}

func (m *slowRecorder) RecordResponse(context.Context, string, string, string, int64) error {
	<-m.release
	return nil
}

// While a response's record is being written, this replica answers for it
// from memory with its context too: a continuation sent the moment the
// previous call settled is estimated with the stored conversation (found by
// review: it saw the owner's record alone, context 0). Once written, the
// memory entry goes, and a later write's entry is not dropped by an earlier
// write finishing.
func TestRecordingKeepsContextUntilWritten(t *testing.T) {
	s, _, _ := fuzzServer(t)
	m := &slowRecorder{release: make(chan struct{})}
	s.meter = m
	s.recordResponse("acct", "resp_1", "p", 0)    // at response.created
	s.recordResponse("acct", "resp_1", "p", 5200) // once the call settled
	r, err := s.storedResponse("acct", []byte("resp_1"))
	if err != nil || r != (metering.StoredResponse{Provider: "p", Context: 5200}) {
		t.Fatalf("while writing: %+v, %v; want provider p, context 5200", r, err)
	}
	m.release <- struct{}{} // one write ends (either): the later entry stays
	if r, _ := s.storedResponse("acct", []byte("resp_1")); r.Context != 5200 && r.Context != 0 {
		t.Fatalf("after one write: %+v", r)
	}
	close(m.release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := s.recording.Load("acct\x00resp_1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the memory entry outlived its writes")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
