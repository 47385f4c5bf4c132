package identity

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadAPI connects to the SPIFFE Workload API on the Unix socket at
// path and returns a source that follows its updates. It blocks until the
// first SVID arrives or ctx is done.
func WorkloadAPI(ctx context.Context, path string) (Source, error) {
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+path)))
	if err != nil {
		return nil, fmt.Errorf("identity: workload API at %s: %w", path, err)
	}
	return src, nil
}
