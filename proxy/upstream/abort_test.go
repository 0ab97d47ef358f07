package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// slotRequest is a request whose context is canceled by cancel and served
// by slot, as the sidecar's HTTP/1.1 lane serves its requests.
func slotRequest(t *testing.T, slot *AbortSlot, url string) (*http.Request, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(WithAbortSlot(context.Background(), slot))
	slot.Start(ctx.Done())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req, func() { cancel(); slot.End() }
}

func (s *AbortSlot) holding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held != nil
}

// The connection is held for the request and released at the end of the
// response body, and goes back to the pool.
func TestAbortSlotHoldsAndReleases(t *testing.T) {
	c, _ := newTestH1(t)
	ts, conns := echoServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) })
	var slot AbortSlot
	for i := range 3 {
		req, end := slotRequest(t, &slot, ts.URL+"/")
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !slot.holding() {
			t.Fatalf("request %d: the connection is not held while the body is unread", i)
		}
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "hello" {
			t.Fatalf("request %d: body %q, %v", i, b, err)
		}
		resp.Body.Close()
		if slot.holding() {
			t.Fatalf("request %d: the connection is still held after the body", i)
		}
		end()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1 (released connections are reused)", n)
	}
}

// Ending the request while the response is awaited fails the round trip
// with the context's error and closes the upstream connection.
func TestAbortSlotEndAbortsWaitingRequest(t *testing.T) {
	upstreamGone := make(chan struct{})
	ts, _ := echoServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(upstreamGone)
		case <-time.After(20 * time.Second):
		}
	})
	c, _ := newTestH1(t)
	var slot AbortSlot
	req, end := slotRequest(t, &slot, ts.URL+"/wait")
	errc := roundTripAsync(c, req)
	for deadline := time.Now().Add(10 * time.Second); !slot.holding(); {
		if time.Now().After(deadline) {
			t.Fatal("the request never held its connection")
		}
		time.Sleep(time.Millisecond)
	}
	end()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	select {
	case <-upstreamGone:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream server's request was not canceled")
	}
}

// A context with a cancellation of its own between the slot's request and
// the round trip (here a timeout) is watched as any context is: the slot
// does not hold the connection, and the timeout ends the round trip.
func TestAbortSlotLeavesTimeoutsToTheContext(t *testing.T) {
	ts, _ := echoServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	})
	c, _ := newTestH1(t)
	var slot AbortSlot
	req, end := slotRequest(t, &slot, ts.URL+"/wait")
	defer end()
	ctx, cancel := context.WithTimeout(req.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.RoundTrip(req.WithContext(ctx))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if slot.holding() {
		t.Fatal("the slot holds a connection of a context it does not cancel")
	}
}

// After End, the slot holds nothing more for the request: a late round
// trip watches the (canceled) context instead.
func TestAbortSlotAfterEnd(t *testing.T) {
	ts, _ := echoServer(t, nil)
	c, _ := newTestH1(t)
	var slot AbortSlot
	req, end := slotRequest(t, &slot, ts.URL+"/")
	end()
	if _, err := c.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if slot.holding() {
		t.Fatal("the slot holds a connection after End")
	}
}
