package webhooks

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"balance.low"}`)
	const secret = "whsec-0123456789abcdef"
	now := time.Now()
	good := Sign(secret, now, body)
	for _, tt := range []struct {
		name   string
		header string
		body   []byte
		secret string
		want   error
	}{
		{"good", good, body, secret, nil},
		{"rotated: a second v1", good + ",v1=00", body, secret, nil},
		{"other secret", good, body, "another-secret-0123", ErrBadSignature},
		{"body changed", good, []byte(`{"id":"evt_2"}`), secret, ErrBadSignature},
		{"old", Sign(secret, now.Add(-time.Hour), body), body, secret, ErrTooOld},
		{"future", Sign(secret, now.Add(time.Hour), body), body, secret, ErrTooOld},
		{"no v1", "t=" + strconv.FormatInt(now.Unix(), 10), body, secret, ErrNoSignature},
		{"no t", "v1=abc", body, secret, ErrNoSignature},
		{"empty", "", body, secret, ErrNoSignature},
		{"garbage", "t=x,v1=y,,=,", body, secret, ErrNoSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.header, tt.body, tt.secret, 0); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1700000000,v1=deadbeef", []byte("{}"))
	f.Add("t=,v1=", []byte(""))
	f.Add(",,,t=1=2,v1", []byte("x"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		// Never a panic, and never a match for a header not made with the secret.
		if err := Verify(header, body, "fuzz-secret-0123456789", time.Hour*24*365*100); err == nil {
			t.Fatalf("header %q verified without the secret", header)
		}
	})
}
