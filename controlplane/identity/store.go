package identity

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Secret keys of the issuer Secret: the layout cert-manager writes for a CA
// Certificate, which the built-in CA reuses.
const (
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	KeyBundle = "ca.crt"
)

// Store holds the current issuer and replaces it when its Secret changes
// (cert-manager renewal, a rotation by the operator), without a restart and
// without disturbing certificates already issued. A Secret that does not
// parse is reported and ignored: the last good issuer keeps signing.
type Store struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Log       logr.Logger
	// OnChange, if set, is called after a new issuer is installed.
	OnChange func(*Issuer)

	cur     atomic.Pointer[Issuer]
	mu      sync.Mutex
	lastErr error
	synced  chan struct{}
	once    sync.Once
}

// Current returns the issuer in force, or nil before the first load.
func (s *Store) Current() *Issuer { return s.cur.Load() }

// Set installs an issuer directly (tests, and a static issuer from files).
func (s *Store) Set(i *Issuer) {
	s.cur.Store(i)
	if s.OnChange != nil {
		s.OnChange(i)
	}
}

// Err is the last load error, nil once a good Secret is loaded.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Synced is closed once the watch has listed the Secret.
func (s *Store) Synced() <-chan struct{} { return s.syncedCh() }

func (s *Store) syncedCh() chan struct{} {
	s.once.Do(func() { s.synced = make(chan struct{}) })
	return s.synced
}

// Run watches the issuer Secret until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	synced := s.syncedCh()
	factory := informers.NewSharedInformerFactoryWithOptions(s.Client, 0,
		informers.WithNamespace(s.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.Name).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.load(obj) },
		UpdateFunc: func(_, obj any) { s.load(obj) },
		DeleteFunc: func(any) {
			s.setErr(fmt.Errorf("issuer Secret %s/%s was deleted; still signing with the last issuer", s.Namespace, s.Name))
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	if s.Current() == nil && s.Err() == nil {
		s.setErr(fmt.Errorf("issuer Secret %s/%s does not exist yet", s.Namespace, s.Name))
	}
	close(synced)
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func (s *Store) load(obj any) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	iss, err := ParseIssuer(sec.Data[KeyCert], sec.Data[KeyKey], sec.Data[KeyBundle])
	if err != nil {
		s.setErr(fmt.Errorf("issuer Secret %s/%s is not usable, still signing with the last issuer: %w", s.Namespace, s.Name, err))
		s.Log.Error(err, "Ignoring an unusable issuer Secret", "secret", s.Namespace+"/"+s.Name)
		return
	}
	s.setErr(nil)
	s.Set(iss)
	s.Log.Info("Loaded the issuer", "fingerprint", iss.Fingerprint(), "notAfter", iss.NotAfter(), "roots", len(iss.Roots()))
}

func (s *Store) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}
