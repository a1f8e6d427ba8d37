package redisstore

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Certs keeps the mesh identities the leader of the active management server issues, so
// that every replica translates with the same bytes (internal/meshcerts). Writes are fenced
// like the Store's. It is safe for concurrent use.
type Certs struct {
	keys
	fence Fence
}

// NewCerts returns the mesh identity store under prefix (DefaultPrefix when empty). It
// does no I/O; the caller owns client and closes it.
func NewCerts(client redis.UniversalClient, prefix string) *Certs {
	return &Certs{keys: newKeys(client, prefix)}
}

// WithFence returns a copy of the store whose writes are fenced by the global lock.
func (s *Certs) WithFence(f Fence) *Certs {
	c := *s
	c.fence = f
	return &c
}

func (s *Certs) meshCertsKey() string { return s.prefix + "meshcerts" }

// PutMeshCert stores a cluster's mesh identity (JSON), fenced like every write.
func (s *Certs) PutMeshCert(ctx context.Context, cluster string, value []byte) error {
	name, epoch := s.fence.args()
	if err := putHashField.Run(ctx, s.c, []string{s.lockKey(), s.meshCertsKey()}, name, epoch, cluster, value).Err(); err != nil {
		return writeErr(err, "put mesh certificate of %s", cluster)
	}
	return nil
}

var putHashField = redis.NewScript(fenceLua + `
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1
`)

// MeshCerts returns every stored mesh identity by cluster.
func (s *Certs) MeshCerts(ctx context.Context) (map[string][]byte, error) {
	m, err := s.c.HGetAll(ctx, s.meshCertsKey()).Result()
	if err != nil {
		return nil, unavailable(err, "read mesh certificates")
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out, nil
}
