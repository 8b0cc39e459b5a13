package redirect_test

import (
	"testing"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/cni/internal/redirect/redirecttest"
)

func TestNFTablesRedirection(t *testing.T) {
	redirecttest.Run(t, func(*testing.T) redirect.Mode { return redirect.NFTables{} })
}
