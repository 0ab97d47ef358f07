package cpclient

import (
	"math/rand/v2"
	"time"
)

// Clock is the time source of renewals and retries, replaceable in tests.
type Clock interface {
	Now() time.Time
	After(time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// backoff is capped exponential backoff with "equal jitter": a delay in
// [d/2, d] where d doubles per failure up to max. The random half spreads
// the retries of many proxies after a control-plane restart; the fixed half
// keeps one proxy from retrying in a tight loop.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if b.n < 64 {
		b.n++
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b *backoff) reset() { b.n = 0 }

// Renewal happens in this window of a certificate's lifetime: 70% on
// average, spread so that proxies issued at the same moment (a rollout) do
// not all come back at once.
const (
	renewMin = 0.65
	renewMax = 0.75
)

// renewAt picks when to renew a certificate valid from notBefore to notAfter.
func renewAt(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	f := renewMin + rand.Float64()*(renewMax-renewMin)
	return notBefore.Add(time.Duration(float64(life) * f))
}
